"""ONNX Runtime backend. Imports onnxruntime only: an ONNX deployment never pays for torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .base import (
    MAX_BATCH,
    Backend,
    BackendOptions,
    DeviceFrames,
    InputSize,
    ModelInfo,
    ModelLoadError,
    OptionError,
    checked_device,
    checked_input_size,
    checked_precision,
    checked_task,
    checked_threads,
    options_for,
    precision_refusal,
)
from .metadata import model_task, numbered_names, parse_metadata

_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
# ONNX operators of a quantized model, as they appear in the file: NodeProto's op_type (field 4, a
# length-delimited string: tag 0x22, then the length). ONNX Runtime does not list a session's nodes.
_QUANTIZED_OPS = (b"QuantizeLinear", b"DequantizeLinear", b"DynamicQuantizeLinear", b"QLinearConv",
                  b"ConvInteger", b"MatMulInteger", b"QLinearMatMul")
_QUANTIZED_OP_FIELDS = tuple(b"\x22" + bytes([len(op)]) + op for op in _QUANTIZED_OPS)
INT8_HINT = "make one with `yolo-edge export MODEL --format onnx-int8 --calibration VIDEO`"


def choose_providers(device: str, available: list[str], tensorrt: bool = False) -> list[str]:
    """TensorRT -> CUDA -> CPU, filtered by what is installed and by the configured device; with
    `tensorrt` (config `runtime: tensorrt`) ONNX Runtime's TensorRT provider must be there."""
    if tensorrt:
        if device == "cpu" or "TensorrtExecutionProvider" not in available:
            why = "device is 'cpu'" if device == "cpu" else f"ONNX Runtime has no TensorRT provider " \
                f"(available: {', '.join(available)}; it comes with onnxruntime-gpu built with TensorRT)"
            raise ValueError(f"config key 'runtime' is 'tensorrt' but {why}; or build an engine with "
                             "`yolo-edge export MODEL --format engine` and set model_loc to it")
        return [p for p in _PREFERRED_PROVIDERS if p in available]
    wanted = ["CPUExecutionProvider"] if device == "cpu" else list(_PREFERRED_PROVIDERS)
    providers = [p for p in wanted if p in available]
    if device.startswith("cuda") and not any(p != "CPUExecutionProvider" for p in providers):
        raise ValueError(f"config key 'device' is {device!r} but ONNX Runtime has no GPU provider "
                         f"(available: {', '.join(available)})")
    return providers or ["CPUExecutionProvider"]


