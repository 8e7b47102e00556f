"""OpenVINO backend (CPU) for `.onnx` files and Ultralytics OpenVINO IR folders (`*_openvino_model/`).
Imports openvino only. Runs in f32 unless the config key `precision` asks for fp16, bf16 or int8:
OpenVINO would otherwise pick bf16 on CPUs that have it, and results would drift from ONNX Runtime's
(README, Models: precision). Detection and segmentation models take the letterboxed frames as they are
and convert them in OpenVINO (openvino_pixels)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np

from . import IR_FOLDER_SUFFIX
from .base import (
    MAX_BATCH,
    Backend,
    BackendOptions,
    DeviceFrames,
    InputLayout,
    InputSize,
    ModelInfo,
    ModelLoadError,
    OptionError,
    checked_device,
    checked_input_size,
    checked_performance,
    checked_precision,
    checked_task,
    checked_threads,
    options_for,
    precision_refusal,
)
from .metadata import model_task, numbered_names, parse_metadata
from .openvino_facts import ModelFacts, load_facts, save_facts
from .openvino_import import without_converter
from .openvino_pixels import keep_model, kept_model_file, takes_pixels, with_pixel_input

with without_converter():
    import openvino as ov

log = logging.getLogger(__name__)

_DEVICE = "CPU"
_DTYPES = {"f32": "float32", "f16": "float16"}
# config precision -> OpenVINO's INFERENCE_PRECISION_HINT. int8 keeps f32 for the layers the quantized
# model leaves in float: its FakeQuantize layers run in int8 whatever the hint.
_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
# config precision -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry it needs (without it OpenVINO
# would quietly run another precision: f16 becomes bf16 on a CPU without FP16, bf16 becomes f32).
_CAPABILITIES = {"fp16": "FP16", "bf16": "BF16"}
# The operation quantized models carry in OpenVINO: ONNX QuantizeLinear/DequantizeLinear pairs (static
# quantization) and NNCF's IR both read as FakeQuantize. A dynamically quantized ONNX (ConvInteger) does
# not: OpenVINO runs it in float.
_QUANTIZE_OPS = frozenset({"FakeQuantize"})
INT8_HINT = ("make one with `yolo-edge export MODEL --format onnx-int8 --calibration VIDEO` (static "
             "quantization) or Ultralytics' `yolo export format=openvino int8=True`")

# An input or output shape as this backend reports it: ints, None for a dynamic dimension.
Dims = List[Optional[int]]


def is_ir_folder(path: Path) -> bool:
    """A folder named like Ultralytics' OpenVINO export (it need not exist yet)."""
    return path.name.lower().endswith(IR_FOLDER_SUFFIX)


@dataclass(frozen=True)
class OpenVinoOptions:
    """What OpenVINO takes from the configuration. CPU only; `device` other than auto/cpu and `half`
    do not apply (`precision` chooses what the model computes in)."""

    threads: int = 0  # INFERENCE_NUM_THREADS; 0 = OpenVINO's default
    input_size: InputSize = (640, 640)  # (height, width) for a model with a dynamic input size
    task: str = "auto"
    precision: str = "auto"  # auto (fp32, or int8 for a quantized model) | fp32 | fp16 | bf16 | int8
    performance: str = "auto"  # auto (= throughput) | latency | throughput

    @classmethod
    def from_request(cls, request: BackendOptions) -> OpenVinoOptions:
        """The OpenVINO part of `request`, checked; raises OptionError naming the config key and value."""
        device = checked_device(request.device)
        if device not in ("auto", "cpu"):
            raise OptionError(f"config key 'device' is {device!r} but config key 'runtime' chose OpenVINO, "
                              "which runs on the CPU here; use runtime onnxruntime for a GPU")
        return cls(threads=checked_threads(request.threads), input_size=checked_input_size(request.input_size),
                   task=checked_task(request.task), precision=checked_precision(request.precision),
                   performance=checked_performance(request.performance))


