"""Named counting lines per camera: in/out crossings per class, counted only when a track is firmly seen on
both sides, so jitter on the line never counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from yolo_edge.config_values import ConfigError, reject_unknown_keys
from yolo_edge.scene.filters import FILTER_KEYS, DetectionFilter, ResolvedFilter
from yolo_edge.scene.geometry import TrackedObject, anchor_points, boxes_of, label_of, resolve_points, signed_offsets
from yolo_edge.scene.parsing import as_number, parse_named, parse_points

LINE_KEYS = ("points", "in", "min_distance") + FILTER_KEYS
DEFAULT_MIN_DISTANCE = 0.01  # of the frame diagonal
MAX_MIN_DISTANCE_PX = 1e5


class Side(Enum):
    """A side of the line A->B as the image is displayed (x right, y down), looking from A towards B."""

    LEFT = "left"
    RIGHT = "right"


class Direction(Enum):
    IN = "in"
    OUT = "out"


@dataclass(frozen=True)
class LineSpec:
    """One line of a camera's `lines`."""

    name: str
    points: tuple[tuple[float, float], tuple[float, float]]  # A, B: pixels or 0..1 fractions
    in_side: Side = Side.LEFT  # crossing into this side counts `in`, out of it `out`
    # hysteresis: an anchor nearer the line than this (pixels; <= 1.0 = fraction of the frame diagonal;
    # 0 = the default of 1% of the diagonal) does not change the object's side
    min_distance: float = 0.0
    filter: DetectionFilter = DetectionFilter()

    @classmethod
    def from_mapping(cls, key: str, name: str, value: object) -> LineSpec:
        """Line `name` of the lines at config path `key`: `{points: [[x, y], [x, y]], in: "left" | "right",
        min_distance, classes, min_score, min_area, max_area}`, or just the two points."""
        line_key = f"{key}.{name}"
        if not isinstance(value, Mapping):
            return cls(name, _as_segment(line_key, value), filter=DetectionFilter(line_key))
        reject_unknown_keys(line_key, value, LINE_KEYS)
        if "points" not in value:
            raise ConfigError(f"{line_key}.points", None, "two [x, y] points")
        return cls(name, _as_segment(f"{line_key}.points", value["points"]),
                   _as_side(f"{line_key}.in", value.get("in", Side.LEFT.value)),
                   as_number(f"{line_key}.min_distance", value.get("min_distance", 0.0), 0.0, MAX_MIN_DISTANCE_PX),
                   DetectionFilter.among(line_key, value))


def _as_segment(key: str, value: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    start, end = parse_points(key, value, 2, 2)
    if start == end:
        raise ConfigError(key, value, "two different [x, y] points")
    return start, end


def _as_side(key: str, value: Any) -> Side:
    text = value.value if isinstance(value, Side) else str(value).strip().lower()
    for side in Side:
        if side.value == text:
            return side
    raise ConfigError(key, value, "left | right (the side of A->B, as the image is displayed, that is 'in')")


def parse_lines(key: str, value: object) -> tuple[LineSpec, ...]:
    """A camera's `lines` at config path `key`: `{name: spec, ...}` in config order (None or {} = none)."""
    example = '{"conveyor": {"points": [[0.5, 0], [0.5, 1]], "in": "left"}}'
    return parse_named(key, value, LineSpec.from_mapping, example)


@dataclass(frozen=True)
class Crossing:
    """A track crossed a line."""

    line: str
    track_id: int
    class_id: int
    direction: Direction


@dataclass(frozen=True)
class _ResolvedLine:
    spec: LineSpec
    start: np.ndarray  # (2,) pixels
    end: np.ndarray
    min_distance_px: float
    filter: ResolvedFilter

    def firm_sides(self, anchors: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                   class_ids: np.ndarray) -> list[Side | None]:
        """Each anchor's side where it is firm (far enough from the line, alongside the segment, kept by the
        filter), else None."""
        distance, along = signed_offsets(anchors, self.start, self.end)
        firm = ((np.abs(distance) >= self.min_distance_px) & (along >= 0.0) & (along <= 1.0)
                & self.filter.keep(boxes, scores, class_ids))
        return [(Side.LEFT if d < 0.0 else Side.RIGHT) if f else None
                for d, f in zip(distance.tolist(), firm.tolist())]


def _min_distance_px(min_distance: float, diagonal: float) -> float:
    if min_distance == 0.0:
        return DEFAULT_MIN_DISTANCE * diagonal
    return min_distance * diagonal if min_distance <= 1.0 else min_distance


class LineCounter:
    """In/out counts per line and class for one camera's tracks. Not thread-safe: one per camera."""

    def __init__(self, lines: Sequence[LineSpec], frame_shape: tuple[int, int], names: Mapping[int, str]) -> None:
        """`frame_shape` is (height, width) in pixels; resolves points and class filters (ConfigError for
        classes the model does not have)."""
        diagonal = math.hypot(float(frame_shape[0]), float(frame_shape[1]))
        self._lines = []
        for spec in lines:
            start, end = resolve_points(spec.points, frame_shape)
            self._lines.append(_ResolvedLine(spec, start, end, _min_distance_px(spec.min_distance, diagonal),
                                             spec.filter.resolve(frame_shape, names)))
        self._names = dict(names)
        self._sides: dict[int, list[Side | None]] = {}  # per track: the last firm side on each line
        self._counts: dict[str, dict[str, dict[str, int]]] = {spec.name: {} for spec in lines}

    def update(self, objects: Sequence[TrackedObject]) -> tuple[Crossing, ...]:
        """Advance by one frame of tracked objects; the crossings it completed, in line then object order."""
        if not objects or not self._lines:
            return ()
        boxes = boxes_of(objects)
        anchors = anchor_points(boxes)
        scores = np.array([obj.score for obj in objects], dtype=np.float64)
        class_ids = np.array([obj.class_id for obj in objects], dtype=np.int64)
        crossings: list[Crossing] = []
        for index, line in enumerate(self._lines):
            for obj, side in zip(objects, line.firm_sides(anchors, boxes, scores, class_ids)):
                if side is not None:
                    crossing = self._observe(obj, index, line.spec, side)
                    if crossing is not None:
                        crossings.append(crossing)
        return tuple(crossings)

    @property
    def counts(self) -> Mapping[str, Mapping[str, Mapping[str, int]]]:
        """line -> label -> {"in": n, "out": n}, since the counter was made."""
        return {line: {label: dict(counts) for label, counts in labels.items()}
                for line, labels in self._counts.items()}

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop ended tracks' remembered sides."""
        for track_id in track_ids:
            self._sides.pop(track_id, None)

    def _observe(self, obj: TrackedObject, index: int, spec: LineSpec, side: Side) -> Crossing | None:
        sides = self._sides.get(obj.track_id)
        if sides is None:
            sides = self._sides[obj.track_id] = [None] * len(self._lines)
        previous, sides[index] = sides[index], side
        if previous is None or previous is side:
            return None
        direction = Direction.IN if side is spec.in_side else Direction.OUT
        label = label_of(obj.class_id, self._names)
        counts = self._counts[spec.name].setdefault(label, {Direction.IN.value: 0, Direction.OUT.value: 0})
        counts[direction.value] += 1
        return Crossing(spec.name, obj.track_id, obj.class_id, direction)
