"""ONNX Runtime backend. Imports onnxruntime only: an ONNX deployment never pays for torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from .base import BackendOptions, ModelInfo, ModelLoadError
from .metadata import infer_task, parse_metadata, resolve_task

_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def choose_providers(device: str, available: list[str]) -> list[str]:
    """TensorRT -> CUDA -> CPU, filtered by what is installed and by the configured device."""
    wanted = ["CPUExecutionProvider"] if device == "cpu" else list(_PREFERRED_PROVIDERS)
    providers = [p for p in wanted if p in available]
    if device.startswith("cuda") and not any(p != "CPUExecutionProvider" for p in providers):
        raise ValueError(f"config key 'device' is {device!r} but ONNX Runtime has no GPU provider "
                         f"(available: {', '.join(available)})")
    return providers or ["CPUExecutionProvider"]


class OnnxBackend:
    def __init__(self, path: Path, options: BackendOptions) -> None:
        self.path = path
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        # Idle worker threads sleep instead of busy-waiting. Spinning buys 1.5-3% of bare session.run
        # time on an idle machine, but takes the CPU the frame feeder, publisher and Greengrass nucleus
        # need: frames up to 2.4x slower under load (benchmarks/README.md, thread settings).
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            providers = choose_providers(options.device, ort.get_available_providers())
            self.session = ort.InferenceSession(str(path), session_options, providers=providers)
        except ValueError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(str(path), f"ONNX Runtime could not read it ({exc})") from exc
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        shape = model_input.shape  # e.g. [1, 3, 640, 640] or ['batch', 3, 'height', 'width']
        if len(shape) != 4:
            raise ModelLoadError(str(path), f"input {self.input_name!r} has shape {shape}, expected (N, 3, H, W)")
        fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
        input_shape = (shape[2], shape[3]) if fixed else meta.get("imgsz") if meta.get("dynamic") is False \
            else options.input_size
        output_shapes = [tuple(o.shape) for o in self.session.get_outputs()]
        task = resolve_task(str(path), meta.get("task") or None, options.task)
        if not meta.get("task") and options.task == "auto":
            task = infer_task(output_shapes, None)
        names = meta.get("names") or _numbered_names(output_shapes, task)
        active = self.session.get_providers()[0]
        self.input_dtype = np.dtype(_DTYPES.get(model_input.type, "float32"))
        self.info = ModelInfo(
            name=path.name, format="onnx", runtime=f"onnxruntime {ort.__version__} ({active})",
            device="cpu" if active == "CPUExecutionProvider" else "cuda", task=task,
            input_shape=(int(input_shape[0]), int(input_shape[1])), names=names,
            stride=int(meta.get("stride", 32)), input_dtype=str(self.input_dtype), dynamic=not fixed)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        if tensor.dtype != self.input_dtype:
            tensor = tensor.astype(self.input_dtype)
        return self.session.run(self.output_names, {self.input_name: tensor})

    def close(self) -> None:
        self.session = None


def _numbered_names(output_shapes: list[tuple], task: str) -> dict[int, str]:
    """Class names "0".."nc-1" when a model has no metadata and the class count is readable."""
    first = output_shapes[0]
    channels = first[-1] if task == "classify" else first[1]
    if not isinstance(channels, int):
        return {}
    masks = output_shapes[1][1] if task == "segment" and isinstance(output_shapes[1][1], int) else 0
    count = channels if task == "classify" else channels - 4 - masks
    return {i: str(i) for i in range(max(count, 0))}


def load(path: Path, options: BackendOptions) -> OnnxBackend:
    return OnnxBackend(path, options)
