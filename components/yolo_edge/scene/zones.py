"""Named polygon zones per camera: who is in which zone (with inertia), entries, occupancy and loitering."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from yolo_edge.config_values import ConfigError, reject_unknown_keys
from yolo_edge.scene.filters import FILTER_KEYS, DetectionFilter
from yolo_edge.scene.geometry import (
    PolygonSet,
    TrackedObject,
    anchor_points,
    boxes_of,
    label_of,
    points_in_polygon,
    polygon_area,
    resolve_points,
)
from yolo_edge.scene.parsing import Point, as_number, as_whole_number, parse_named, parse_points

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
                   DetectionFilter.among(zone_key, value))


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


@dataclass(frozen=True)
class _Steps:
    """(N, zones) bool matrices of one frame's changes, row per object."""

    entered: np.ndarray
    left: np.ndarray
    loitering: np.ndarray


class _StayTable:
    """Every track's state in every zone, one row per track, so that a frame updates all of them at once."""

    def __init__(self, zone_count: int) -> None:
        shape = (0, zone_count)
        self.inside = np.zeros(shape, dtype=bool)  # confirmed in the zone (after inertia)
        self.streak = np.zeros(shape, dtype=np.int64)  # consecutive frames seen the other way
        self.streak_start = np.zeros(shape, dtype=np.float64)  # the first of those frames
        self.since = np.zeros(shape, dtype=np.float64)  # when the stay began: the first frame of its run
        self.loiter_reported = np.zeros(shape, dtype=bool)
        self.class_ids = np.zeros(0, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._free_rows: list[int] = []
        self._grow(16)

    def _grow(self, capacity: int) -> None:
        size = len(self.inside)
        self.inside, self.streak = _padded(self.inside, capacity), _padded(self.streak, capacity)
        self.streak_start, self.since = _padded(self.streak_start, capacity), _padded(self.since, capacity)
        self.loiter_reported = _padded(self.loiter_reported, capacity)
        self.class_ids = _padded(self.class_ids, capacity)
        self._free_rows.extend(range(capacity - 1, size - 1, -1))  # lowest rows are taken first

    def rows_for(self, track_ids: Sequence[int]) -> np.ndarray:
        rows = np.empty(len(track_ids), dtype=np.int64)
        for index, track_id in enumerate(track_ids):
            row = self._row_of.get(track_id)
            if row is None:
                if not self._free_rows:
                    self._grow(2 * len(self.inside))
                row = self._row_of[track_id] = self._free_rows.pop()
            rows[index] = row
        return rows

    def release(self, track_id: int) -> None:
        row = self._row_of.pop(track_id, None)
        if row is not None:
            self.inside[row] = False
            self.streak[row] = 0
            self.loiter_reported[row] = False
            self._free_rows.append(row)

    def step(self, rows: np.ndarray, seen: np.ndarray, now: float, inertia: np.ndarray,
             loitering_s: np.ndarray) -> _Steps:
        """Advance the rows' states by one frame in which each was `seen` (N, zones) inside or not."""
        inside, streak = self.inside[rows], self.streak[rows]
        differs = seen != inside
        streak_start = np.where(differs & (streak == 0), now, self.streak_start[rows])
        streak = np.where(differs, streak + 1, 0)
        flips = streak >= inertia
        inside ^= flips
        streak[flips] = 0
        entered, left = flips & inside, flips & ~inside
        since = np.where(entered, streak_start, self.since[rows])
        reported = self.loiter_reported[rows] & ~entered
        loitering = inside & ~reported & (loitering_s > 0.0) & (now - since >= loitering_s)
        reported |= loitering
        self.inside[rows], self.streak[rows], self.streak_start[rows] = inside, streak, streak_start
        self.since[rows], self.loiter_reported[rows] = since, reported
        return _Steps(entered, left, loitering)


def _padded(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.zeros((rows,) + array.shape[1:], dtype=array.dtype)
    grown[:len(array)] = array
    return grown


_OUTSIDE_EVERY_ZONE = ZoneMembership((), (), (), ())


class ZoneTracker:
    """Which tracked objects are in which zones of one camera, frame by frame. Not thread-safe: one per camera."""

    def __init__(self, zones: Sequence[ZoneSpec], frame_shape: tuple[int, int], names: Mapping[int, str]) -> None:
        """`frame_shape` is (height, width) in pixels; resolves points and class filters (ConfigError for
        classes the model does not have)."""
        self._zones = tuple(zones)
        self._zone_names = tuple(zone.name for zone in self._zones)
        self._names = dict(names)
        self._polygons = PolygonSet([resolve_points(zone.points, frame_shape) for zone in self._zones])
        self._filters = [zone.filter.resolve(frame_shape, names) for zone in self._zones]
        self._inertia = np.array([zone.inertia for zone in self._zones], dtype=np.int64)
        self._loitering_s = np.array([zone.loitering_s for zone in self._zones], dtype=np.float64)
        self._stays = _StayTable(len(self._zones))
        self._entries: dict[str, dict[str, int]] = {name: {} for name in self._zone_names}

    @property
    def zones(self) -> tuple[ZoneSpec, ...]:
        return self._zones

    def update(self, objects: Sequence[TrackedObject], now: float) -> ZoneUpdate:
        """Advance by one frame of tracked objects seen at `now` (monotonic seconds). Tracks absent from
        `objects` keep their state (and count in occupancy) until `forget`."""
        members: dict[int, ZoneMembership] = {}
        if objects and self._zones:
            track_ids = [obj.track_id for obj in objects]
            class_ids = np.array([obj.class_id for obj in objects], dtype=np.int64)
            rows = self._stays.rows_for(track_ids)
            self._stays.class_ids[rows] = class_ids
            steps = self._stays.step(rows, self._seen_inside(objects, class_ids), float(now), self._inertia,
                                     self._loitering_s)
            self._count_entries(class_ids, steps.entered)
            members = self._memberships(track_ids, self._stays.inside[rows], steps)
        elif objects:
            members = {obj.track_id: _OUTSIDE_EVERY_ZONE for obj in objects}
        return ZoneUpdate(members, self._occupancy(), {zone: dict(labels) for zone, labels in self._entries.items()})

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop ended tracks: they leave their zones without an event."""
        for track_id in track_ids:
            self._stays.release(track_id)

    def _seen_inside(self, objects: Sequence[TrackedObject], class_ids: np.ndarray) -> np.ndarray:
        """(N, zones) bool: each object's anchor inside each zone this frame, where the zone's filter keeps it."""
        boxes = boxes_of(objects)
        seen = self._polygons.contains(anchor_points(boxes))
        if all(zone_filter.keeps_all for zone_filter in self._filters):
            return seen
        scores = np.array([obj.score for obj in objects], dtype=np.float64)
        for column, zone_filter in enumerate(self._filters):
            if not zone_filter.keeps_all:
                seen[:, column] &= zone_filter.keep(boxes, scores, class_ids)
        return seen

    def _count_entries(self, class_ids: np.ndarray, entered: np.ndarray) -> None:
        for row, column in zip(*np.nonzero(entered)):
            counts = self._entries[self._zone_names[column]]
            label = label_of(int(class_ids[row]), self._names)
            counts[label] = counts.get(label, 0) + 1

    def _memberships(self, track_ids: Sequence[int], inside: np.ndarray, steps: _Steps) -> dict[int, ZoneMembership]:
        inside_rows = inside.tolist()
        changed = (steps.entered | steps.left | steps.loitering).any(axis=1).tolist()
        members = {}
        for row, track_id in enumerate(track_ids):
            zones = self._names_where(inside_rows[row])
            if changed[row]:
                members[track_id] = ZoneMembership(zones, self._names_where(steps.entered[row].tolist()),
                                                   self._names_where(steps.left[row].tolist()),
                                                   self._names_where(steps.loitering[row].tolist()))
            else:
                members[track_id] = ZoneMembership(zones, (), (), ()) if zones else _OUTSIDE_EVERY_ZONE
        return members

    def _names_where(self, flags: list[bool]) -> tuple[str, ...]:
        return tuple(compress(self._zone_names, flags))

    def _occupancy(self) -> dict[str, dict[str, int]]:
        occupancy: dict[str, dict[str, int]] = {name: {} for name in self._zone_names}
        rows, columns = np.nonzero(self._stays.inside)
        for class_id, column in zip(self._stays.class_ids[rows].tolist(), columns.tolist()):
            counts = occupancy[self._zone_names[column]]
            label = label_of(class_id, self._names)
            counts[label] = counts.get(label, 0) + 1
        return occupancy
