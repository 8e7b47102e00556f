"""The per-frame step: prepared frames in (one batch, from one or several cameras), inferred (and, when
published, finished) frames out.

The controller runs it for every batch, and the benchmark worker runs the very same code, so what the
benchmark measures is what the component does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from . import messages
from .backends import ModelInfo
from .limits import PublishGate
from .metrics import RollingFPS
from .pipeline import FeedFrame
from .predictor import Prediction, Predictor


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


def infer_frames(predictor: Predictor, frames: Sequence[FeedFrame], fps: Sequence[RollingFPS], gate: PublishGate,
                 with_detections: bool, waiting_since: Sequence[float] | None = None) -> list[InferredFrame]:
    """Infer and decode `frames` as one batch where the model takes batches (`fps`: each frame's
    camera's counter; `waiting_since`: when the batch gathering began to wait on each frame, by default
    when it was queued); make a frame's segmentation polygons only when its message will carry them
    (their time is post-processing, in the message and in the statistics alike). Model errors raise."""
    started = time.monotonic()
    predictions = predictor.infer_batch([frame.prepared for frame in frames])
    now = time.monotonic()
    inferred = []
    since = list(waiting_since) if waiting_since is not None else [frame.ready_at for frame in frames]
    for frame, prediction, counter, waited_from in zip(frames, predictions, fps, since):
        rate = counter.tick(now)
        published = gate.allow(now)
        if published and with_detections:
            prediction = prediction.finish()
        wait_ms = max(0.0, (started - waited_from) * 1000) if waited_from else 0.0
        inferred.append(InferredFrame(frame, prediction, predictor.info, started, now, rate, published,
                                      prediction.batch_size, wait_ms))
    return inferred


def infer_frame(predictor: Predictor, frame: FeedFrame, fps: RollingFPS, gate: PublishGate,
                with_detections: bool) -> InferredFrame:
    """`infer_frames` for one frame."""
    return infer_frames(predictor, [frame], [fps], gate, with_detections)[0]


def frame_message(inferred: InferredFrame, *, seq: int, info: ModelInfo, source: str, live: bool,
                  include_detections: bool = True, camera: str | None = None) -> dict[str, Any]:
    """The `frame` message of an inferred frame; `frame_age_ms` (capture to inference) for live sources."""
    prediction = inferred.prediction
    age = (inferred.started_at - inferred.frame.captured_at) * 1000 if live else None
    return messages.frame_message(
        seq=seq, info=info, source=source, frame_shape=inferred.frame.prepared.frame.shape[:2],
        result=prediction.result, preprocess_ms=prediction.preprocess_ms, inference_ms=prediction.inference_ms,
        postprocess_ms=prediction.postprocess_ms, fps=inferred.fps, frame_age_ms=age,
        include_detections=include_detections, camera=camera, batch_size=inferred.batch_size,
        gather_wait_ms=inferred.gather_wait_ms)
