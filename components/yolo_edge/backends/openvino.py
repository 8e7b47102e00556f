"""OpenVINO backend (CPU) for `.onnx` files and Ultralytics OpenVINO IR folders (`*_openvino_model/`).
Imports openvino only. Runs in f32 by default: OpenVINO would otherwise pick bf16 on CPUs that have it,
and results would drift from ONNX Runtime's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import openvino as ov
import yaml

from . import IR_FOLDER_SUFFIX
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
    checked_task,
    checked_threads,
    options_for,
)
from .metadata import model_task, numbered_names, parse_metadata

_DEVICE = "CPU"
_PRECISION = "f32"
_DTYPES = {"f32": "float32", "f16": "float16"}

# An input or output shape as this backend reports it: ints, None for a dynamic dimension.
Dims = List[Optional[int]]


def is_ir_folder(path: Path) -> bool:
    """A folder named like Ultralytics' OpenVINO export (it need not exist yet)."""
    return path.name.lower().endswith(IR_FOLDER_SUFFIX)


@dataclass(frozen=True)
class OpenVinoOptions:
    """What OpenVINO takes from the configuration. CPU only; `device` other than auto/cpu and `half`
    do not apply (the model runs in f32)."""

    threads: int = 0  # INFERENCE_NUM_THREADS; 0 = OpenVINO's default
    input_size: InputSize = (640, 640)  # (height, width) for a model with a dynamic input size
    task: str = "auto"

    @classmethod
    def from_request(cls, request: BackendOptions) -> OpenVinoOptions:
        """The OpenVINO part of `request`, checked; raises OptionError naming the config key and value."""
        device = checked_device(request.device)
        if device not in ("auto", "cpu"):
            raise OptionError(f"config key 'device' is {device!r} but config key 'runtime' chose OpenVINO, "
                              "which runs on the CPU here; use runtime onnxruntime for a GPU")
        return cls(threads=checked_threads(request.threads), input_size=checked_input_size(request.input_size),
                   task=checked_task(request.task))


def compile_config(options: OpenVinoOptions) -> dict[str, str]:
    """The CPU plugin's properties: f32, latency (one request at a time), the configured threads."""
    config = {"INFERENCE_PRECISION_HINT": _PRECISION, "PERFORMANCE_HINT": "LATENCY"}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    return config


class OpenVinoBackend:
    # OpenVINO on the CPU gets host-prepared tensors: there is no device frame path.
    device_frames: DeviceFrames | None = None

    def __init__(self, path: Path, options: OpenVinoOptions) -> None:
        self.path = path
        model_file, raw_meta = _model_file_and_metadata(path)
        core = ov.Core()
        try:
            model = core.read_model(str(model_file))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise ModelLoadError(str(path), f"OpenVINO could not read it ({exc})") from exc
        if raw_meta is None:
            raw_meta = _framework_metadata(model)
        meta = parse_metadata(raw_meta)
        shape = _dims(model.inputs[0].get_partial_shape())
        if len(shape) != 4:
            raise ModelLoadError(str(path), f"the input has shape {shape}, expected (N, 3, H, W)")
        fixed = shape[2] is not None and shape[3] is not None
        input_shape = _input_shape(shape, meta, options.input_size)
        if not fixed:  # a dynamic size runs at one size here: compile for it (the batch stays as it is)
            model.reshape([ov.Dimension(shape[0] or -1), 3, input_shape[0], input_shape[1]])
        output_shapes = [_dims(o.get_partial_shape()) for o in model.outputs]
        try:
            compiled = core.compile_model(model, _DEVICE, compile_config(options))
        except Exception as exc:
            raise ModelLoadError(str(path), f"OpenVINO could not compile it for the CPU ({exc})") from exc
        self.compiled: Any = compiled
        self.request: Any = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)
        task = model_task(str(path), meta.get("task") or None, options.task, output_shapes)
        names = meta.get("names") or numbered_names(output_shapes, task)
        self.input_dtype = np.dtype(_DTYPES.get(model.inputs[0].get_element_type().get_type_name(), "float32"))
        self.info = ModelInfo(
            name=path.name, format="openvino" if is_ir_folder(path) else "onnx",
            runtime=f"openvino {openvino_version()} (CPU, {_PRECISION})", device="cpu", task=task,
            input_shape=(int(input_shape[0]), int(input_shape[1])), names=names,
            stride=int(meta.get("stride", 32)), input_dtype=str(self.input_dtype), dynamic=not fixed,
            max_batch=1 if shape[0] is not None else MAX_BATCH)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        if self.request is None:
            raise RuntimeError(f"OpenVINO backend for {self.path.name} is closed")
        if tensor.dtype != self.input_dtype:
            tensor = tensor.astype(self.input_dtype)
        results = self.request.infer({0: np.ascontiguousarray(tensor)})
        return [np.asarray(results[output]) for output in self.outputs]

    def disable_device_frames(self) -> None:
        pass  # there is no device frame path to leave

    def close(self) -> None:
        self.request = None
        self.compiled = None


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
    try:
        loaded = yaml.safe_load(metadata_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(str(path), f"cannot read {metadata_file.name} ({exc})") from exc
    return xml_files[0], loaded if isinstance(loaded, dict) else {}


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
