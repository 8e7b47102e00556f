"""Runtime backends, chosen by model file extension (and, for `.onnx` files, by the configured runtime).
Each module imports its own runtime only and keeps its own options (OnnxOptions, TorchOptions,
TensorRTOptions, OpenVinoOptions), built from the general BackendOptions."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import platform
from pathlib import Path
from typing import Sequence

from .base import (
    Backend,
    BackendOptions,
    DeviceFrames,
    DeviceResult,
    ModelInfo,
    ModelLoadError,
    OptionError,
    checked_performance,
)

log = logging.getLogger(__name__)

# extension -> (module, format name). Adding a runtime is adding one line here and one module.
BACKENDS: dict[str, tuple[str, str]] = {
    ".onnx": ("yolo_edge.backends.onnx", "onnx"),
    ".pt": ("yolo_edge.backends.torch", "pytorch"),
    ".engine": ("yolo_edge.backends.tensorrt", "tensorrt"),
    ".trt": ("yolo_edge.backends.tensorrt", "tensorrt"),
}
OPENVINO_MODULE = "yolo_edge.backends.openvino"
# An Ultralytics OpenVINO export is a folder (<name>.xml, .bin, metadata.yaml) named like this.
IR_FOLDER_SUFFIX = "_openvino_model"
RUNTIMES = ("auto", "onnxruntime", "openvino", "tensorrt")  # the config key `runtime`: what runs an .onnx file
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # ONNX Runtime's, fastest first
_X86_64 = ("x86_64", "amd64")

__all__ = ["BACKENDS", "RUNTIMES", "Backend", "BackendOptions", "DeviceFrames", "DeviceResult", "ModelInfo",
           "ModelLoadError", "choose_runtime", "format_for", "load_backend"]


def _is_ir_folder(path: Path) -> bool:
    return path.name.lower().endswith(IR_FOLDER_SUFFIX)


def format_for(path: str | Path) -> str:
    """The model format a file (or OpenVINO IR folder) name selects; raises ModelLoadError for an
    unknown extension."""
    path = Path(path)
    if _is_ir_folder(path):
        return "openvino"
    suffix = path.suffix.lower()
    if suffix not in BACKENDS:
        raise ModelLoadError(str(path), f"unknown model extension {suffix or '(none)'!r}; "
                             f"expected one of {', '.join(sorted(BACKENDS))} or a *{IR_FOLDER_SUFFIX} folder")
    return BACKENDS[suffix][1]


def choose_runtime(configured: str, device: str, openvino_installed: bool, machine: str,
                   gpu_providers: Sequence[str] = ()) -> tuple[str, str]:
    """(runtime, why) for an .onnx file. `auto`: ONNX Runtime on an NVIDIA GPU (its TensorRT or CUDA
    execution provider, `gpu_providers`) unless the CPU is asked for; else OpenVINO when it is installed
    on an x86_64 machine; else ONNX Runtime on the CPU. `tensorrt` is ONNX Runtime's TensorRT provider."""
    if configured != "auto":
        return configured, "configured"
    wanted = device.strip().lower()
    if wanted.startswith("cuda"):
        return "onnxruntime", f"device is {device!r}: ONNX Runtime's GPU providers run it"
    if wanted != "cpu" and gpu_providers:
        return "onnxruntime", f"an NVIDIA GPU with ONNX Runtime's {gpu_providers[0]}"
    if machine.lower() not in _X86_64:
        return "onnxruntime", f"the machine is {machine or 'unknown'}, not x86_64"
    if not openvino_installed:
        return "onnxruntime", "OpenVINO is not installed"
    return "openvino", f"OpenVINO is installed and the machine is {machine}"


def _onnxruntime_gpu_providers() -> list[str]:
    """ONNX Runtime's GPU providers, when an NVIDIA driver is present (ONNX Runtime is imported only then)."""
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()):
        return []
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return [p for p in GPU_PROVIDERS if p in onnxruntime.get_available_providers()]


def _openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _module_for(path: Path, options: BackendOptions) -> tuple[str, str]:
    """(backend module, what to call it in errors) for `path` under `options.runtime`."""
    if _is_ir_folder(path):
        return OPENVINO_MODULE, "openvino"
    module_name, format_name = BACKENDS[path.suffix.lower()]
    if format_name != "onnx":
        return module_name, format_name
    gpu_providers = _onnxruntime_gpu_providers() if options.runtime == "auto" else []
    runtime, why = choose_runtime(options.runtime, options.device, _openvino_installed(), platform.machine(),
                                  gpu_providers)
    if options.runtime == "auto":
        log.info("runtime auto: %s for %s (%s)", runtime, path.name, why)
    return (OPENVINO_MODULE, "openvino") if runtime == "openvino" else (module_name, format_name)


def load_backend(path: str | Path, options: BackendOptions | None = None) -> Backend:
    """Load `path` with the backend its extension (and, for .onnx, the configured runtime) selects."""
    path = Path(path)
    options = options or BackendOptions()
    format_for(path)
    if options.runtime not in RUNTIMES:
        raise ModelLoadError(str(path), f"config key 'runtime' is {options.runtime!r}; expected "
                             f"{', '.join(RUNTIMES)}")
    if _is_ir_folder(path):
        if not path.is_dir():
            raise ModelLoadError(str(path), "folder not found" if not path.exists() else "not a folder")
    elif not path.is_file():
        raise ModelLoadError(str(path), "file not found" if not path.exists() else "not a regular file")
    module_name, backend_name = _module_for(path, options)
    try:
        performance = checked_performance(options.performance)
    except OptionError as exc:
        raise ModelLoadError(str(path), str(exc)) from exc
    if performance == "throughput" and module_name != OPENVINO_MODULE:
        raise ModelLoadError(str(path), f"config key 'performance' is 'throughput' but the {backend_name} backend "
                             "runs one frame at a time; use auto or latency (or runtime openvino)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(str(path), f"the {backend_name} backend needs a package "
                             f"that is not installed ({exc})") from exc
    backend: Backend = module.load(path, options)
    return backend
