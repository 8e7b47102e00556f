"""Points, polygons and lines in image coordinates (x right, y down, pixels), vectorised with numpy."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]
EDGE_TOLERANCE_PX = 1e-6  # a point this near a polygon edge is on it (float noise of fractions times a frame size)


class TrackedObject(Protocol):
    """What zones and lines read of a tracked object (the tracker's frozen `TrackState` has these)."""

    @property
    def track_id(self) -> int: ...

    @property
    def box(self) -> Box: ...  # xyxy pixels

    @property
    def class_id(self) -> int: ...

    @property
    def score(self) -> float: ...


def label_of(class_id: int, names: Mapping[int, str]) -> str:
    return names.get(class_id, str(class_id))


def is_fractional(points: np.ndarray) -> bool:
    """All coordinates in 0..1: the points are fractions of the frame's width and height."""
    return bool(points.size) and bool(np.all((points >= 0.0) & (points <= 1.0)))


def resolve_points(points: Sequence[Sequence[float]] | np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) float pixels; points whose coordinates are all in 0..1 are scaled by the frame (height, width)."""
    array: np.ndarray = np.array(points, dtype=np.float64).reshape(-1, 2)  # a copy, never the caller's array
    if is_fractional(array):
        height, width = frame_shape
        array *= np.array([width, height], dtype=np.float64)
    return array


def anchor_points(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) bottom centres of (N, 4) xyxy boxes: where an object stands on the floor."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack(((boxes[:, 0] + boxes[:, 2]) * 0.5, boxes[:, 3]), axis=1)


def boxes_of(objects: Sequence[TrackedObject]) -> np.ndarray:
    return np.array([obj.box for obj in objects], dtype=np.float64).reshape(-1, 4)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: each point inside the (K, 2) polygon (even-odd rule, so concave shapes work) or on its edge."""
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if not len(polygon):
        return np.zeros(len(np.asarray(points).reshape(-1, 2)), dtype=bool)
    inside: np.ndarray = PolygonSet([polygon]).contains(points)[:, 0]
    return inside


class PolygonSet:
    """The edges of several polygons in one set of arrays, to test many points against all of them in one pass."""

    def __init__(self, polygons: Sequence[np.ndarray]) -> None:
        arrays = [np.asarray(polygon, dtype=np.float64).reshape(-1, 2) for polygon in polygons]
        if any(not len(array) for array in arrays):
            raise ValueError("every polygon needs at least one point")
        self.count = len(arrays)
        starts = np.concatenate(arrays) if arrays else np.zeros((0, 2))
        ends = np.concatenate([np.roll(array, -1, axis=0) for array in arrays]) if arrays else np.zeros((0, 2))
        self._first_edges = np.cumsum([0] + [len(array) for array in arrays[:-1]])  # each polygon's, for reduceat
        self._x1, self._y1 = starts[:, 0], starts[:, 1]
        self._y2 = ends[:, 1]
        self._dx, self._dy = ends[:, 0] - self._x1, self._y2 - self._y1
        # horizontal edges never straddle a point's y, so their x at that y is never read
        self._dx_per_dy = np.divide(self._dx, self._dy, out=np.zeros_like(self._dx), where=self._dy != 0)
        self._cross_tolerance = EDGE_TOLERANCE_PX * np.maximum(np.hypot(self._dx, self._dy), 1.0)
        self._low = np.minimum(starts, ends) - EDGE_TOLERANCE_PX
        self._high = np.maximum(starts, ends) + EDGE_TOLERANCE_PX

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N, polygons) bool: each point inside each polygon (even-odd rule) or on its edge."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if not self.count or not len(points):
            return np.zeros((len(points), self.count), dtype=bool)
        px, py = points[:, 0:1], points[:, 1:2]  # (N, 1) against (E,) edges
        straddles = (self._y1 > py) != (self._y2 > py)
        crossings = straddles & (px < self._x1 + (py - self._y1) * self._dx_per_dy)
        cross = self._dx * (py - self._y1) - self._dy * (px - self._x1)
        on_edge = ((np.abs(cross) <= self._cross_tolerance)
                   & (px >= self._low[:, 0]) & (px <= self._high[:, 0])
                   & (py >= self._low[:, 1]) & (py <= self._high[:, 1]))
        odd = np.logical_xor.reduceat(crossings, self._first_edges, axis=1)
        inside: np.ndarray = odd | np.logical_or.reduceat(on_edge, self._first_edges, axis=1)
        return inside


def polygon_area(points: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Unsigned shoelace area, in the points' own units."""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = array[:, 0], array[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) * 0.5)


def signed_offsets(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (N, 2) points and the segment start->end: (signed distance from the line, position along the segment).

    The distance is negative on the LEFT of start->end as the image is displayed (y down) and positive on the
    RIGHT; the position is 0 at `start`, 1 at `end`, outside 0..1 beyond the segment's ends.
    """
    direction = end - start
    length_sq = float(np.dot(direction, direction))
    relative = np.asarray(points, dtype=np.float64).reshape(-1, 2) - start
    cross = direction[0] * relative[:, 1] - direction[1] * relative[:, 0]
    return cross / np.sqrt(length_sq), (relative @ direction) / length_sq
