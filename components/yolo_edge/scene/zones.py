"""Named polygon zones per camera: who is in which zone (with inertia), entries, occupancy and loitering."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from yolo_edge.config_values import ConfigError
from yolo_edge.scene.filters import FILTER_KEYS, DetectionFilter, ResolvedFilter
from yolo_edge.scene.geometry import (
    TrackedObject,
    anchor_points,
    boxes_of,
    label_of,
    points_in_polygon,
    polygon_area,
    resolve_points,
)
from yolo_edge.scene.parsing import Point, as_number, as_whole_number, parse_named, parse_points, reject_unknown_keys

__all__ = [
    "MAX_INERTIA", "MAX_LOITERING_S", "ZONE_KEYS", "TrackedObject", "ZoneMembership", "ZoneSpec", "ZoneTracker",
    "ZoneUpdate", "anchor_points", "parse_zones", "points_in_polygon", "resolve_points",
]

ZONE_KEYS = ("points", "inertia", "loitering_s") + FILTER_KEYS
MAX_ZONE_POINTS = 256
MAX_INERTIA = 1000
MAX_LOITERING_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class ZoneSpec:
    """One zone of a camera's `zones`."""

    name: str
    points: tuple[tuple[float, float], ...]  # >= 3 points; pixels, or all coordinates in 0..1 = fractions of the frame
    inertia: int = 3  # consecutive frames inside before the object counts as entered (and outside before it has left)
    loitering_s: float = 0.0  # seconds inside after which a `loitering` is reported once per stay; 0 = off
    filter: DetectionFilter = DetectionFilter()  # per-zone classes / min_score / area (key path of the zone)

    @classmethod
    def from_mapping(cls, key: str, name: str, value: object) -> ZoneSpec:
        """Zone `name` of the zones at config path `key`: `{points: [[x, y], ...], inertia, loitering_s, classes,
        min_score, min_area, max_area}`, or just the list of points."""
        zone_key = f"{key}.{name}"
        if not isinstance(value, Mapping):
            return cls(name, _as_polygon(zone_key, value), filter=DetectionFilter(zone_key))
        reject_unknown_keys(zone_key, value, ZONE_KEYS)
        if "points" not in value:
            raise ConfigError(f"{zone_key}.points", None, "a list of at least 3 [x, y] points")
        return cls(name, _as_polygon(f"{zone_key}.points", value["points"]),
                   as_whole_number(f"{zone_key}.inertia", value.get("inertia", 3), 1, MAX_INERTIA),
                   as_number(f"{zone_key}.loitering_s", value.get("loitering_s", 0.0), 0.0, MAX_LOITERING_S),
                   DetectionFilter.from_mapping(zone_key, {k: v for k, v in value.items() if k in FILTER_KEYS}))


def _as_polygon(key: str, value: Any) -> tuple[Point, ...]:
    points = parse_points(key, value, 3, MAX_ZONE_POINTS)
    if polygon_area(points) <= 0.0:
        raise ConfigError(key, value, "at least 3 [x, y] points that enclose an area (not all on one line)")
    return points


def parse_zones(key: str, value: object) -> tuple[ZoneSpec, ...]:
    """A camera's `zones` at config path `key`: `{name: spec, ...}` in config order (None or {} = none)."""
    return parse_named(key, value, ZoneSpec.from_mapping, '{"press": [[0.1, 0.5], [0.5, 0.5], [0.5, 1], [0.1, 1]]}')


@dataclass(frozen=True)
class ZoneMembership:
    """One object's zones in one frame."""

    zones: tuple[str, ...]  # zones the object is in now (after inertia), config order
    entered: tuple[str, ...]  # entered this frame
    left: tuple[str, ...]  # left this frame
    loitering: tuple[str, ...]  # reached loitering_s this frame


@dataclass(frozen=True)
class ZoneUpdate:
    """The zones after one frame."""

    members: Mapping[int, ZoneMembership]  # per track id in this frame's objects
    occupancy: Mapping[str, Mapping[str, int]]  # zone -> label -> objects in it now
    entries: Mapping[str, Mapping[str, int]]  # zone -> label -> entries since the tracker was made (cumulative)


class Transition(Enum):
    NONE = "none"
    ENTERED = "entered"
    LEFT = "left"


