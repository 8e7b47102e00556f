"""The per-frame scene step of one camera's run: its Scene's findings as messages, and snapshots.

`event` messages for objects that appear, change or end, `line_crossed` for each crossing, and `counts`
when they changed (at most every `counts_interval_s`) and when the run ends. Snapshots of `new` and
`end` events go to the SnapshotWriter's thread; the event carries where the picture goes, never the
picture. Owned by the controller thread.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Mapping

import numpy as np

from . import messages
from .config import CameraSpec, Config
from .processing import Detections
from .scene.draw import Overlay, render_snapshot
from .scene.events import EventKind, ObjectEvent, Scene, SceneSettings, SceneUpdate, UpdateReason
from .snapshots import SnapshotEvent, SnapshotSettings, SnapshotWriter, open_writer, snapshot_name

Emit = Callable[[Dict[str, Any]], None]


class SceneReporter:
    def __init__(self, camera: str, settings: SceneSettings, names: Mapping[int, str], counts_interval_s: float,
                 snapshots: SnapshotWriter | None = None, snapshot_settings: SnapshotSettings | None = None
                 ) -> None:
        self.camera = camera
        self.scene = Scene(settings, names)
        self._counts_interval_s = counts_interval_s
        self._counts_changed = False
        self._counts_sent_at = time.monotonic()
        self._started = time.time()
        self._snapshot_settings = snapshot_settings or SnapshotSettings()
        self._snapshots = snapshots if self._snapshot_settings.events else None
        self._best_images: dict[int, np.ndarray] = {}  # per object: its picture at its best score, for `end`
        self._overlay: tuple[tuple[int, int], Overlay] | None = None
        self.events = 0
        self.crossings = 0

    @property
    def counting(self) -> bool:
        """Whether the scene has zones or lines to count."""
        return bool(self.scene.settings.zones or self.scene.settings.lines)

    def observe(self, result: object, frame: np.ndarray, emit: Emit) -> Mapping[int, int]:
        """One inferred frame's (filtered) detections; returns detection index -> track id for the
        detections that belong to a confirmed track. Classifications have no objects to follow."""
        if not isinstance(result, Detections):
            return {}
        update = self.scene.update(result.boxes, result.scores, result.class_ids, frame.shape[:2], time.time(),
                                   time.monotonic())
        self._report(update, frame, emit)
        if self._counts_changed and self._counts_interval_s and self.counting and \
                time.monotonic() - self._counts_sent_at >= self._counts_interval_s:
            self._send_counts(emit, final=False)
        return update.track_ids

    def finish(self, emit: Emit) -> None:
        """The run ends: `end` for every object still tracked, then the final counts."""
        self._report(self.scene.finish(time.time()), None, emit)
        if self.counting:
            self._send_counts(emit, final=True)

    def _report(self, update: SceneUpdate, frame: np.ndarray | None, emit: Emit) -> None:
        for event in update.events:
            emit(messages.event_message(self.camera, event, self._snapshot(event, frame)))
            self.events += 1
        for crossing in update.crossings:
            emit(messages.line_crossed_message(self.camera, crossing, self.scene.label(crossing.class_id),
                                               self.scene.line_counts(crossing.line)))
            self.crossings += 1
        self._counts_changed = self._counts_changed or update.counts_changed

    def _send_counts(self, emit: Emit, final: bool) -> None:
        emit(messages.counts_message(self.camera, self.scene.counts(), self._started, final))
        self._counts_sent_at = time.monotonic()
        self._counts_changed = False

    # ---- snapshots ----
    def _snapshot(self, event: ObjectEvent, frame: np.ndarray | None) -> str | None:
        """Where this event's picture goes (submitted to the writer), or None without one."""
        wanted = self._snapshot_settings.events
        if self._snapshots is None:
            return None
        keep_best = SnapshotEvent.END in wanted
        if frame is not None and (event.kind is EventKind.NEW or UpdateReason.BETTER_SCORE in event.reasons):
            image = self._render(frame, event)
            if keep_best:
                self._best_images[event.track_id] = image
            if event.kind is EventKind.NEW and SnapshotEvent.NEW in wanted:
                return self._submit(event, SnapshotEvent.NEW, image)
            return None
        if event.kind is EventKind.END:
            best = self._best_images.pop(event.track_id, None)
            if best is not None and keep_best:
                return self._submit(event, SnapshotEvent.END, best)
        return None

    def _submit(self, event: ObjectEvent, kind: SnapshotEvent, image: np.ndarray) -> str | None:
        assert self._snapshots is not None
        name = snapshot_name(self.camera, event.track_id, kind, datetime.now(timezone.utc))
        return self._snapshots.submit(name, image)

    def _render(self, frame: np.ndarray, event: ObjectEvent) -> np.ndarray:
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if self._overlay is None or self._overlay[0] != shape:  # zones and lines in this frame size's pixels
            settings = self.scene.settings
            self._overlay = shape, Overlay.of(settings.zones, settings.lines, shape)
        overlay = self._overlay[1]
        return render_snapshot(frame, event.box, f"{event.label} {event.track_id}", overlay.polygons, overlay.lines,
                               self._snapshot_settings.crop, class_id=event.class_id,
                               in_side_left=overlay.in_side_left)


# Configuration keys whose change gives every running camera a new scene (its objects end first).
SCENE_KEYS = ("publish_events", "tracking", "snapshots", "counts_interval_s")


class SceneFactory:
    """Makes each run's SceneReporter from the configuration and owns the snapshot writer they share
    (opened when the first reporter needs it, reopened when the snapshot settings change)."""

    def __init__(self) -> None:
        self._writer: SnapshotWriter | None = None
        self._writer_settings: SnapshotSettings | None = None

    def reporter(self, camera: CameraSpec, config: Config, names: Mapping[int, str]) -> SceneReporter | None:
        """The camera's reporter, or None when events are off."""
        if not config.publish_events:
            return None
        settings = SceneSettings(camera.zones or (), camera.lines or (), config.tracking)
        return SceneReporter(camera.name, settings, names, config.counts_interval_s,
                             self._writer_for(config.snapshots), config.snapshots)

    @staticmethod
    def check(camera: CameraSpec, names: Mapping[int, str]) -> None:
        """Raise ConfigError (naming the key) when the camera's filters, zones or lines name a class the
        model does not have: checked when a run starts, not on its first frame."""
        filters = [camera.filters, *(zone.filter for zone in camera.zones or ()),
                   *(line.filter for line in camera.lines or ())]
        for detection_filter in filters:
            if detection_filter is not None:
                detection_filter.class_ids(names)

    def _writer_for(self, settings: SnapshotSettings) -> SnapshotWriter | None:
        if settings != self._writer_settings:
            self.close()
            self._writer_settings = settings
            self._writer = open_writer(settings)
        return self._writer

    def counters(self) -> dict[str, int]:
        """The snapshot writer's counters, for summaries (none while snapshots are off)."""
        writer = self._writer
        if writer is None:
            return {}
        return {"snapshots_written": writer.written, "snapshots_dropped": writer.dropped,
                "snapshots_failed": writer.failed}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._writer_settings = None
