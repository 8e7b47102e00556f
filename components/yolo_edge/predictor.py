"""A loaded model plus the task's pre/post-processing: frame in, detections out, each stage timed."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import processing
from .backends import Backend, BackendOptions, DeviceFrames, ModelInfo, load_backend
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

    def prepare(self, frame: np.ndarray, buffers: dict | None = None) -> Prepared:
        start = time.perf_counter()
        if self.info.task == "classify":  # Ultralytics' resize + centre crop, not a letterbox
            tensor, geometry = processing.preprocess_classify(frame, self.info.input_shape, self._dtype, buffers)
        else:
            # Models that take any shape (PyTorch) get the smallest stride-multiple rectangle, as in
            # Ultralytics' predictor: 25% fewer pixels for a 4:3 frame at 640.
            stride = self.info.stride if self.info.format == "pytorch" else None
            if self.device_frames is not None:
                geometry = processing.letterbox_geometry(frame.shape[:2], self.info.input_shape, stride)
                staged = self.device_frames.stage(frame, geometry, {} if buffers is None else buffers)
                return Prepared(frame, staged, geometry, (time.perf_counter() - start) * 1000)
            tensor, geometry = processing.preprocess(frame, self.info.input_shape, self._dtype, buffers, stride)
        return Prepared(frame, tensor, geometry, (time.perf_counter() - start) * 1000)

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
        inferred = time.perf_counter()
        result = self.decode(outputs, prepared.geometry)
        done = time.perf_counter()
        return Prediction(result, prepared.preprocess_ms, (inferred - start) * 1000, (done - inferred) * 1000)

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
        inference_ms = (time.perf_counter() - start) * 1000
        wrong = [o.shape for o in outputs if o.shape[:1] != (len(frames),)]
        if wrong:
            raise ValueError(f"{self.info.name}: a batch of {len(frames)} frames gave outputs of shapes {wrong}, "
                             f"expected {len(frames)} rows each")
        predictions = []
        for row, frame in enumerate(frames):
            decode_start = time.perf_counter()
            result = self.decode([o[row:row + 1] for o in outputs], frame.geometry)
            postprocess_ms = (time.perf_counter() - decode_start) * 1000
            predictions.append(Prediction(result, frame.preprocess_ms, inference_ms, postprocess_ms, len(frames)))
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
                          config.runtime, config.precision)


def load_predictor(config: Config) -> Predictor:
    """Load the model `config.model_loc` names with the backend its extension selects."""
    backend = load_backend(resolve_model_path(config.model_loc), backend_options(config))
    return Predictor(backend, PostprocessSettings.from_config(config))