@dataclass(frozen=True)
class OnnxOptions:
    """What ONNX Runtime takes from the configuration. No `half`: a model runs in the precision it
    was exported in, and `precision` (other than auto) must name that precision."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N (cuda: a GPU execution provider must be installed)
    threads: int = 0  # intra-op threads; 0 = ONNX Runtime's default
    input_size: InputSize = (640, 640)  # (height, width) for a model with a dynamic input size
    task: str = "auto"
    precision: str = "auto"  # auto (the model's own) | fp32 | fp16 | int8, as the model was exported
    tensorrt: bool = False  # config `runtime: tensorrt`: ONNX Runtime's TensorRT provider, required

    @classmethod
    def from_request(cls, request: BackendOptions) -> OnnxOptions:
        """The ONNX part of `request`, checked; raises OptionError naming the config key and value."""
        precision = checked_precision(request.precision)
        if precision == "bf16":
            raise OptionError(precision_refusal(precision, "ONNX Runtime runs a model in the precision it was "
                                                "exported in (fp32, fp16 or int8); use runtime openvino for bf16"))
        return cls(device=checked_device(request.device), threads=checked_threads(request.threads),
                   input_size=checked_input_size(request.input_size), task=checked_task(request.task),
                   precision=precision, tensorrt=request.runtime == "tensorrt")


def model_precision(path: Path, input_dtype: np.dtype) -> str:
    """The precision an ONNX file was exported in: int8 when it holds quantization operators, fp16 when
    its input is float16, else fp32."""
    with path.open("rb") as handle:
        data = handle.read()
    if any(field in data for field in _QUANTIZED_OP_FIELDS):
        return "int8"
    return "fp16" if input_dtype == np.float16 else "fp32"


def resolve_precision(configured: str, exported: str) -> str:
    """`exported` when `configured` is auto or names it; else OptionError naming the key and value."""
    if configured in ("auto", exported):
        return exported
    if configured == "int8":
        why = f"the model is not quantized (it is {exported}); {INT8_HINT}"
    elif configured == "fp16":
        why = f"the model is {exported}, not an fp16 export (float16 input); export it with half=True"
    else:
        why = f"the model is {exported} and ONNX Runtime runs it as exported; use precision auto or {exported}"
    raise OptionError(precision_refusal(configured, why))


class OnnxBackend:
    # ONNX Runtime gets host-prepared tensors: there is no device frame path.
    device_frames: DeviceFrames | None = None

    def __init__(self, path: Path, options: OnnxOptions) -> None:
        self.path = path
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        # Idle worker threads sleep instead of busy-waiting. Spinning buys 1.5-3% of bare session.run
        # time on an idle machine, but takes the CPU the frame feeder, publisher and Greengrass nucleus
        # need: frames up to 2.4x slower under load (benchmarks/README.md, thread settings).
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory pattern: ONNX Runtime would keep one planned arena per input shape, and with several
        # cameras the batch size changes as cameras come and go. Off, a batch of 4 at 320x320 peaks
        # 22 MiB lower (8 frames: 43 MiB), at the same speed within 1-2% (medians of 20 session.run here).
        session_options.enable_mem_pattern = False
        try:
            providers = choose_providers(options.device, ort.get_available_providers(), options.tensorrt)
            session = ort.InferenceSession(str(path), session_options, providers=providers)
        except ValueError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(str(path), f"ONNX Runtime could not read it ({exc})") from exc
        self.session: ort.InferenceSession | None = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_names = [o.name for o in session.get_outputs()]
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
        shape = model_input.shape  # e.g. [1, 3, 640, 640] or ['batch', 3, 'height', 'width']
        if len(shape) != 4:
            raise ModelLoadError(str(path), f"input {self.input_name!r} has shape {shape}, expected (N, 3, H, W)")
        fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
        input_shape = _input_shape(shape, meta, options.input_size)
        output_shapes = [tuple(o.shape) for o in session.get_outputs()]
        task = model_task(str(path), meta.get("task") or None, options.task, output_shapes)
        names = meta.get("names") or numbered_names(output_shapes, task)
        active = session.get_providers()[0]
        self.input_dtype = np.dtype(_DTYPES.get(model_input.type, "float32"))
        try:
            precision = resolve_precision(options.precision, model_precision(path, self.input_dtype))
        except OptionError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        self.info = ModelInfo(
            name=path.name, format="onnx", runtime=f"onnxruntime {ort.__version__} ({active})",
            device="cpu" if active == "CPUExecutionProvider" else "cuda", task=task,
            input_shape=(int(input_shape[0]), int(input_shape[1])), names=names,
            stride=int(meta.get("stride", 32)), input_dtype=str(self.input_dtype), dynamic=not fixed,
            max_batch=_max_batch(shape[0]), precision=precision)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        if tensor.dtype != self.input_dtype:
            tensor = tensor.astype(self.input_dtype)
        if self.session is None:
            raise RuntimeError(f"ONNX backend for {self.path.name} is closed")
        outputs: list[np.ndarray] = self.session.run(self.output_names, {self.input_name: tensor})
        return outputs

    def disable_device_frames(self) -> None:
        pass  # there is no device frame path to leave

    def close(self) -> None:
        self.session = None


def _input_shape(shape: list[int | str | None], meta: dict[str, Any], configured: InputSize) -> InputSize:
    """(height, width): the model's fixed input size; else the size its metadata says it was exported
    at when it says the export is not dynamic (dimensions named anyway); else the configured size."""
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        return height, width
    exported: InputSize | None = meta.get("imgsz")
    if meta.get("dynamic") is False and exported is not None:
        return exported
    return configured


def _max_batch(batch_dim: int | str | None) -> int:
    """MAX_BATCH for a symbolic batch dimension; else 1. A fixed batch above 1 cannot take a single frame:
    such a model keeps max_batch 1 and fails on its first frame, as it always did."""
    return 1 if isinstance(batch_dim, int) else MAX_BATCH


def load(path: Path, request: BackendOptions) -> Backend:
    return OnnxBackend(path, options_for(path, OnnxOptions.from_request, request))