class _Stay:
    """One track's state in one zone: confirmed in or out, and the run of frames that disagree with it."""

    __slots__ = ("inside", "streak", "streak_start", "since", "loiter_reported")

    def __init__(self) -> None:
        self.inside = False
        self.streak = 0  # consecutive frames seen on the other side of the confirmed state
        self.streak_start = 0.0
        self.since = 0.0  # when the current stay began: the first frame of the run that confirmed it
        self.loiter_reported = False

    def step(self, seen_inside: bool, now: float, inertia: int) -> Transition:
        if seen_inside == self.inside:
            self.streak = 0
            return Transition.NONE
        if self.streak == 0:
            self.streak_start = now
        self.streak += 1
        if self.streak < inertia:
            return Transition.NONE
        self.inside, self.streak = seen_inside, 0
        if not seen_inside:
            return Transition.LEFT
        self.since, self.loiter_reported = self.streak_start, False
        return Transition.ENTERED

    def reaches_loitering(self, now: float, loitering_s: float) -> bool:
        if not self.inside or loitering_s <= 0.0 or self.loiter_reported or now - self.since < loitering_s:
            return False
        self.loiter_reported = True
        return True


class _TrackZones:
    __slots__ = ("class_id", "stays")

    def __init__(self, zone_count: int) -> None:
        self.class_id = -1
        self.stays = [_Stay() for _ in range(zone_count)]


class ZoneTracker:
    """Which tracked objects are in which zones of one camera, frame by frame. Not thread-safe: one per camera."""

    def __init__(self, zones: Sequence[ZoneSpec], frame_shape: tuple[int, int], names: Mapping[int, str]) -> None:
        """`frame_shape` is (height, width) in pixels; resolves points and class filters (ConfigError for
        classes the model does not have)."""
        self._zones = tuple(zones)
        self._names = dict(names)
        self._polygons = [resolve_points(zone.points, frame_shape) for zone in self._zones]
        self._filters: list[ResolvedFilter] = [zone.filter.resolve(frame_shape, names) for zone in self._zones]
        self._tracks: dict[int, _TrackZones] = {}
        self._entries: dict[str, dict[str, int]] = {zone.name: {} for zone in self._zones}

    @property
    def zones(self) -> tuple[ZoneSpec, ...]:
        return self._zones

    def update(self, objects: Sequence[TrackedObject], now: float) -> ZoneUpdate:
        """Advance by one frame of tracked objects seen at `now` (monotonic seconds). Tracks absent from
        `objects` keep their state (and count in occupancy) until `forget`."""
        seen_inside = self._seen_inside(objects)
        members = {obj.track_id: self._step(obj, seen_inside[:, index], now) for index, obj in enumerate(objects)}
        return ZoneUpdate(members, self._occupancy(), {zone: dict(labels) for zone, labels in self._entries.items()})

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop ended tracks: they leave their zones without an event."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def _seen_inside(self, objects: Sequence[TrackedObject]) -> np.ndarray:
        """(zones, N) bool: each object's anchor inside each zone this frame, among those its filter keeps."""
        seen = np.zeros((len(self._zones), len(objects)), dtype=bool)
        if not objects or not self._zones:
            return seen
        boxes = boxes_of(objects)
        anchors = anchor_points(boxes)
        scores = np.array([obj.score for obj in objects], dtype=np.float64)
        class_ids = np.array([obj.class_id for obj in objects], dtype=np.int64)
        for row, (polygon, zone_filter) in enumerate(zip(self._polygons, self._filters)):
            seen[row] = zone_filter.keep(boxes, scores, class_ids) & points_in_polygon(anchors, polygon)
        return seen

    def _step(self, obj: TrackedObject, seen_inside: np.ndarray, now: float) -> ZoneMembership:
        track = self._tracks.get(obj.track_id)
        if track is None:
            track = self._tracks[obj.track_id] = _TrackZones(len(self._zones))
        track.class_id = obj.class_id
        label = label_of(obj.class_id, self._names)
        inside: list[str] = []
        entered: list[str] = []
        left: list[str] = []
        loitering: list[str] = []
        for zone, stay, seen in zip(self._zones, track.stays, seen_inside.tolist()):
            transition = stay.step(seen, now, zone.inertia)
            if transition is Transition.ENTERED:
                entered.append(zone.name)
                counts = self._entries[zone.name]
                counts[label] = counts.get(label, 0) + 1
            elif transition is Transition.LEFT:
                left.append(zone.name)
            if stay.reaches_loitering(now, zone.loitering_s):
                loitering.append(zone.name)
            if stay.inside:
                inside.append(zone.name)
        return ZoneMembership(tuple(inside), tuple(entered), tuple(left), tuple(loitering))

    def _occupancy(self) -> dict[str, dict[str, int]]:
        occupancy: dict[str, dict[str, int]] = {zone.name: {} for zone in self._zones}
        for track in self._tracks.values():
            label: str | None = None
            for zone, stay in zip(self._zones, track.stays):
                if stay.inside:
                    label = label or label_of(track.class_id, self._names)
                    counts = occupancy[zone.name]
                    counts[label] = counts.get(label, 0) + 1
        return occupancy
