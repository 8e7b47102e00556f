"""A loaded model plus the task's pre/post-processing: frame in, detections out, each stage timed."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from . import processing
from .backends import Backend, BackendOptions, DeviceFrames, ModelInfo, load_backend
from .backends.base import ConcurrentBackend, InferenceJob, InputLayout
from .backends.metadata import classes_from_output
from .config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostprocessSettings:
    conf_threshold: float = 0.25
    iou_threshold: float = 0.7
    max_det: int = 300
    top_k: int = 5

    @classmethod
    def from_config(cls, config: Config) -> PostprocessSettings:
        return cls(config.conf_threshold, config.iou_threshold, config.max_det)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A frame ready for inference: a model input tensor, or the backend's staged frame (DeviceFrames)."""

    frame: np.ndarray
    tensor: np.ndarray | object
    geometry: processing.Letterbox
    preprocess_ms: float


@dataclass(frozen=True)
class Prediction:
    result: processing.Detections | processing.Classification
    preprocess_ms: float
    inference_ms: float  # the whole batch's inference when the frame was inferred in one
    postprocess_ms: float
    batch_size: int = 1  # frames inferred in the one call with this frame (itself included)

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    @property
    def finished(self) -> bool:
        """False while a segmentation result's polygons are still pending."""
        return not isinstance(self.result, processing.Detections) or self.result.finished

    def finish(self) -> Prediction:
        """This prediction with its pending segmentation polygons made (the one place they are made),
        their time counted as post-processing; itself when there is nothing to do."""
        if not isinstance(self.result, processing.Detections) or self.result.finished:
            return self
        result, elapsed = self.result.with_polygons()
        return replace(self, result=result, postprocess_ms=self.postprocess_ms + elapsed)


class Submitted(Protocol):
    """Frames handed to `Predictor.submit` together."""

    frames: int

    def done(self) -> bool:
        """Whether their inference has ended (never blocks)."""

    def wait(self) -> None:
        """Wait for their inference to end, keeping its outputs or its error (never raises)."""

    def predictions(self) -> list[Prediction]:
        """One Prediction per frame in order, decoded (waits first); raises the inference's error."""


class _Inferred:
    """Frames whose inference already ran in `submit` (one at a time, or in one batch)."""

    def __init__(self, frames: int, predictions: list[Prediction] | None, error: Exception | None = None) -> None:
        self.frames = frames
        self._predictions = predictions
        self._error = error

    def done(self) -> bool:
        return True

    def wait(self) -> None:
        pass

    def predictions(self) -> list[Prediction]:
        if self._error is not None:
            raise self._error
        return list(self._predictions or [])


class _SideBySide:
    """Frames inferred side by side on a ConcurrentBackend: one job per group of frames (a group is one
    batched call where the model takes batches), decoded when asked."""

    def __init__(self, predictor: Predictor, backend: ConcurrentBackend, frames: list[Prepared],
                 groups: list[list[int]]) -> None:
        self.frames = len(frames)
        self._predictor = predictor
        self._prepared = frames
        self._groups = groups
        self._jobs: list[tuple[InferenceJob, float]] = []
        self._outputs: list[tuple[list[np.ndarray], float]] = []  # (outputs, inference ms) of the jobs taken back
        self._error: Exception | None = None
        for group in groups:
            if len(self._jobs) - len(self._outputs) >= backend.concurrency:
                self._take_back(len(self._outputs))  # more groups than requests: wait for this batch's oldest
            if self._error is not None:
                return
            tensors = [cast(np.ndarray, frames[i].tensor) for i in group]  # host tensors: checked by submit
            try:
                batch = np.concatenate(tensors) if len(tensors) > 1 else tensors[0]
                self._jobs.append((backend.start(batch), time.perf_counter()))
            except Exception as exc:  # noqa: BLE001 - reported by predictions(), like an inference error
                self._error = exc
                return

    def _take_back(self, index: int) -> None:
        job, started = self._jobs[index]
        try:
            outputs = job.outputs()
        except Exception as exc:  # noqa: BLE001 - kept for predictions(); every job is still taken back
            self._error = self._error or exc
            outputs = []
        self._outputs.append((outputs, (time.perf_counter() - started) * 1000))

    def done(self) -> bool:
        return all(job.done() for job, _ in self._jobs[len(self._outputs):])

    def wait(self) -> None:
        while len(self._outputs) < len(self._jobs):
            self._take_back(len(self._outputs))

    def predictions(self) -> list[Prediction]:
        self.wait()
        if self._error is not None:
            raise self._error
        predictions: dict[int, Prediction] = {}
        for group, (outputs, inference_ms) in zip(self._groups, self._outputs):
            frames = [self._prepared[i] for i in group]
            predictions.update(zip(group, self._predictor.decode_call(frames, outputs, inference_ms)))
        return [predictions[i] for i in range(self.frames)]


