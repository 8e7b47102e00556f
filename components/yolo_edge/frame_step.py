"""The per-frame step: a prepared frame in, an inferred (and, when published, finished) frame out.

The controller runs it for every frame of a run, and the benchmark worker runs the very same code,
so what the benchmark measures is what the component does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

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
    started_at: float  # time.monotonic() when inference began
    done_at: float  # time.monotonic() when decoding ended
    fps: float  # rolling end-to-end FPS at this frame
    published: bool  # within the publish rate: the frame gets a message


def infer_frame(predictor: Predictor, frame: FeedFrame, fps: RollingFPS, gate: PublishGate,
                with_detections: bool) -> InferredFrame:
    """Infer and decode `frame`; make its segmentation polygons only when its message will carry them
    (their time is post-processing, in the message and in the statistics alike). Model errors raise."""
    started = time.monotonic()
    prediction = predictor.infer_and_decode(frame.prepared)
    now = time.monotonic()
    rate = fps.tick(now)
    published = gate.allow(now)
    if published and with_detections:
        prediction = prediction.finish()
    return InferredFrame(frame, prediction, predictor.info, started, now, rate, published)


def frame_message(inferred: InferredFrame, *, seq: int, info: ModelInfo, source: str, live: bool,
                  include_detections: bool = True) -> dict[str, Any]:
    """The `frame` message of an inferred frame; `frame_age_ms` (capture to inference) for live sources."""
    prediction = inferred.prediction
    age: float | None = (inferred.started_at - inferred.frame.captured_at) * 1000 if live else None
    return messages.frame_message(
        seq=seq, info=info, source=source, frame_shape=inferred.frame.prepared.frame.shape[:2],
        result=prediction.result, preprocess_ms=prediction.preprocess_ms, inference_ms=prediction.inference_ms,
        postprocess_ms=prediction.postprocess_ms, fps=inferred.fps, frame_age_ms=age,
        include_detections=include_detections)
