"""The small protocol every runtime backend implements, the model facts they report, and the checks
each backend's own options share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Tuple, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..processing import Letterbox

SUPPORTED_TASKS = ("detect", "segment", "classify")
# The config key `precision`: what a backend computes in. Each backend accepts the ones it can run and
# refuses the others (ModelLoadError naming the key and value); `auto` is fp32 except where noted.
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")
# The config key `performance`: one frame at a time on all cores (latency), or several frames at once, each
# on a share of the cores (throughput: more frames per second, each takes longer). `auto` is throughput
# where the runtime can run frames side by side (OpenVINO on the CPU), else latency.
PERFORMANCES = ("auto", "latency", "throughput")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"

InputSize = Tuple[int, int]  # (height, width)
# The most frames one inference call takes from a model that accepts any batch size (ONNX with a symbolic
# batch dimension, PyTorch); the configuration's batch_size has the same ceiling.
MAX_BATCH = 64


class InputLayout(Enum):
    """What a backend's `infer` takes (`Predictor.prepare` makes it so)."""

    RGB_PLANES = "rgb_planes"  # (N, 3, H, W) RGB scaled to [0, 1], in ModelInfo.input_dtype
    # (N, H, W, 3) letterboxed BGR frames as they are, uint8: the runtime converts them in its own graph
    BGR_PIXELS = "bgr_pixels"


class ModelLoadError(RuntimeError):
    """A model file that cannot be loaded; the message names the file and the cause."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot load model {path}: {cause}")


class OptionError(ValueError):
    """A configured value a backend cannot use; the message names the config key and the value."""


@dataclass(frozen=True)
class BackendOptions:
    """What the configuration asks of a backend (each backend keeps the part it uses in its own options)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    half: bool = False
    threads: int = 0  # 0 = runtime default
    input_size: tuple[int, int] = (640, 640)  # used when the model does not fix its own size
    task: str = "auto"
    runtime: str = "onnxruntime"  # what runs an .onnx file: auto | onnxruntime | openvino | tensorrt (Config: auto)
    precision: str = "auto"  # one of PRECISIONS
    performance: str = "auto"  # one of PERFORMANCES


# --- checks shared by the backends' options -----------------------------------------------------------

def checked_device(device: str) -> str:
    """'CUDA ' -> 'cuda', '' -> 'auto'; raises OptionError unless auto, cpu, cuda or cuda:N."""
    value = device.strip().lower() or "auto"
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise OptionError(f"config key 'device' is {value!r}; expected {DEVICE_CHOICES}")


def checked_task(task: str) -> str:
    """The configured task in lower case; raises OptionError unless auto or a supported task."""
    value = task.strip().lower()
    if value == "auto" or value in SUPPORTED_TASKS:
        return value
    raise OptionError(f"config key 'task' is {value!r}; expected auto, {', '.join(SUPPORTED_TASKS)}")


def checked_flag(key: str, value: bool) -> bool:
    """Raises OptionError unless a bool (a string such as "false" would read as true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"config key {key!r} is {value!r}; expected true or false")
    return bool(value)


def checked_precision(precision: str) -> str:
    """The configured precision in lower case; raises OptionError unless one of PRECISIONS."""
    value = precision.strip().lower() if isinstance(precision, str) else precision
    if value in PRECISIONS:
        return str(value)
    raise OptionError(f"config key 'precision' is {precision!r}; expected {', '.join(PRECISIONS)}")


def checked_performance(performance: str) -> str:
    """The configured performance mode in lower case; raises OptionError unless one of PERFORMANCES."""
    value = performance.strip().lower() if isinstance(performance, str) else performance
    if value in PERFORMANCES:
        return str(value)
    raise OptionError(f"config key 'performance' is {performance!r}; expected {', '.join(PERFORMANCES)}")


def precision_refusal(precision: str, why: str) -> str:
    """The message for a precision a backend cannot run this model in."""
    return f"config key 'precision' is {precision!r} but {why}"


def checked_threads(threads: int) -> int:
    """Raises OptionError unless a whole number >= 0."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise OptionError(f"config key 'threads' is {threads!r}; expected 0 (the runtime's default) or a "
                          "positive count")
    return int(threads)


def checked_input_size(size: Sequence[int]) -> InputSize:
    """(height, width) as ints; raises OptionError unless two positive whole numbers."""
    values = tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(values) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                                   for n in values):
        raise OptionError(f"config keys MODEL_HEIGHT/MODEL_WIDTH are {size!r}; expected two positive sizes "
                          "(height, width)")
    return int(values[0]), int(values[1])


OptionsT = TypeVar("OptionsT")


def options_for(path: Path, parse: Callable[[BackendOptions], OptionsT], request: BackendOptions) -> OptionsT:
    """`parse(request)`, with an OptionError raised as the ModelLoadError of `path`."""
    try:
        return parse(request)
    except OptionError as exc:
        raise ModelLoadError(str(path), str(exc)) from exc


# --- what a backend reports and offers ------------------------------------------------------------------

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
    max_batch: int = 1  # the most frames `Backend.infer` takes in one call (1: one frame at a time)
    precision: str = "fp32"  # what the model computes in: fp32 | fp16 | bf16 | int8 (TensorRT: "engine")
    concurrency: int = 1  # frames inferred side by side (config key `performance`: throughput), 1: one at a time
    input_layout: InputLayout = InputLayout.RGB_PLANES

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
    """For backends whose device should letterbox the frame itself (a GPU): `stage` takes the raw frame
    on the feeder thread, `run` does the rest on the inference thread. What `stage` returns is the
    backend's own (e.g. a pinned host tensor) and goes back to its `run` unread."""

    def stage(self, frame: np.ndarray, geometry: Letterbox, buffers: dict) -> Any: ...

    def run(self, staged: Any, geometry: Letterbox, conf_threshold: float, iou_threshold: float,
            max_det: int) -> DeviceResult: ...

    def record_postprocess(self, decoded: bool, milliseconds: float) -> None:
        """The frame's whole post-processing time, host decoding included (to choose where to decode)."""


@runtime_checkable
class Backend(Protocol):
    """One runtime. `infer` takes N frames in `info.input_layout` ((N, 3, H, W) planes unless it says
    otherwise), 1 <= N <= `info.max_batch`, and returns the model's raw outputs, N rows each."""

    info: ModelInfo

    @property
    def device_frames(self) -> DeviceFrames | None:
        """The device frame path, None when the backend has none (or it was disabled)."""

    def disable_device_frames(self) -> None:
        """Back to host-prepared tensors from now on (after the device frame path failed); a no-op
        for a backend without one."""

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class InferenceJob(Protocol):
    """One frame's inference started by `ConcurrentBackend.start`."""

    def done(self) -> bool:
        """Whether the inference has ended (never blocks)."""

    def outputs(self) -> list[np.ndarray]:
        """Waits for the inference and returns the model's raw outputs (raises its error). Call it once:
        it hands the backend's request back for the next frame."""


@runtime_checkable
class ConcurrentBackend(Protocol):
    """A backend that can run several frames side by side (OpenVINO in throughput mode): at most
    `concurrency` jobs started and not yet taken back with `outputs()`."""

    concurrency: int

    def start(self, tensor: np.ndarray) -> InferenceJob: ...