def failed_submission(frames: int, error: Exception) -> Submitted:
    """A Submitted whose predictions() raises `error` (a submit that could not even start)."""
    return _Inferred(frames, None, error)


class Predictor:
    """Runs one backend with the shared numpy pipeline. Not thread-safe: one owner at a time, except
    that `prepare` (pure, with its own buffers) may run on another thread than `infer_and_decode`."""

    def __init__(self, backend: Backend, settings: PostprocessSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._dtype = np.float16 if backend.info.input_dtype == "float16" else np.float32
        # A GPU backend that letterboxes frames itself (PyTorch on CUDA); classify keeps its host crop.
        self.device_frames: DeviceFrames | None = backend.device_frames if backend.info.task != "classify" else None

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @property
    def concurrency(self) -> int:
        """How many frames `submit` can have running at once (1: each submit runs to the end)."""
        backend = self.backend
        return backend.concurrency if isinstance(backend, ConcurrentBackend) else 1

    def submit(self, prepared: Sequence[Prepared]) -> Submitted:
        """Start inferring `prepared`. With a backend that runs frames side by side (`concurrency` > 1)
        it returns once they are started (split into at most `concurrency` calls, batched where the model
        takes batches), and the caller decodes them later with `predictions()`, starting more frames
        meanwhile (at most `concurrency` running in all: the caller keeps count, as `FramesInFlight`
        does). Otherwise the frames are inferred and decoded here, as by `infer_batch`. Errors are raised
        by `predictions()`."""
        frames = list(prepared)
        backend = self.backend
        if self.concurrency > 1 and isinstance(backend, ConcurrentBackend) and frames and all(
                isinstance(frame.tensor, np.ndarray) for frame in frames):
            # Several frames share the requests: as many batched calls as run at once, where the model
            # takes batches (one frame a call where it does not).
            per_call = min(self.info.max_batch, -(-len(frames) // self.concurrency))
            return _SideBySide(self, backend, frames, _batches(frames, per_call))
        try:
            return _Inferred(len(frames), self.infer_batch(frames))
        except Exception as exc:  # noqa: BLE001 - raised again by predictions(), where side-by-side errors are
            return failed_submission(len(frames), exc)

    def prepare(self, frame: np.ndarray, buffers: dict | None = None) -> Prepared:
        start = time.perf_counter()
        if self.info.task == "classify":  # Ultralytics' resize + centre crop, not a letterbox
            tensor, geometry = processing.preprocess_classify(frame, self.info.input_shape, self._dtype, buffers)
        else:
            if self.device_frames is not None:
                geometry = processing.letterbox_geometry(frame.shape[:2], self.info.input_shape,
                                                         self.rectangle_stride)
                staged = self.device_frames.stage(frame, geometry, {} if buffers is None else buffers)
                return Prepared(frame, staged, geometry, (time.perf_counter() - start) * 1000)
            tensor, geometry = self.host_tensor(frame, buffers)
        return Prepared(frame, tensor, geometry, (time.perf_counter() - start) * 1000)

    @property
    def rectangle_stride(self) -> int | None:
        """The stride of the smallest rectangle a frame is letterboxed into, for models that take any
        shape (PyTorch), as in Ultralytics' predictor: 25% fewer pixels for a 4:3 frame at 640. None:
        the model's whole input shape."""
        return self.info.stride if self.info.format == "pytorch" else None

    def host_tensor(self, frame: np.ndarray, buffers: dict | None = None
                    ) -> tuple[np.ndarray, processing.Letterbox]:
        """`frame` letterboxed into what the backend's `infer` takes (`info.input_layout`), on the host,
        in the shape `prepare` gives it (`rectangle_stride`); `buffers` as for `prepare`."""
        stride = self.rectangle_stride
        if self.info.input_layout is InputLayout.BGR_PIXELS:
            return processing.preprocess_pixels(frame, self.info.input_shape, buffers, stride)
        return processing.preprocess(frame, self.info.input_shape, self._dtype, buffers, stride)

    def infer_and_decode(self, prepared: Prepared) -> Prediction:
        """Inference and decoding of a prepared frame. A segmentation result's polygons are left pending:
        the caller runs `Prediction.finish()` for frames whose message carries them."""
        if not isinstance(prepared.tensor, np.ndarray):  # staged for the backend's device frame path
            device_frames = self.device_frames
            if device_frames is not None:
                try:
                    return self._run_on_device(device_frames, prepared)
                except Exception as exc:  # noqa: BLE001 - the host path below is the proven fallback
                    self._abandon_device_frames(exc)
            prepared = self.prepare(prepared.frame)  # staged before the fallback: prepare it here instead
        tensor = prepared.tensor
        if not isinstance(tensor, np.ndarray):
            raise TypeError(f"the host path needs a prepared tensor, got {type(tensor).__name__}")
        start = time.perf_counter()
        outputs = self.backend.infer(tensor)
        return self.decode_call([prepared], outputs, (time.perf_counter() - start) * 1000)[0]

    def infer_batch(self, prepared: Sequence[Prepared]) -> list[Prediction]:
        """`infer_and_decode` of every frame, one Prediction per frame in order, with frames of one tensor
        shape inferred together in calls of at most `info.max_batch` frames. Each frame keeps its own
        pre- and post-processing time; its `inference_ms` is its whole batch's (not a share of it), and
        `batch_size` says how many frames that batch had. Frames staged for the device frame path, and
        every frame of a model that takes one frame at a time, run one by one."""
        frames = list(prepared)
        if self.info.max_batch <= 1 or len(frames) <= 1:
            return [self.infer_and_decode(frame) for frame in frames]
        predictions: dict[int, Prediction] = {}
        for chunk in _batches(frames, self.info.max_batch):
            if len(chunk) == 1:
                predictions[chunk[0]] = self.infer_and_decode(frames[chunk[0]])
            else:
                predictions.update(zip(chunk, self._infer_together([frames[i] for i in chunk])))
        return [predictions[i] for i in range(len(frames))]

    def _infer_together(self, frames: list[Prepared]) -> list[Prediction]:
        """Host-prepared frames of one tensor shape in one `backend.infer` call, decoded frame by frame."""
        tensors = [frame.tensor for frame in frames if isinstance(frame.tensor, np.ndarray)]
        if len(tensors) != len(frames):
            raise TypeError("a batch takes host-prepared tensors only")
        start = time.perf_counter()
        outputs = self.backend.infer(np.concatenate(tensors))
        return self.decode_call(frames, outputs, (time.perf_counter() - start) * 1000)

    def decode_call(self, frames: Sequence[Prepared], outputs: list[np.ndarray], inference_ms: float
                    ) -> list[Prediction]:
        """The outputs of one inference call on `frames` (row i is frame i when there are several), decoded
        frame by frame: each keeps its own pre- and post-processing time and gets the call's inference time
        and frame count."""
        count = len(frames)
        if count > 1:
            wrong = [o.shape for o in outputs if o.shape[:1] != (count,)]
            if wrong:
                raise ValueError(f"{self.info.name}: a batch of {count} frames gave outputs of shapes {wrong}, "
                                 f"expected {count} rows each")
        predictions = []
        for row, frame in enumerate(frames):
            decode_start = time.perf_counter()
            result = self.decode([o[row:row + 1] for o in outputs] if count > 1 else outputs, frame.geometry)
            postprocess_ms = (time.perf_counter() - decode_start) * 1000
            predictions.append(Prediction(result, frame.preprocess_ms, inference_ms, postprocess_ms, count))
        return predictions

    def _abandon_device_frames(self, error: Exception) -> None:
        """The GPU frame path failed: run on the host path (numpy pre/post-processing, eager network)
        from now on, once; a failure there is the caller's to report."""
        log.warning("the GPU frame path failed (%s: %s); continuing with host pre/post-processing and an "
                    "eager network", type(error).__name__, error)
        self.device_frames = None
        self.backend.disable_device_frames()

    def _run_on_device(self, device_frames: DeviceFrames, prepared: Prepared) -> Prediction:
        s = self.settings
        ran = device_frames.run(prepared.tensor, prepared.geometry, s.conf_threshold, s.iou_threshold,
                                     s.max_det)
        start = time.perf_counter()
        result = self.decode(ran.outputs, prepared.geometry, end2end=True if ran.decoded else None)
        host_ms = (time.perf_counter() - start) * 1000
        # Where decoding runs is chosen on the whole post-processing time, the host's share included.
        device_frames.record_postprocess(ran.decoded, ran.postprocess_ms + host_ms)
        return Prediction(result, prepared.preprocess_ms + ran.preprocess_ms, ran.inference_ms,
                          ran.postprocess_ms + host_ms)

    def predict(self, frame: np.ndarray) -> Prediction:
        """One frame end to end, polygons included (their time in `postprocess_ms`)."""
        return self.infer_and_decode(self.prepare(frame)).finish()

    def decode(self, outputs: list[np.ndarray], geometry: processing.Letterbox, end2end: bool | None = None
               ) -> processing.Detections | processing.Classification:
        """Raw outputs -> result in frame pixels; segmentation polygons are left pending (see infer_and_decode)."""
        s = self.settings
        task = self.info.task
        if task == "classify":
            return processing.top_k(outputs[0], s.top_k)
        if task == "detect":
            return processing.postprocess_detect(outputs[0], geometry, self.info.num_classes or
                                                 classes_from_output(outputs[0], 0),
                                                 s.conf_threshold, s.iou_threshold, s.max_det, end2end)
        if task == "segment":
            return processing.postprocess_segment_deferred(outputs, geometry, self.info.num_classes or
                                                           classes_from_output(outputs[0], outputs[1].shape[1]),
                                                           s.conf_threshold, s.iou_threshold, s.max_det,
                                                           end2end=end2end)
        raise ValueError(f"task {task!r} is not supported")

    def close(self) -> None:
        self.backend.close()


def _batches(frames: Sequence[Prepared], max_batch: int) -> list[list[int]]:
    """Indices of `frames` in the groups they can be inferred in: host tensors of one shape and dtype
    together (in order, at most `max_batch` a group), every staged frame alone."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, frame in enumerate(frames):
        tensor = frame.tensor
        key: tuple[object, ...] = ((tensor.shape, tensor.dtype.str) if isinstance(tensor, np.ndarray)
                                   else ("staged", index))
        groups.setdefault(key, []).append(index)
    return [group[start:start + max_batch] for group in groups.values() for start in range(0, len(group), max_batch)]


MODEL_DIR_VARIABLE = "YOLO_EDGE_MODEL_DIR"


def resolve_model_path(model_loc: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where `model_loc` points. A relative path is taken inside $YOLO_EDGE_MODEL_DIR when the recipe
    sets it (to the model component's artifact folder), else from the working directory."""
    path = Path(model_loc).expanduser()
    base = environ.get(MODEL_DIR_VARIABLE, "").strip()
    if path.is_absolute() or not base or base.startswith("{"):  # "{...}": an uninterpolated recipe variable
        return path
    return Path(base) / path


def backend_options(config: Config) -> BackendOptions:
    """What the configuration asks of a backend."""
    return BackendOptions(config.device, config.half, config.threads, config.input_size, config.task,
                          config.runtime, config.precision, config.performance)


def load_predictor(config: Config) -> Predictor:
    """Load the model `config.model_loc` names with the backend its extension selects."""
    backend = load_backend(resolve_model_path(config.model_loc), backend_options(config))
    return Predictor(backend, PostprocessSettings.from_config(config))