def resolve_precision(configured: str, quantized: bool, capabilities: Sequence[str]) -> str:
    """The precision to run in: `auto` is int8 for a quantized model, else fp32 (bf16 and f16 moved
    boxes beyond tolerance in the equivalence measurements, README). Raises OptionError naming the key
    and value for what this model or CPU cannot run."""
    if quantized:
        if configured not in ("auto", "int8"):
            raise OptionError(precision_refusal(configured, "the model is quantized (int8); use auto or int8"))
        return "int8"
    if configured == "int8":
        raise OptionError(precision_refusal(configured, f"the model is not quantized (it has no FakeQuantize "
                                            f"or QuantizeLinear nodes); {INT8_HINT}"))
    if configured == "auto":
        return "fp32"
    needed = _CAPABILITIES.get(configured)
    if needed is not None and needed not in capabilities:
        raise OptionError(precision_refusal(configured, f"this CPU has no {needed} support in OpenVINO "
                                            f"(its capabilities: {', '.join(capabilities)}); use fp32"
                                            + (" or bf16" if "BF16" in capabilities else "")))
    return configured


def compile_config(options: OpenVinoOptions, precision: str = "fp32") -> dict[str, str]:
    """The CPU plugin's properties: the precision's hint, the performance hint (latency: one request at a
    time on all cores; throughput, also for auto: as many requests side by side as OpenVINO finds best,
    each on a share of the cores), the configured threads (in all)."""
    hint = "LATENCY" if options.performance == "latency" else "THROUGHPUT"
    config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": hint}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    return config


