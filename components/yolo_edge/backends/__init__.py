"""Runtime backends, chosen by model file extension. Each module imports its own runtime only and keeps
its own options (OnnxOptions, TorchOptions, TensorRTOptions), built from the general BackendOptions."""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import Backend, BackendOptions, DeviceFrames, DeviceResult, ModelInfo, ModelLoadError

# extension -> (module, format name). Adding a runtime is adding one line here and one module.
BACKENDS: dict[str, tuple[str, str]] = {
    ".onnx": ("yolo_edge.backends.onnx", "onnx"),
    ".pt": ("yolo_edge.backends.torch", "pytorch"),
    ".engine": ("yolo_edge.backends.tensorrt", "tensorrt"),
    ".trt": ("yolo_edge.backends.tensorrt", "tensorrt"),
}

__all__ = ["BACKENDS", "Backend", "BackendOptions", "DeviceFrames", "DeviceResult", "ModelInfo", "ModelLoadError",
           "format_for", "load_backend"]


def format_for(path: str | Path) -> str:
    """The model format a file name selects; raises ModelLoadError for an unknown extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in BACKENDS:
        raise ModelLoadError(str(path), f"unknown model extension {suffix or '(none)'!r}; "
                             f"expected one of {', '.join(sorted(BACKENDS))}")
    return BACKENDS[suffix][1]


def load_backend(path: str | Path, options: BackendOptions | None = None) -> Backend:
    """Load `path` with the backend its extension selects."""
    path = Path(path)
    format_for(path)
    if not path.is_file():
        raise ModelLoadError(str(path), "file not found" if not path.exists() else "not a regular file")
    module_name = BACKENDS[path.suffix.lower()][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(str(path), f"the {BACKENDS[path.suffix.lower()][1]} backend needs a package "
                             f"that is not installed ({exc})") from exc
    backend: Backend = module.load(path, options or BackendOptions())
    return backend
