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
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    px, py = points[:, 0:1], points[:, 1:2]  # (N, 1) against (K,) edges
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never straddle; their NaNs are masked
        x_at_py = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    crossings = np.count_nonzero(straddles & (px < x_at_py), axis=1)
    inside: np.ndarray = (crossings % 2 == 1) | _on_any_edge(px, py, x1, y1, x2, y2)
    return inside


def _on_any_edge(px: np.ndarray, py: np.ndarray, x1: np.ndarray, y1: np.ndarray,
                 x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    length = np.hypot(x2 - x1, y2 - y1)
    near_line = np.abs(cross) <= EDGE_TOLERANCE_PX * np.maximum(length, 1.0)
    tol = EDGE_TOLERANCE_PX
    within = ((px >= np.minimum(x1, x2) - tol) & (px <= np.maximum(x1, x2) + tol)
              & (py >= np.minimum(y1, y2) - tol) & (py <= np.maximum(y1, y2) + tol))
    on_edge: np.ndarray = np.any(near_line & within, axis=1)
    return on_edge


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
