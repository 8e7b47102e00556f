"""The per-frame step: prepared frames in (one batch, from one or several cameras), inferred (and, when
published, finished) frames out.

The controller runs it for every batch, and the benchmark worker runs the very same code, so what the
benchmark measures is what the component does. Where the model runs frames side by side
(`Predictor.concurrency` > 1), `FramesInFlight` starts the next batch before the previous one is decoded.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Generic, Mapping, Sequence, TypeVar

from . import messages
from .backends import ModelInfo
from .config import PublishFrames
from .limits import PublishGate
from .metrics import RollingFPS
from .pipeline import FeedFrame
from .predictor import Prediction, Predictor, Submitted, failed_submission
from .processing import Detections
from .scene.filters import DetectionFilter


@dataclass(frozen=True)
class InferredFrame:
    frame: FeedFrame
    prediction: Prediction  # finished (polygons made) when published with detections
    info: ModelInfo
    started_at: float  # time.monotonic() when inference (of its batch) began
    done_at: float  # time.monotonic() when decoding ended
    fps: float  # rolling end-to-end FPS of this frame's camera
    published: bool  # within the publish rate: the frame gets a message
    batch_size: int = 1  # frames inferred together with this one (itself included)
    gather_wait_ms: float = 0.0  # from the frame being ready to its batch's inference starting


T = TypeVar("T")


@dataclass(frozen=True)
class InFlight(Generic[T]):
    """A batch of frames handed to the predictor, with the caller's `tag` for them."""

    frames: Sequence[FeedFrame]
    tag: T
    predictor: Predictor
    submitted: Submitted
    started_at: float  # time.monotonic() when the batch was submitted


class FramesInFlight(Generic[T]):
    """The batches submitted and not yet finished, oldest first; at most `predictor.concurrency` frames
    run at once. One owner thread. Every batch it returns has ended (`Submitted.wait` was called: its
    requests are free again), to be finished by the caller with `finish_frames`, in order."""

    def __init__(self) -> None:
        self._batches: deque[InFlight[T]] = deque()

    @property
    def frames(self) -> int:
        return sum(batch.submitted.frames for batch in self._batches)

    def submit(self, predictor: Predictor, frames: Sequence[FeedFrame], tag: T) -> list[InFlight[T]]:
        """Start `frames`; returns the earlier batches that have ended, oldest first. When the new frames
        would exceed the predictor's concurrency, the oldest batches are waited for first."""
        ended = []
        while self._batches and self.frames + len(frames) > predictor.concurrency:
            ended.append(self._ended(self._batches.popleft()))
        try:
            submitted = predictor.submit([frame.prepared for frame in frames])
        except Exception as exc:  # noqa: BLE001 - the batch's own error, raised where its frames are finished
            submitted = failed_submission(len(frames), exc)
        self._batches.append(InFlight(list(frames), tag, predictor, submitted, time.monotonic()))
        while self._batches and self._batches[0].submitted.done():
            ended.append(self._ended(self._batches.popleft()))
        return ended

    def drain(self) -> list[InFlight[T]]:
        """Every batch still in flight, oldest first, once it has ended."""
        ended = [self._ended(batch) for batch in self._batches]
        self._batches.clear()
        return ended

    def __len__(self) -> int:
        return len(self._batches)

    @staticmethod
    def _ended(batch: InFlight[T]) -> InFlight[T]:
        batch.submitted.wait()
        return batch


