"""One camera's run, from a start to its end: its frame feeder and everything counted about its frames.

Made when the camera starts and dropped when its run ends, so nothing of one run leaks into the next
and the controller never holds a half-present feeder. Owned by the controller thread.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping

from . import messages
from .backends import ModelInfo
from .frame_step import InferredFrame, frame_message
from .metrics import STAGES, RollingFPS, RunStats, percentiles
from .pipeline import DropPolicy, FeedFrame, FrameFeeder
from .predictor import Predictor
from .scene_step import SceneReporter
from .sources import FrameSource, SourceEvent

Emit = Callable[[Dict[str, Any]], None]
SourceEventHandler = Callable[[FrameSource, SourceEvent], None]
# Weight of the newest frame interval in the running estimate of a camera's frame interval.
INTERVAL_SMOOTHING = 0.2


class Run:
    def __init__(self, camera: str, source: FrameSource, predictor: Predictor, on_source_event: SourceEventHandler,
                 paused: bool = False, on_ready: Callable[[], None] | None = None, max_fps: float = 0.0,
                 scene: SceneReporter | None = None) -> None:
        self.camera = camera
        self.scene = scene  # tracking, zones, lines and events (config publish_events)
        self._on_ready = on_ready
        self._max_fps = max_fps
        self.feeder = self._feeder(source, predictor, on_source_event, paused)
        now = time.monotonic()
        self.stats = RunStats()
        self.stats.reset(now)
        self.fps = RollingFPS()
        self.source_outages = 0
        self.frame_interval_s: float | None = None  # how often this camera's frames become ready
        self._last_ready: float | None = None
        self._batch: list[dict[str, Any]] = []

    def _feeder(self, source: FrameSource, predictor: Predictor, on_source_event: SourceEventHandler,
                paused: bool) -> FrameFeeder:
        feeder = FrameFeeder(source, predictor.prepare, on_source_event=lambda event: on_source_event(source, event),
                             on_ready=self._on_ready, max_fps=self._max_fps)
        if paused:
            feeder.pause()
        return feeder.start()

    @property
    def source(self) -> FrameSource:
        return self.feeder.source

    @property
    def live(self) -> bool:
        return self.feeder.policy is DropPolicy.LATEST

    def pause(self, emit: Emit) -> None:
        self.feeder.pause()
        self.flush(emit)

    def resume(self) -> None:
        self.fps.reset()  # the pause is not a slow frame
        self._last_ready = None
        self.feeder.resume()

    def replace_source(self, source: FrameSource, predictor: Predictor, on_source_event: SourceEventHandler,
                       paused: bool) -> None:
        """A new feeder on `source` (configuration change); the statistics carry on."""
        self.feeder.stop()  # a no-op when the caller stopped it already
        self.feeder = self._feeder(source, predictor, on_source_event, paused)
        self._last_ready = None

    def close(self, emit: Emit) -> None:
        """Stop the feeder (closing the source), publish the frames still batched, end the scene's objects."""
        self.feeder.stop()
        self.flush(emit)
        self.end_scene(emit)

    def end_scene(self, emit: Emit) -> None:
        """The scene's objects end (their `end` events and the final counts); no scene from now on."""
        if self.scene is not None:
            self.scene.finish(emit)
        self.scene = None

    def observe(self, inferred: InferredFrame, emit: Emit) -> Mapping[int, int]:
        """The frame's detections through the scene (tracking, zones, lines, events), when events are on;
        detection index -> track id of those that belong to a confirmed track."""
        if self.scene is None:
            return {}
        return self.scene.observe(inferred.prediction.result, inferred.frame.prepared.frame, emit)

    def note_ready(self, frame: FeedFrame) -> None:
        """Track how often frames become ready (the batch gathering waits at most one such interval)."""
        if self._last_ready is not None and frame.ready_at > self._last_ready:
            interval = frame.ready_at - self._last_ready
            previous = self.frame_interval_s
            self.frame_interval_s = interval if previous is None else \
                previous + INTERVAL_SMOOTHING * (interval - previous)
        self._last_ready = frame.ready_at

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
                emit: Emit, track_ids: Mapping[int, int] | None = None) -> None:
        """The frame's message, alone or batched (`frames_per_message`)."""
        message = frame_message(inferred, seq=seq, info=inferred.info, source=self.source.description,
                                live=self.live, include_detections=include_detections, camera=self.camera,
                                track_ids=track_ids)
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

    def figures(self, now: float) -> dict[str, Any]:
        """This run in numbers so far: a summary's per-camera block."""
        stats = self.stats
        values: dict[str, Any] = {
            "source": self.source.description, "frames": stats.frames, "frames_published": stats.published,
            "frames_not_published": stats.dropped, "fps": round(stats.fps(), 2),
            "elapsed_s": round(now - stats.started, 2), "latency_ms": stats.latency_summary(),
            "frames_read": self.feeder.frames_read, "frames_dropped_stale": self.feeder.frames_dropped}
        if self.live:
            values.update(source_outages=self.source_outages, source_connected=self.source.connected)
        if self.scene is not None:
            values.update(objects_tracked=self.scene.scene.objects, events=self.scene.events,
                          line_crossings=self.scene.crossings)
        return values


def summary_message(runs: Mapping[str, Run], state: str, info: ModelInfo | None, final: bool,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """One summary over `runs` (by camera): the totals at the top, each camera's own figures under
    `cameras`. With one camera the totals are that camera's figures; `extra` holds the component's own
    counters."""
    now = time.monotonic()
    per_camera = {name: run.figures(now) for name, run in runs.items()}
    totals: dict[str, Any] = {
        "frames_read": sum(f["frames_read"] for f in per_camera.values()),
        "frames_dropped_stale": sum(f["frames_dropped_stale"] for f in per_camera.values())}
    live = [f for f in per_camera.values() if "source_outages" in f]
    if live:
        totals.update(source_outages=sum(f["source_outages"] for f in live),
                      source_connected=all(f["source_connected"] for f in live))
    latency = {stage: percentiles([v for run in runs.values() for v in run.stats.latencies[stage]])
               for stage in STAGES} if runs else {}
    fps = sum(run.stats.fps() for run in runs.values())
    return messages.summary_message(
        state=state, info=info, source=", ".join(f["source"] for f in per_camera.values()),
        frames=sum(f["frames"] for f in per_camera.values()),
        published=sum(f["frames_published"] for f in per_camera.values()),
        not_published=sum(f["frames_not_published"] for f in per_camera.values()), fps=fps, latency=latency,
        elapsed_s=max((f["elapsed_s"] for f in per_camera.values()), default=0.0), final=final,
        cameras=per_camera, **extra, **totals)
