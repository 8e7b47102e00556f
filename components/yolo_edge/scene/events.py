"""One camera's scene over a run: detections -> tracks -> zones and lines -> per-object events.

No I/O: `Scene.update` takes one frame's (already filtered) detections and says what happened - objects
that appeared, changed in a way worth telling (entered or left a zone, loitered, a clearly better score)
or ended, and lines crossed. The caller turns that into messages and snapshots. Owned by one thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np

from .lines import Crossing, LineCounter, LineSpec
from .tracking import Tracker, TrackerSettings, TrackState
from .zones import ZoneMembership, ZoneSpec, ZoneTracker, ZoneUpdate

# An `update` for a better score only when the top score rose by at least this much since the last event.
BETTER_SCORE_STEP = 0.1


class EventKind(Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class UpdateReason(Enum):
    """Why an `update` event was sent (a `new` or `end` event has none)."""

    ZONE_ENTERED = "zone_entered"
    ZONE_LEFT = "zone_left"
    LOITERING = "loitering"
    BETTER_SCORE = "better_score"


@dataclass(frozen=True)
class SceneSettings:
    """What one camera's scene watches."""

    zones: tuple[ZoneSpec, ...] = ()
    lines: tuple[LineSpec, ...] = ()
    tracking: TrackerSettings = TrackerSettings()


@dataclass(frozen=True)
class ObjectEvent:
    kind: EventKind
    track_id: int
    class_id: int
    label: str
    score: float  # the latest detection's
    top_score: float  # the best so far
    box: tuple[float, float, float, float]  # the latest detection's, xyxy frame pixels
    zones: tuple[str, ...]  # zones it is in now
    entered_zones: tuple[str, ...]  # every zone it has entered since it appeared, in order
    loitering_zones: tuple[str, ...]  # zones where it has loitered (stayed loitering_s or longer)
    start_time: float  # wall-clock seconds when it appeared
    end_time: float | None  # when it was last seen, for `end`
    reasons: tuple[UpdateReason, ...] = ()
    zones_entered_now: tuple[str, ...] = ()
    zones_left_now: tuple[str, ...] = ()


@dataclass(frozen=True)
class SceneUpdate:
    events: tuple[ObjectEvent, ...] = ()
    crossings: tuple[Crossing, ...] = ()
    counts_changed: bool = False
    track_ids: Mapping[int, int] = field(default_factory=dict)  # detection index -> its confirmed track's id


@dataclass
class _ObjectRecord:
    """What the scene remembers of a tracked object between frames."""

    track_id: int
    class_id: int
    label: str
    score: float
    top_score: float
    reported_top_score: float  # top_score when the last event was sent
    box: tuple[float, float, float, float]
    start_time: float
    last_seen: float
    zones: tuple[str, ...] = ()
    entered: list[str] = field(default_factory=list)
    loitering: list[str] = field(default_factory=list)

    def event(self, kind: EventKind, end_time: float | None = None, reasons: tuple[UpdateReason, ...] = (),
              membership: ZoneMembership | None = None) -> ObjectEvent:
        self.reported_top_score = self.top_score
        return ObjectEvent(kind, self.track_id, self.class_id, self.label, self.score, self.top_score, self.box,
                           self.zones, tuple(self.entered), tuple(self.loitering), self.start_time, end_time,
                           reasons, membership.entered if membership else (), membership.left if membership else ())


