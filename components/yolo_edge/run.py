"""One run, from a start to its end: the frame feeder and everything counted about its frames.

Made when a run starts and dropped when it ends, so nothing of one run leaks into the next and the
controller never holds a half-present feeder. Owned by the controller thread.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

from . import messages
from .backends import ModelInfo
from .frame_step import InferredFrame, frame_message
from .limits import PublishGate
from .metrics import RollingFPS, RunStats
from .pipeline import DropPolicy, FeedItem, FrameFeeder
from .predictor import Predictor
from .sources import FrameSource, SourceEvent

Emit = Callable[[Dict[str, Any]], None]


class Run:
    def __init__(self, source: FrameSource, predictor: Predictor, max_publish_rate: float,
                 on_source_event: Callable[[FrameSource, SourceEvent], None], paused: bool = False) -> None:
        self.feeder = FrameFeeder(source, predictor.prepare,
                                  on_source_event=lambda event: on_source_event(source, event))
        if paused:
            self.feeder.pause()
        self.feeder.start()
        now = time.monotonic()
        self.stats = RunStats()
        self.stats.reset(now)
        self.fps = RollingFPS()
        self.gate = PublishGate(max_publish_rate)
        self.source_outages = 0
        self.last_summary = now
        self._batch: list[dict[str, Any]] = []

    @property
    def source(self) -> FrameSource:
        return self.feeder.source

    @property
    def live(self) -> bool:
        return self.feeder.policy is DropPolicy.LATEST

    def next_item(self, timeout: float) -> FeedItem | None:
        return self.feeder.get(timeout)

    def pause(self, emit: Emit) -> None:
        self.feeder.pause()
        self.flush(emit)

    def resume(self) -> None:
        self.fps.reset()  # the pause is not a slow frame
        self.feeder.resume()

    def replace_source(self, source: FrameSource, predictor: Predictor,
                       on_source_event: Callable[[FrameSource, SourceEvent], None], paused: bool) -> None:
        """A new feeder on `source` (configuration change); the statistics carry on."""
        self.feeder.stop()  # a no-op when the caller stopped it already
        self.feeder = FrameFeeder(source, predictor.prepare,
                                  on_source_event=lambda event: on_source_event(source, event))
        if paused:
            self.feeder.pause()
        self.feeder.start()

    def close(self, emit: Emit) -> None:
        """Stop the feeder (closing the source) and publish the frames still batched."""
        self.feeder.stop()
        self.flush(emit)

    def record(self, inferred: InferredFrame) -> None:
        """Count a frame: in the statistics, and as published or not."""
        prediction = inferred.prediction
        self.stats.record(inferred.done_at, prediction.preprocess_ms, prediction.inference_ms,
                          prediction.postprocess_ms)
        if inferred.published:
            self.stats.published += 1
        else:
            self.stats.dropped += 1

    def publish(self, inferred: InferredFrame, seq: int, frames_per_message: int, include_detections: bool,
                emit: Emit) -> None:
        """The frame's message, alone or batched (`frames_per_message`)."""
        message = frame_message(inferred, seq=seq, info=inferred.info, source=self.source.description,
                                live=self.live, include_detections=include_detections)
        if frames_per_message <= 1:
            emit(message)
            return
        self._batch.append(message)
        if len(self._batch) >= frames_per_message:
            self.flush(emit)

    def flush(self, emit: Emit) -> None:
        if self._batch:
            emit(messages.frames_message(self._batch))
            self._batch = []

    def summary_message(self, state: str, info: ModelInfo | None, final: bool, extra: dict[str, Any]
                        ) -> dict[str, Any]:
        """The run in numbers so far (`final` at its end); `extra` holds the component's own counters."""
        self.last_summary = time.monotonic()
        counts: dict[str, Any] = {"frames_read": self.feeder.frames_read,
                                  "frames_dropped_stale": self.feeder.frames_dropped}
        if self.source.live:
            counts.update(source_outages=self.source_outages, source_connected=self.source.connected)
        stats = self.stats
        return messages.summary_message(
            state=state, info=info, source=self.source.description, frames=stats.frames,
            published=stats.published, not_published=stats.dropped, fps=stats.fps(),
            latency=stats.latency_summary(), elapsed_s=self.last_summary - stats.started, final=final,
            **extra, **counts)
