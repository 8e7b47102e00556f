"""Drawing for snapshots and setup pictures: boxes with labels, zones, lines with their "in" side, crops.

Every function takes a BGR frame and returns a new image; the frame passed in is never written to (the
same frame may still be queued for inference or for another snapshot).

Line sides: for a line from point a to point b, "left" is the left-hand side of someone walking from a
to b as the image is seen on screen (image y grows downwards). A point p is on the left when
(b - a) x (p - a) < 0, with x(u, v) = u.x * v.y - u.y * v.x in pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple

import cv2
import numpy as np

from .geometry import resolve_points
from .lines import LineSpec, Side
from .zones import ZoneSpec

Color = Tuple[int, int, int]
Point = Tuple[float, float]

# Distinct BGR colours, picked by class id (id modulo the palette size).
PALETTE: tuple[Color, ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)
ZONE_COLOR: Color = (0, 200, 255)
LINE_COLOR: Color = (255, 0, 255)
TEXT_COLOR: Color = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
FONT_THICKNESS = 1
ZONE_ALPHA = 0.25
ARROW_LENGTH = 30


def class_color(class_id: int) -> Color:
    return PALETTE[int(class_id) % len(PALETTE)]


def _label(image: np.ndarray, text: str, x: int, y: int, color: Color) -> None:
    """Text on a filled background whose bottom-left corner is (x, y), moved inside the image."""
    (width, height), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
    rows, cols = image.shape[:2]
    x = min(max(x, 0), max(cols - width - 2, 0))
    y = min(max(y, height + baseline + 2), rows - 1)
    cv2.rectangle(image, (x, y - height - baseline - 2), (x + width + 2, y), color, cv2.FILLED)
    cv2.putText(image, text, (x + 1, y - baseline - 1), FONT, FONT_SCALE, TEXT_COLOR, FONT_THICKNESS, cv2.LINE_AA)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str],
               class_ids: Sequence[int] | None = None, thickness: int = 2) -> np.ndarray:
    """Boxes (N, 4) x1, y1, x2, y2 in pixels, each with its label above it (inside when at the top edge)."""
    out: np.ndarray = image.copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    for index, (box, text) in enumerate(zip(boxes, labels)):
        color = class_color(class_ids[index] if class_ids is not None else 0)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        if text:
            _label(out, text, x1, y1 - 1, color)
    return out


def draw_zones(image: np.ndarray, polygons: Mapping[str, np.ndarray], color: Color = ZONE_COLOR,
               alpha: float = ZONE_ALPHA) -> np.ndarray:
    """Named polygons (K, 2) in pixels: a translucent fill, an outline and the name at the first vertex."""
    out: np.ndarray = image.copy()
    if not polygons:
        return out
    points = {name: np.round(np.asarray(p, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
              for name, p in polygons.items()}
    filled = out.copy()
    for polygon in points.values():
        cv2.fillPoly(filled, [polygon], color)
    cv2.addWeighted(filled, alpha, out, 1.0 - alpha, 0.0, dst=out)
    for name, polygon in points.items():
        cv2.polylines(out, [polygon], True, color, 2, cv2.LINE_AA)
        _label(out, name, int(polygon[0][0]), int(polygon[0][1]), color)
    return out


def in_arrow(start: Point, end: Point, in_side_left: bool, length: float = ARROW_LENGTH) -> tuple[Point, Point]:
    """The arrow from the line's midpoint, perpendicular to it, pointing to its "in" side."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    norm = math.hypot(dx, dy) or 1.0
    # (dy, -dx) points to the left of a->b on screen (y down); its negation to the right.
    sign = 1.0 if in_side_left else -1.0
    nx, ny = sign * dy / norm, -sign * dx / norm
    mid = ((start[0] + end[0]) / 2.0, (start[1] + end[1]) / 2.0)
    return mid, (mid[0] + nx * length, mid[1] + ny * length)


