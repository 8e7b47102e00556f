"""PyTorch backend: runs an Ultralytics .pt checkpoint with torch.

torch and ultralytics are imported here only, so an ONNX or TensorRT deployment never loads them.
The checkpoint is loaded with Ultralytics (its pickles reference Ultralytics classes), fused (Conv +
BatchNorm, as Ultralytics' own predictor does) and run under `torch.inference_mode()`. `infer` takes
a batch of N frames (any N) and returns the same raw outputs as the model's ONNX export: detect
(N, 4 + nc, A); segment [(N, 4 + nc + nm, A), (N, nm, mh, mw)]; classify (N, nc) softmax probabilities.

On a CPU, pre/post-processing is the shared numpy code. On a CUDA GPU the backend also offers
`device_frames` (see torch_frames): letterbox on the GPU from pinned host buffers, the network in a
CUDA graph, decoding on whichever side measures faster (frame by frame); `infer` runs a single frame through the
same graphs and a batch eagerly.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .base import (
    DEVICE_CHOICES,
    MAX_BATCH,
    Backend,
    BackendOptions,
    InputSize,
    ModelInfo,
    ModelLoadError,
    OptionError,
    checked_device,
    checked_flag,
    checked_input_size,
    checked_precision,
    checked_task,
    checked_threads,
    options_for,
    precision_refusal,
)
from .metadata import model_task
from .torch_frames import DeviceFramePath, export_outputs


@dataclass(frozen=True)
class TorchOptions:
    """What the PyTorch backend takes from the configuration."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    half: bool = False  # FP16 weights and inputs, on a CUDA GPU only
    threads: int = 0  # torch's intra-op threads; 0 = torch's default
    input_size: InputSize = (640, 640)  # (height, width): multiples of the model's stride
    task: str = "auto"
    precision: str = "auto"  # auto (fp16 when `half`) | fp32 | fp16 (= half, CUDA only)

    @classmethod
    def from_request(cls, request: BackendOptions) -> TorchOptions:
        """The PyTorch part of `request`, checked; raises OptionError naming the config key and value."""
        half = checked_flag("half", request.half)
        precision = checked_precision(request.precision)
        if precision in ("bf16", "int8"):
            raise OptionError(precision_refusal(precision, "the PyTorch backend runs fp32, or fp16 on a CUDA GPU"))
        if precision == "fp32" and half:
            raise OptionError(precision_refusal(precision, "config key 'half' is true; set one of them"))
        return cls(device=checked_device(request.device), half=half or precision == "fp16",
                   threads=checked_threads(request.threads), input_size=checked_input_size(request.input_size),
                   task=checked_task(request.task), precision=precision)


def choose_device(wanted: str) -> torch.device:
    """'auto' -> the first CUDA GPU when torch sees one, else CPU; 'cuda[:N]' must exist."""
    wanted = wanted.strip().lower()
    if wanted in ("auto", ""):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"config key 'device' is {wanted!r} but torch {torch.__version__} sees no CUDA GPU")
        device = torch.device("cuda:0" if wanted == "cuda" else wanted)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"config key 'device' is {wanted!r} but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist")
        return device
    raise ValueError(f"config key 'device' is {wanted!r}; expected {DEVICE_CHOICES}")


def _load_checkpoint(path: Path) -> object:
    """The model inside an Ultralytics checkpoint (FP32, eval mode), Ultralytics' messages silenced."""
    omp_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        from ultralytics.nn.tasks import load_checkpoint
    except ImportError:  # Ultralytics < 8.3.x names it attempt_load_one_weight
        from ultralytics.nn.tasks import (  # type: ignore[attr-defined,no-redef]  # absent from new Ultralytics
            attempt_load_one_weight as load_checkpoint,
        )
    finally:
        if omp_threads is None:  # importing Ultralytics sets OMP_NUM_THREADS=1 for its training loaders
            os.environ.pop("OMP_NUM_THREADS", None)
    with contextlib.redirect_stdout(io.StringIO()):
        model, _ = load_checkpoint(str(path), device=torch.device("cpu"))
    return model


# An Ultralytics model keeps its facts (names, task, stride, end2end) and `fuse` as plain attributes
# that differ between Ultralytics versions and model kinds, with no class or protocol to check them
# against: the functions below read that foreign object with hasattr/getattr, and only they do.

def _yolo_model(path: Path, loaded: object) -> torch.nn.Module:
    """`loaded` as a module, when it is an Ultralytics YOLO model (it has class names)."""
    if not isinstance(loaded, torch.nn.Module) or not hasattr(loaded, "names"):
        raise ModelLoadError(str(path), "the checkpoint holds no Ultralytics YOLO model")
    return loaded


def _class_names(model: torch.nn.Module) -> dict[int, str]:
    names: Any = model.names
    pairs = names.items() if isinstance(names, dict) else enumerate(names)
    return {int(k): str(v) for k, v in pairs}


def _model_task(model: torch.nn.Module) -> str | None:
    task = getattr(model, "task", None)
    return task if isinstance(task, str) else None


