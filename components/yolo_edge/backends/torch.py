"""PyTorch backend: runs an Ultralytics .pt checkpoint with torch.

torch and ultralytics are imported here only, so an ONNX or TensorRT deployment never loads them.
The checkpoint is loaded with Ultralytics (its pickles reference Ultralytics classes), fused (Conv +
BatchNorm, as Ultralytics' own predictor does) and run under `torch.inference_mode()`. `infer`
returns the same raw outputs as the model's ONNX export: detect (1, 4 + nc, A); segment
[(1, 4 + nc + nm, A), (1, nm, mh, mw)]; classify (1, nc) softmax probabilities.

On a CPU, pre/post-processing is the shared numpy code. On a CUDA GPU the backend also offers
`device_frames` (see torch_frames): letterbox on the GPU from pinned host buffers, the network in a
CUDA graph, decoding on whichever side measures faster; `infer` goes through the same graphs.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
from pathlib import Path

import numpy as np
import torch

from .base import BackendOptions, ModelInfo, ModelLoadError
from .metadata import resolve_task
from .torch_frames import DeviceFramePath, export_outputs


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
    raise ValueError(f"config key 'device' is {wanted!r}; expected auto, cpu, cuda or cuda:N")


def _load_checkpoint(path: Path) -> torch.nn.Module:
    """The model inside an Ultralytics checkpoint (FP32, eval mode), Ultralytics' messages silenced."""
    omp_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        from ultralytics.nn.tasks import load_checkpoint
    except ImportError:  # Ultralytics < 8.3.x names it attempt_load_one_weight
        from ultralytics.nn.tasks import attempt_load_one_weight as load_checkpoint
    finally:
        if omp_threads is None:  # importing Ultralytics sets OMP_NUM_THREADS=1 for its training loaders
            os.environ.pop("OMP_NUM_THREADS", None)
    with contextlib.redirect_stdout(io.StringIO()):
        model, _ = load_checkpoint(str(path), device=torch.device("cpu"))
    return model


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().float().cpu().numpy()


class TorchBackend:
    def __init__(self, path: Path, options: BackendOptions) -> None:
        self.path = path
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        try:
            self.device = choose_device(options.device)
        except ValueError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        try:
            model = _load_checkpoint(path)
        except Exception as exc:  # torch/pickle/Ultralytics raise many types for a bad file
            detail = " ".join(str(exc).replace("ERROR ❌️", "").split())
            raise ModelLoadError(str(path), f"not a readable Ultralytics YOLO checkpoint "
                                 f"({type(exc).__name__}: {detail})") from exc
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "names"):
            raise ModelLoadError(str(path), "the checkpoint holds no Ultralytics YOLO model")
        task = resolve_task(str(path), getattr(model, "task", None), options.task)
        stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
        input_shape = (int(options.input_size[0]), int(options.input_size[1]))
        if task != "classify" and (input_shape[0] % stride or input_shape[1] % stride):
            raise ModelLoadError(str(path), f"config keys MODEL_HEIGHT/MODEL_WIDTH are {input_shape[0]}x"
                                 f"{input_shape[1]}; a {task} model needs multiples of its stride {stride}")
        if getattr(model, "end2end", False):
            # YOLOv10/YOLO26 carry an NMS-free head too; like Ultralytics' predictor (nms=None) and its
            # default ONNX export, run the one-to-many head so outputs have the (1, 4 + nc, A) layout.
            with contextlib.suppress(AttributeError):  # read-only in old Ultralytics: decode handles both
                model.end2end = False
        if hasattr(model, "fuse"):
            with contextlib.redirect_stdout(io.StringIO()):
                model = model.fuse(verbose=False) if _accepts_verbose(model.fuse) else model.fuse()
        self.half = bool(options.half and self.device.type == "cuda")  # FP16 only pays off on a GPU
        model = model.to(self.device).eval()
        model = model.half() if self.half else model.float()
        if _channels_last_is_faster(self.device):
            model = model.to(memory_format=torch.channels_last)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
        version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        device_name = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
        self.info = ModelInfo(
            name=path.name, format="pytorch", runtime=f"torch {version}", device=device_name, task=task,
            input_shape=input_shape, names={int(k): str(v) for k, v in names.items()}, stride=stride,
            input_dtype="float32", dynamic=True)
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
        if self.frame_path is not None:
            return self.frame_path.forward(tensor)
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


def _accepts_verbose(method: object) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def load(path: Path, options: BackendOptions) -> TorchBackend:
    return TorchBackend(Path(path), options)