def draw_lines(image: np.ndarray, lines: Mapping[str, tuple[Point, Point]],
               in_side_left: Mapping[str, bool] | None = None, color: Color = LINE_COLOR) -> np.ndarray:
    """Named lines (a, b) in pixels, each with its name at a and an arrow towards its "in" side
    (`in_side_left[name]`, default True: the left of a->b, see the module notes)."""
    out: np.ndarray = image.copy()
    for name, (start, end) in lines.items():
        a = (int(round(start[0])), int(round(start[1])))
        b = (int(round(end[0])), int(round(end[1])))
        cv2.line(out, a, b, color, 2, cv2.LINE_AA)
        tail, head = in_arrow(start, end, True if in_side_left is None else in_side_left.get(name, True))
        cv2.arrowedLine(out, (int(round(tail[0])), int(round(tail[1]))), (int(round(head[0])), int(round(head[1]))),
                        color, 2, cv2.LINE_AA, tipLength=0.35)
        _label(out, name, a[0], a[1], color)
    return out


def crop_bounds(shape: Sequence[int], box: Sequence[float], margin: float = 0.25) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) integer pixel bounds of `box` grown by `margin` times its width on the left and
    right and its height on the top and bottom, widened outwards to whole pixels and clipped to the image
    of `shape` (rows, cols, ...); at least one pixel each way."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    rows, cols = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
    left = min(max(math.floor(x1 - grow_x), 0), cols - 1)
    top = min(max(math.floor(y1 - grow_y), 0), rows - 1)
    right = max(min(math.ceil(x2 + grow_x), cols), left + 1)
    bottom = max(min(math.ceil(y2 + grow_y), rows), top + 1)
    return left, top, right, bottom


def crop_around(image: np.ndarray, box: Sequence[float], margin: float = 0.25) -> np.ndarray:
    """A copy of the part of `image` around `box` (see crop_bounds)."""
    left, top, right, bottom = crop_bounds(image.shape, box, margin)
    crop: np.ndarray = image[top:bottom, left:right].copy()
    return crop


def render_snapshot(frame: np.ndarray, box: Sequence[float], label: str,
                    zones: Mapping[str, np.ndarray] | None = None,
                    lines: Mapping[str, tuple[Point, Point]] | None = None, crop: bool = True, *,
                    class_id: int = 0, in_side_left: Mapping[str, bool] | None = None,
                    margin: float = 0.25) -> np.ndarray:
    """The event's picture: zones, lines and the object's box with its label drawn on the whole frame,
    then cropped around the box (`crop`) or kept whole."""
    image = draw_zones(frame, zones or {})
    image = draw_lines(image, lines or {}, in_side_left)
    image = draw_boxes(image, np.asarray([box], dtype=np.float64), [label], [class_id])
    return crop_around(image, box, margin) if crop else image


@dataclass(frozen=True)
class Overlay:
    """A camera's zones and lines in one frame size's pixels, as the drawing functions take them."""

    polygons: dict[str, np.ndarray]
    lines: dict[str, tuple[Point, Point]]
    in_side_left: dict[str, bool]

    @classmethod
    def of(cls, zones: Sequence[ZoneSpec], lines: Sequence[LineSpec], frame_shape: tuple[int, int]) -> Overlay:
        """Points given as fractions scaled to a frame of `frame_shape` (height, width)."""
        ends = {}
        for line in lines:
            start, end = resolve_points(line.points, frame_shape)
            ends[line.name] = ((float(start[0]), float(start[1])), (float(end[0]), float(end[1])))
        return cls({zone.name: resolve_points(zone.points, frame_shape) for zone in zones}, ends,
                   {line.name: line.in_side is Side.LEFT for line in lines})

    def draw(self, image: np.ndarray) -> np.ndarray:
        """`image` with the zones and lines drawn (a new image)."""
        return draw_lines(draw_zones(image, self.polygons), self.lines, self.in_side_left)