class Scene:
    """Tracker, zones and lines of one camera during one run."""

    def __init__(self, settings: SceneSettings, names: Mapping[int, str]) -> None:
        self.settings = settings
        self._names = dict(names)
        self._tracker = Tracker(settings.tracking)
        self._frame_shape: tuple[int, int] | None = None
        self._zones: ZoneTracker | None = None
        self._lines: LineCounter | None = None
        self._objects: dict[int, _ObjectRecord] = {}
        self._last_zones = ZoneUpdate({}, {}, {})

    @property
    def frame_shape(self) -> tuple[int, int] | None:
        return self._frame_shape

    @property
    def objects(self) -> int:
        """Objects tracked now."""
        return len(self._objects)

    def _watch(self, frame_shape: tuple[int, int]) -> None:
        """Zones and lines in this frame size's pixels (made again, without their state, if it changes)."""
        if frame_shape == self._frame_shape:
            return
        self._frame_shape = frame_shape
        self._zones = ZoneTracker(self.settings.zones, frame_shape, self._names) if self.settings.zones else None
        self._lines = LineCounter(self.settings.lines, frame_shape, self._names) if self.settings.lines else None

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, frame_shape: tuple[int, int],
               wall_time: float, now: float) -> SceneUpdate:
        """One frame: `boxes` (N, 4) xyxy frame pixels, `scores` (N,), `class_ids` (N,); `wall_time` is
        time.time() (for the events), `now` time.monotonic() (for loitering)."""
        self._watch(frame_shape)
        tracked = self._tracker.update(boxes, scores, class_ids)
        zones = self._zones.update(tracked.tracked, now) if self._zones is not None else None
        crossings = self._lines.update(tracked.tracked) if self._lines is not None else ()
        events: list[ObjectEvent] = []
        counts_changed = bool(crossings)
        for track in tracked.tracked:
            membership = zones.members.get(track.track_id) if zones is not None else None
            events.extend(self._observe(track, membership, wall_time))
            if membership is not None and (membership.entered or membership.left):
                counts_changed = True
        if zones is not None:
            self._last_zones = zones
        ended = self._end(tracked.ended, wall_time)
        counts_changed = counts_changed or any(event.zones for event in ended)
        events.extend(ended)
        return SceneUpdate(tuple(events), tuple(crossings), counts_changed,
                           {track.detection_index: track.track_id for track in tracked.tracked})

    def finish(self, wall_time: float) -> SceneUpdate:
        """The run ends: an `end` event for every object still tracked."""
        ended = self._end(self._tracker.end_all(), wall_time)
        return SceneUpdate(ended, (), any(event.zones for event in ended))

    def _observe(self, track: TrackState, membership: ZoneMembership | None, wall_time: float) -> list[ObjectEvent]:
        record = self._objects.get(track.track_id)
        if record is None:
            record = _ObjectRecord(track.track_id, track.class_id, self.label(track.class_id), track.score,
                                   track.score, track.score, track.box, wall_time, wall_time)
            self._objects[track.track_id] = record
            _apply_membership(record, membership)
            return [record.event(EventKind.NEW, membership=membership)]
        record.score, record.box, record.last_seen = track.score, track.box, wall_time
        record.top_score = max(record.top_score, track.score)
        reasons = _apply_membership(record, membership)
        if record.top_score >= record.reported_top_score + BETTER_SCORE_STEP:
            reasons.append(UpdateReason.BETTER_SCORE)
        return [record.event(EventKind.UPDATE, reasons=tuple(reasons), membership=membership)] if reasons else []

    def _end(self, track_ids: Sequence[int], wall_time: float) -> tuple[ObjectEvent, ...]:
        if self._zones is not None:
            self._zones.forget(track_ids)
        if self._lines is not None:
            self._lines.forget(track_ids)
        events = []
        for track_id in track_ids:
            record = self._objects.pop(track_id, None)
            if record is not None:
                events.append(record.event(EventKind.END, end_time=record.last_seen))
        return tuple(events)

    def label(self, class_id: int) -> str:
        return self._names.get(int(class_id), str(int(class_id)))

    def line_counts(self, line: str) -> dict[str, dict[str, int]]:
        """One line's in/out per label so far."""
        if self._lines is None:
            return {}
        return {label: dict(directions) for label, directions in self._lines.counts.get(line, {}).items()}

    def counts(self) -> dict[str, Any]:
        """Per zone (objects in it now and entries so far, per label) and per line (in/out per label)."""
        zones = {name: {"occupancy": dict(self._last_zones.occupancy.get(name, {})),
                        "entries": dict(self._last_zones.entries.get(name, {}))}
                 for name in (zone.name for zone in self.settings.zones)}
        lines = {line.name: self.line_counts(line.name) for line in self.settings.lines}
        return {"zones": zones, "lines": lines}


def _apply_membership(record: _ObjectRecord, membership: ZoneMembership | None) -> list[UpdateReason]:
    """Take the object's zones from this frame's membership; the reasons for an update it gives."""
    if membership is None:
        return []
    record.zones = membership.zones
    reasons = []
    for name in membership.entered:
        if name not in record.entered:
            record.entered.append(name)
    for name in membership.loitering:
        if name not in record.loitering:
            record.loitering.append(name)
    if membership.entered:
        reasons.append(UpdateReason.ZONE_ENTERED)
    if membership.left:
        reasons.append(UpdateReason.ZONE_LEFT)
    if membership.loitering:
        reasons.append(UpdateReason.LOITERING)
    return reasons