def _stride(model: torch.nn.Module) -> int:
    strides = getattr(model, "stride", None)
    return max(int(strides.max()), 32) if isinstance(strides, torch.Tensor) else 32


def _one_to_many_head(model: torch.nn.Module) -> None:
    """YOLOv10/YOLO26 carry an NMS-free head too; like Ultralytics' predictor (nms=None) and its
    default ONNX export, run the one-to-many head so outputs have the (1, 4 + nc, A) layout."""
    if getattr(model, "end2end", False):
        with contextlib.suppress(AttributeError):  # read-only in old Ultralytics: decode handles both
            setattr(model, "end2end", False)  # noqa: B010 - nn.Module types attribute values as tensors


def _fused(model: torch.nn.Module) -> torch.nn.Module:
    """Conv + BatchNorm folded, as Ultralytics' own predictor does."""
    fuse = getattr(model, "fuse", None)
    if not callable(fuse):
        return model
    with contextlib.redirect_stdout(io.StringIO()):
        fused = fuse(verbose=False) if _accepts_verbose(fuse) else fuse()
    return fused if isinstance(fused, torch.nn.Module) else model


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().float().cpu().numpy()


class TorchBackend:
    def __init__(self, path: Path, options: TorchOptions) -> None:
        self.path = path
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        try:
            self.device = choose_device(options.device)
        except ValueError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        try:
            loaded = _load_checkpoint(path)
        except Exception as exc:  # torch/pickle/Ultralytics raise many types for a bad file
            detail = " ".join(str(exc).replace("ERROR ❌️", "").split())
            raise ModelLoadError(str(path), f"not a readable Ultralytics YOLO checkpoint "
                                 f"({type(exc).__name__}: {detail})") from exc
        model = _yolo_model(path, loaded)
        task = model_task(str(path), _model_task(model), options.task, None)
        stride = _stride(model)
        input_shape = options.input_size
        if task != "classify" and (input_shape[0] % stride or input_shape[1] % stride):
            raise ModelLoadError(str(path), f"config keys MODEL_HEIGHT/MODEL_WIDTH are {input_shape[0]}x"
                                 f"{input_shape[1]}; a {task} model needs multiples of its stride {stride}")
        _one_to_many_head(model)
        model = _fused(model)
        if options.precision == "fp16" and self.device.type != "cuda":
            raise ModelLoadError(str(path), precision_refusal("fp16", f"the PyTorch backend runs fp16 on a CUDA GPU "
                                                                      f"only, and the device is {self.device}"))
        self.half = bool(options.half and self.device.type == "cuda")  # FP16 only pays off on a GPU
        model = model.to(self.device).eval()
        model = model.half() if self.half else model.float()
        if _channels_last_is_faster(self.device):
            model = model.to(memory_format=torch.channels_last)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model: torch.nn.Module | None = model
        version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        device_name = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
        self.info = ModelInfo(
            name=path.name, format="pytorch", runtime=f"torch {version}", device=device_name, task=task,
            input_shape=input_shape, names=_class_names(model), stride=stride, input_dtype="float32", dynamic=True,
            max_batch=MAX_BATCH, precision="fp16" if self.half else "fp32")
        self.frame_path: DeviceFramePath | None = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # static shapes: let cuDNN time its kernels once
            self.frame_path = DeviceFramePath.for_model(model, self.device, torch.float16 if self.half
                                                        else torch.float32, len(self.info.names))

    @property
    def device_frames(self) -> DeviceFramePath | None:
        """The GPU frame path for detect and segment models (classify keeps its exact host crop)."""
        return self.frame_path if self.info.task != "classify" else None

    def disable_device_frames(self) -> None:
        """Back to eager forwards on host-prepared tensors (after the GPU frame path failed)."""
        if self.frame_path is not None:
            self.frame_path.close()
            self.frame_path = None

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        # The GPU frame path's CUDA graphs are captured for single frames: a batch runs eagerly.
        if self.frame_path is not None and tensor.shape[0] == 1:
            return self.frame_path.forward(tensor)
        if self.model is None:
            raise RuntimeError(f"PyTorch backend for {self.path.name} is closed")
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(tensor)).to(self.device, non_blocking=True)
            batch = batch.half() if self.half else batch.float()
            output = self.model(batch)
        return [_as_numpy(t) for t in export_outputs(output)]

    def close(self) -> None:
        self.disable_device_frames()
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _channels_last_is_faster(device: torch.device) -> bool:
    """oneDNN (mkldnn) convolutions on x86 CPUs run ~1.5x faster on NHWC weights; Ultralytics' own
    predictor switches to them there too."""
    return (device.type == "cpu" and platform.machine().lower() in ("x86_64", "amd64")
            and torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled))


def _accepts_verbose(method: Callable[..., object]) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def load(path: Path, request: BackendOptions) -> Backend:
    return TorchBackend(Path(path), options_for(path, TorchOptions.from_request, request))