def finish_frames(batch: InFlight[Any], fps: Sequence[RollingFPS], gate: PublishGate, with_detections: bool,
                  waiting_since: Sequence[float] | None = None,
                  filters: Sequence[DetectionFilter | None] | None = None,
                  publish_frames: PublishFrames = PublishFrames.ALL) -> list[InferredFrame]:
    """Decode an ended batch (`fps`: each frame's camera's counter; `waiting_since`: when the batch gathering
    began to wait on each frame, by default when it was queued); keep the detections each frame's camera's
    filter keeps (`filters`); make a frame's segmentation polygons only when its message will carry them
    (their time is post-processing, in the message and in the statistics alike). Model errors raise."""
    frames, predictor, started = batch.frames, batch.predictor, batch.started_at
    predictions = batch.submitted.predictions()
    now = time.monotonic()
    inferred = []
    since = list(waiting_since) if waiting_since is not None else [frame.ready_at for frame in frames]
    kept = list(filters) if filters is not None else [None] * len(frames)
    for frame, prediction, counter, waited_from, keep in zip(frames, predictions, fps, since, kept):
        if keep is not None and not keep.is_empty:
            prediction = filtered(prediction, keep, frame.prepared.frame.shape[:2], predictor.info)
        rate = counter.tick(now)
        published = wanted(prediction, publish_frames) and gate.allow(now)
        if published and with_detections:
            prediction = prediction.finish()
        wait_ms = max(0.0, (started - waited_from) * 1000) if waited_from else 0.0
        inferred.append(InferredFrame(frame, prediction, predictor.info, started, now, rate, published,
                                      prediction.batch_size, wait_ms))
    return inferred


def infer_frames(predictor: Predictor, frames: Sequence[FeedFrame], fps: Sequence[RollingFPS], gate: PublishGate,
                 with_detections: bool, waiting_since: Sequence[float] | None = None,
                 filters: Sequence[DetectionFilter | None] | None = None,
                 publish_frames: PublishFrames = PublishFrames.ALL) -> list[InferredFrame]:
    """Infer and decode `frames` as one batch where the model takes batches, or side by side where it runs
    frames so, waiting for all of them (see `finish_frames`). Model errors raise."""
    started = time.monotonic()
    batch = InFlight(list(frames), None, predictor, predictor.submit([frame.prepared for frame in frames]), started)
    return finish_frames(batch, fps, gate, with_detections, waiting_since, filters, publish_frames)


def filtered(prediction: Prediction, keep: DetectionFilter, frame_shape: tuple[int, int], info: ModelInfo
             ) -> Prediction:
    """`prediction` with only the detections `keep` keeps (a classification is left as it is)."""
    result = prediction.result
    if not isinstance(result, Detections) or not len(result):
        return prediction
    mask = keep.keep(result.boxes, result.scores, result.class_ids, frame_shape, info.names)
    return replace(prediction, result=result.select(mask))


def wanted(prediction: Prediction, publish_frames: PublishFrames) -> bool:
    """Whether the frame gets a message under `publish_frames` (before the publish rate cap)."""
    if publish_frames is PublishFrames.NONE:
        return False
    return publish_frames is PublishFrames.ALL or len(prediction.result) > 0


def infer_frame(predictor: Predictor, frame: FeedFrame, fps: RollingFPS, gate: PublishGate,
                with_detections: bool) -> InferredFrame:
    """`infer_frames` for one frame."""
    return infer_frames(predictor, [frame], [fps], gate, with_detections)[0]


def frame_message(inferred: InferredFrame, *, seq: int, info: ModelInfo, source: str, live: bool,
                  include_detections: bool = True, camera: str | None = None,
                  track_ids: Mapping[int, int] | None = None) -> dict[str, Any]:
    """The `frame` message of an inferred frame; `frame_age_ms` (capture to inference) for live sources."""
    prediction = inferred.prediction
    age = (inferred.started_at - inferred.frame.captured_at) * 1000 if live else None
    return messages.frame_message(
        seq=seq, info=info, source=source, frame_shape=inferred.frame.prepared.frame.shape[:2],
        result=prediction.result, preprocess_ms=prediction.preprocess_ms, inference_ms=prediction.inference_ms,
        postprocess_ms=prediction.postprocess_ms, fps=inferred.fps, frame_age_ms=age,
        include_detections=include_detections, camera=camera, batch_size=inferred.batch_size,
        gather_wait_ms=inferred.gather_wait_ms, track_ids=track_ids)
