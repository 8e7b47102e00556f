"""The small protocol every runtime backend implements, and the model facts they report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class ModelLoadError(RuntimeError):
    """A model file that cannot be loaded; the message names the file and the cause."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot load model {path}: {cause}")


@dataclass(frozen=True)
class BackendOptions:
    """What the configuration asks of a backend."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    half: bool = False
    threads: int = 0  # 0 = runtime default
    input_size: tuple[int, int] = (640, 640)  # used when the model does not fix its own size
    task: str = "auto"


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model, from its metadata where it has some."""

    name: str  # file name
    format: str  # onnx | pytorch | tensorrt
    runtime: str  # e.g. "onnxruntime 1.20.1"
    device: str  # e.g. "cpu", "cuda:0"
    task: str  # detect | segment | classify
    input_shape: tuple[int, int]  # (height, width) fed to the model
    names: dict[int, str] = field(default_factory=dict)
    stride: int = 32
    input_dtype: str = "float32"
    dynamic: bool = False  # the model accepts other input sizes

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def label(self, class_id: int) -> str:
        return self.names.get(int(class_id), str(int(class_id)))


@dataclass
class DeviceResult:
    """What a backend's device frame path (see `DeviceFrames`) returns for one frame."""

    outputs: list[np.ndarray]  # float32, host memory
    decoded: bool  # outputs[0] holds NMS'd rows (k, 6 + nm): x1 y1 x2 y2 score class [coefficients]
    preprocess_ms: float  # letterbox on the device
    inference_ms: float
    postprocess_ms: float  # decoding there, if any, and the copies back


@runtime_checkable
class DeviceFrames(Protocol):
    """Optional, for backends whose device should letterbox the frame itself (a GPU): `stage` takes the
    raw frame on the feeder thread, `run` does the rest on the inference thread."""

    def stage(self, frame: np.ndarray, buffers: dict) -> object: ...

    def run(self, staged: object, geometry: object, conf_threshold: float, iou_threshold: float,
            max_det: int) -> DeviceResult: ...

    def record_postprocess(self, decoded: bool, milliseconds: float) -> None:
        """The frame's whole post-processing time, host decoding included (to choose where to decode)."""


@runtime_checkable
class Backend(Protocol):
    """One runtime. `infer` takes a (1, 3, H, W) tensor and returns the model's raw outputs."""

    info: ModelInfo

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...