def compiled_model_cache(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where OpenVINO keeps compiled models between starts: $YOLO_EDGE_CACHE_DIR/openvino, else
    ~/.cache/yolo-edge/openvino; None (no cache) when it cannot be made or YOLO_EDGE_CACHE_DIR is "off"."""
    base = environ.get("YOLO_EDGE_CACHE_DIR", "").strip()
    if base.lower() == "off":
        return None
    folder = Path(base) / "openvino" if base else Path.home() / ".cache" / "yolo-edge" / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.info("no OpenVINO model cache (%s): every start compiles the model", exc)
        return None
    return folder if os.access(folder, os.W_OK) else None


def is_quantized(model: Any) -> bool:
    """Whether an OpenVINO model carries quantization (FakeQuantize) operations."""
    return any(op.get_type_name() in _QUANTIZE_OPS for op in model.get_ops())


def cpu_capabilities(core: Any) -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES, e.g. ['BF16', 'FP32', 'INT8', ...]."""
    return [str(entry) for entry in core.get_property(_DEVICE, "OPTIMIZATION_CAPABILITIES")]


class OpenVinoBackend:
    # OpenVINO on the CPU gets host-prepared tensors: there is no device frame path.
    device_frames: DeviceFrames | None = None

    def __init__(self, path: Path, options: OpenVinoOptions) -> None:
        self.path = path
        model_file, raw_meta = _model_file_and_metadata(path)
        core = ov.Core()
        cache = compiled_model_cache()
        # What reading the model tells is kept beside the compiled-model cache: a later start of a model
        # with a fixed input size compiles it from the cache without reading it (openvino_facts).
        facts = load_facts(cache, model_file, openvino_version()) if cache is not None else None
        model: Any = None
        if facts is None or not facts.fixed_size:
            model = _read_model(core, model_file, path)
            facts = _model_facts(model, raw_meta is None)
        read = model is not None
        if raw_meta is None:
            raw_meta = facts.framework
        meta = parse_metadata(raw_meta)
        shape = facts.input_dims
        if len(shape) != 4:
            raise ModelLoadError(str(path), f"the input has shape {shape}, expected (N, 3, H, W)")
        fixed = facts.fixed_size
        input_shape = _input_shape(shape, meta, options.input_size)
        output_shapes = facts.output_dims
        if not fixed:  # a dynamic size runs at one size here: compile for it (the batch stays as it is)
            model.reshape([ov.Dimension(shape[0] or -1), 3, input_shape[0], input_shape[1]])
            output_shapes = [_dims(o.get_partial_shape()) for o in model.outputs]
        task = model_task(str(path), meta.get("task") or None, options.task, output_shapes)
        try:
            self.precision = resolve_precision(options.precision, facts.quantized, cpu_capabilities(core))
        except OptionError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        pixels = takes_pixels(facts.input_type, shape, task, self.precision)
        self.input_layout = InputLayout.BGR_PIXELS if pixels else InputLayout.RGB_PLANES
        self.input_dtype = np.dtype(np.uint8 if pixels else _DTYPES.get(facts.input_type, "float32"))
        config = compile_config(options, self.precision)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
        source: Any = model
        if fixed and cache is not None:
            # From a file when it needs no reshape: then a start after the first loads the compiled model
            # from the cache (0.1 s instead of 0.3 s for YOLOv8n 640 here). A read model is let go first: it
            # would hold 12 MB (YOLOv8n) through the compile, and with it the peak.
            source = _pixel_source(core, model, model_file, path, cache, read) if pixels else str(model_file)
            model = None
        elif pixels:
            source = with_pixel_input(model)
        try:
            compiled = core.compile_model(source, _DEVICE, config)
        except Exception as exc:
            raise ModelLoadError(str(path), f"OpenVINO could not compile it for the CPU ({exc})") from exc
        if read and fixed and cache is not None:
            save_facts(cache, model_file, openvino_version(), facts)
        self.compiled: Any = compiled
        # Frames run side by side on this many requests (1 under the latency hint).
        self.concurrency = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._idle: list[Any] = []  # requests not running, made as needed up to `concurrency`
        self._made = 0
        self.outputs = list(compiled.outputs)
        names = meta.get("names") or numbered_names(output_shapes, task)
        self.info = ModelInfo(
            name=path.name, format="openvino" if is_ir_folder(path) else "onnx",
            runtime=f"openvino {openvino_version()} (CPU, {self._runtime_precision(compiled)})", device="cpu",
            task=task,
            input_shape=(int(input_shape[0]), int(input_shape[1])), names=names,
            stride=int(meta.get("stride", 32)), input_dtype=str(self.input_dtype), dynamic=not fixed,
            max_batch=1 if shape[0] is not None else MAX_BATCH, precision=self.precision,
            concurrency=self.concurrency, input_layout=self.input_layout)

    def _runtime_precision(self, compiled: Any) -> str:
        """What the compiled model reports it computes in ('f32', 'bf16', ...); 'int8' for a quantized one."""
        if self.precision == "int8":
            return "int8"
        return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        # Waited for here, so the request may read the caller's array instead of a copy (5 MB at 640).
        return self._start(tensor, share_input=True).outputs()

    def start(self, tensor: np.ndarray) -> _OpenVinoJob:
        """Start inferring `tensor` on an idle request (the tensor is copied in, so the caller may reuse
        it); raises RuntimeError when `concurrency` jobs are already running."""
        return self._start(tensor, share_input=False)

    def _start(self, tensor: np.ndarray, share_input: bool) -> _OpenVinoJob:
        if self.compiled is None:
            raise RuntimeError(f"OpenVINO backend for {self.path.name} is closed")
        if self.input_layout is InputLayout.BGR_PIXELS and (
                tensor.dtype != np.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3):
            # A cast would run float planes as pixels without an error: say what the model takes instead.
            raise ValueError(f"the OpenVINO model of {self.path.name} takes letterboxed BGR frames, (N, H, W, 3) "
                             f"uint8 (its input_layout {self.input_layout.value}); got {tensor.shape} {tensor.dtype}")
        if self._idle:
            request = self._idle.pop()
        elif self._made < self.concurrency:
            request = self.compiled.create_infer_request()
            self._made += 1
        else:
            raise RuntimeError(f"{self.concurrency} OpenVINO inferences are already running; take one's "
                               "outputs before starting another")
        if tensor.dtype != self.input_dtype:
            tensor = tensor.astype(self.input_dtype)
        data = np.ascontiguousarray(tensor)
        try:
            request.start_async({0: data}, share_inputs=share_input)
        except Exception:
            self._idle.append(request)
            raise
        # A shared input must outlive the inference: the job holds it.
        return _OpenVinoJob(request, self.outputs, self._idle.append, data if share_input else None)

    def disable_device_frames(self) -> None:
        pass  # there is no device frame path to leave

    def close(self) -> None:
        self._idle.clear()
        self.compiled = None


class _OpenVinoJob:
    """One frame's inference on one of the backend's requests (`OpenVinoBackend.start`)."""

    def __init__(self, request: Any, outputs: list[Any], give_back: Callable[[Any], None],
                 shared_input: np.ndarray | None = None) -> None:
        self._request: Any = request
        self._outputs = outputs
        self._give_back = give_back
        self._shared_input = shared_input

    def done(self) -> bool:
        return self._request is None or bool(self._request.wait_for(0))

    def outputs(self) -> list[np.ndarray]:
        request = self._request
        if request is None:
            raise RuntimeError("this inference's outputs were already taken")
        self._request = None
        try:
            request.wait()
            # Copies: the request's own output memory is overwritten by the next frame it runs.
            return [np.array(request.get_tensor(output).data) for output in self._outputs]
        finally:
            self._shared_input = None
            self._give_back(request)


def openvino_version() -> str:
    """'2024.4.0' from OpenVINO's long build string ('2024.4.0-16579-c3152d32c9c-releases/2024/4')."""
    return str(ov.get_version()).split("-")[0]


def _model_file_and_metadata(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The file to read and, for an IR folder, its metadata.yaml (None: read the model's own)."""
    if not is_ir_folder(path):
        return path, None
    xml_files = sorted(path.glob("*.xml"))
    if len(xml_files) != 1:
        raise ModelLoadError(str(path), f"an OpenVINO model folder holds one .xml file; found {len(xml_files)}")
    metadata_file = path / "metadata.yaml"
    if not metadata_file.is_file():
        return xml_files[0], {}
    import yaml  # only IR folders need it: keeps it off the start-up path of an .onnx model

    try:
        loaded = yaml.safe_load(metadata_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(str(path), f"cannot read {metadata_file.name} ({exc})") from exc
    return xml_files[0], loaded if isinstance(loaded, dict) else {}


def _read_model(core: Any, model_file: Path, path: Path) -> Any:
    try:
        return core.read_model(str(model_file))
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types
        raise ModelLoadError(str(path), f"OpenVINO could not read it ({exc})") from exc


def _pixel_source(core: Any, model: Any, model_file: Path, path: Path, cache: Path, read: bool) -> Any:
    """What to compile for a model that takes frames as they are (openvino_pixels): the converted model's
    file in the cache, written when the model was read (its file is new or changed) or the file is missing;
    the converted model itself when it cannot be kept."""
    kept = kept_model_file(cache, model_file, openvino_version())
    if kept is not None and not read and kept.is_file():
        return str(kept)
    converted = with_pixel_input(model if model is not None else _read_model(core, model_file, path))
    if kept is not None and keep_model(converted, kept):
        return str(kept)
    return converted


def _model_facts(model: Any, framework: bool) -> ModelFacts:
    """What the backend needs of a read model; `framework`: with the ONNX file's metadata."""
    return ModelFacts(framework=_framework_metadata(model) if framework else {},
                      input_dims=_dims(model.inputs[0].get_partial_shape()),
                      output_dims=[_dims(o.get_partial_shape()) for o in model.outputs],
                      quantized=is_quantized(model), input_type=model.inputs[0].get_element_type().get_type_name())


def _framework_metadata(model: Any) -> dict[str, Any]:
    """The ONNX file's metadata_props, which OpenVINO's ONNX reader keeps under rt_info 'framework'."""
    if not model.has_rt_info(["framework"]):
        return {}
    entries: dict[str, Any] = model.get_rt_info(["framework"]).astype(dict)
    return {str(key): value.astype(str) for key, value in entries.items()}


def _dims(shape: Any) -> Dims:
    """A PartialShape as ints, None where a dimension is dynamic."""
    return [d.get_length() if d.is_static else None for d in shape]


def _input_shape(shape: Dims, meta: dict[str, Any], configured: InputSize) -> InputSize:
    """(height, width): the model's fixed size; else the exported size when its metadata says the export
    is not dynamic; else the configured size (as the ONNX Runtime backend chooses)."""
    height, width = shape[2], shape[3]
    if height is not None and width is not None:
        return height, width
    exported: InputSize | None = meta.get("imgsz")
    if meta.get("dynamic") is False and exported is not None:
        return exported
    return configured


def load(path: Path, request: BackendOptions) -> Backend:
    return OpenVinoBackend(path, options_for(path, OpenVinoOptions.from_request, request))
