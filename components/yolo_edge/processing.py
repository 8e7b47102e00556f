"""Pure numpy pre- and post-processing for YOLO models (YOLOv8-style heads, and the NMS-free heads of
YOLOv10 / YOLO26).

Every function here is free of I/O and state so it can be tested on synthetic tensors and proven
equal to Ultralytics' own predictor on real models (tests/test_equivalence.py):

- detect / segment: letterbox to the model input, RGB in [0, 1], class-aware NMS, boxes mapped back
  to the frame with the same rounding as Ultralytics' LetterBox and scale_boxes;
- segment: prototype masks x coefficients, bilinear upsampling to the model input, threshold at
  logit 0 (sigmoid 0.5), crop to the box; shipped as one bounded polygon per instance, which can be
  deferred until the frame is known to be published (`postprocess_segment_deferred`);
- classify: short side resized with PIL's antialiased bilinear filter (reproduced bit-exactly, so no
  Pillow or torchvision is needed), centre crop, top-k of the model's probabilities.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator

import cv2
import numpy as np

LETTERBOX_FILL = 114
# Ultralytics offsets boxes by class id times this before NMS so classes never suppress each other.
CLASS_OFFSET = 7680.0
MAX_NMS_CANDIDATES = 30000
# Polygon bounds for segmentation: per instance, and for all instances of one frame together, so a
# frame message (about 14 bytes of JSON per point) stays far below IoT Core's 128 KB.
MAX_POLYGON_POINTS = 64
POLYGON_POINT_BUDGET = 4096
MIN_POLYGON_POINTS = 4
# Boxes of one class up to this many are suppressed through an IoU matrix (k x k float32, 4 MB), beyond it
# with a loop that recomputes IoUs against the remaining boxes.
_NMS_BLOCK = 512  # boxes per IoU matrix in NMS
# Below this share of candidates kept, NMS stops looking for max_keep boxes across classes (see nms).
_NMS_MIN_KEPT_SHARE = 0.25
# Fixed-point precision of Pillow's 8-bit resampling, reproduced by `resize_like_pil`.
_PIL_PRECISION_BITS = 22


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: input = frame * scale + (pad_x, pad_y).

    For classification the padding is negative: it is the centre crop's offset.
    """

    scale: float
    pad_x: float
    pad_y: float
    frame_shape: tuple[int, int]  # (height, width) of the original frame
    input_shape: tuple[int, int]  # (height, width) of the model input

    @property
    def resized_shape(self) -> tuple[int, int]:
        """(height, width) of the frame's content inside the model input (each side rounded)."""
        h, w = self.frame_shape
        return max(round(h * self.scale), 1), max(round(w * self.scale), 1)

    @property
    def offset(self) -> tuple[int, int]:
        """(top, left) input pixel where the content starts, rounded like Ultralytics' LetterBox."""
        return round(self.pad_y - 0.1), round(self.pad_x - 0.1)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one frame: boxes in original frame pixels (x1, y1, x2, y2). Never changed once made.

    For segmentation, `polygons` holds one polygon (K, 2) in frame pixels per detection. Decoding may
    leave them `pending` (the instance masks, see `postprocess_segment_deferred`); the one step that
    makes them is `with_polygons()`, which returns a new, finished result and how long it took, so the
    caller can count that time as post-processing. `masks` refuses a pending result rather than
    handing out polygons that are not there.
    """

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    polygons: list[np.ndarray] | None = None
    pending: PendingPolygons | None = None  # what the polygons are made from, until they are made

    @property
    def finished(self) -> bool:
        """False while the polygons are still pending."""
        return self.pending is None

    @property
    def masks(self) -> list[np.ndarray] | None:
        """Per detection polygon (K, 2) in frame pixels (segment), else None; PolygonsPending before
        `with_polygons()` has made them."""
        if self.pending is not None:
            raise PolygonsPending("this segmentation result's polygons are pending: call with_polygons() first")
        return self.polygons

    def with_polygons(self) -> tuple[Detections, float]:
        """The finished result, with the pending polygons made, and the milliseconds that took
        (itself and 0.0 when nothing was pending)."""
        pending = self.pending
        if pending is None:
            return self, 0.0
        start = time.perf_counter()
        polygons = pending_polygons(pending)
        return replace(self, polygons=polygons, pending=None), (time.perf_counter() - start) * 1000

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the bool mask `keep` (N,) is True, in order, with their polygons or
        pending instance masks; itself when it keeps all."""
        if bool(np.all(keep)):
            return self
        indices = np.flatnonzero(keep)
        polygons = None if self.polygons is None else [self.polygons[i] for i in indices]
        pending = None if self.pending is None else replace(
            self.pending, regions=[self.pending.regions[i] for i in indices])
        return Detections(self.boxes[indices], self.scores[indices], self.class_ids[indices], polygons, pending)

    def __repr__(self) -> str:
        polygons = "pending" if self.pending is not None else None if self.polygons is None else len(self.polygons)
        return f"Detections(n={len(self)}, polygons={polygons})"

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class PolygonsPending(RuntimeError):
    """A segmentation result's polygons were read before `Detections.with_polygons()` made them."""


@dataclass(frozen=True, eq=False)
class Classification:
    """Top-k classes of one frame, best first."""

    class_ids: np.ndarray  # (k,) int64
    scores: np.ndarray  # (k,) float32

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class MaskRegion:
    """One instance mask over a rectangle of the model input: mask[r, c] is input pixel (top + r, left + c).

    Keeping only the box's rectangle (masks are cropped to their box anyway) makes segmentation cost
    proportional to the boxes' area instead of detections x input size.
    """

    mask: np.ndarray  # (h, w) bool
    top: int
    left: int


@dataclass(frozen=True)
class PendingPolygons:
    """What a frame's polygons are made from: one MaskRegion per detection, the letterbox to map them
    back to the frame, and the points each polygon may have (see `polygon_points_per_instance`)."""

    regions: list[MaskRegion]
    geometry: Letterbox
    max_points: int


# --- pre-processing ---------------------------------------------------------------------------------

def letterbox_geometry(frame_shape: tuple[int, int], input_shape: tuple[int, int],
                       stride: int | None = None) -> Letterbox:
    """Scale and centred padding that fit `frame_shape` into `input_shape` keeping aspect ratio.

    With `stride` (for models that accept any multiple of it), padding is only what rounds the
    resized frame up to that multiple: a 480x640 frame in 640x640 becomes 480x640, not 640x640 -
    Ultralytics' minimum-rectangle letterbox (`rect=True`), 25 % fewer pixels for 4:3 frames.
    """
    h, w = frame_shape
    in_h, in_w = input_shape
    if h <= 0 or w <= 0:
        raise ValueError(f"frame shape {frame_shape} has no pixels")
    scale = min(in_h / h, in_w / w)
    new_h, new_w = max(round(h * scale), 1), max(round(w * scale), 1)
    if stride:
        in_h, in_w = new_h + (in_h - new_h) % stride, new_w + (in_w - new_w) % stride
    return Letterbox(scale, (in_w - new_w) / 2, (in_h - new_h) / 2, (h, w), (in_h, in_w))


def letterbox(frame: np.ndarray, input_shape: tuple[int, int], out: np.ndarray | None = None,
              stride: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize `frame` (H, W, 3 uint8) into `input_shape` keeping aspect ratio; pad with grey 114.

    Rounds sizes and padding like Ultralytics' LetterBox so results match it pixel for pixel. `out`,
    when given, is a reusable (in_h, in_w, 3) uint8 buffer. `stride`: minimum-rectangle padding, see
    letterbox_geometry; the result is then smaller than `input_shape`.
    """
    geo = letterbox_geometry(frame.shape[:2], input_shape, stride)
    in_h, in_w = geo.input_shape
    h, w = geo.frame_shape
    new_h, new_w = geo.resized_shape
    top, left = geo.offset
    if out is None or out.shape != (in_h, in_w, 3):
        out = np.empty((in_h, in_w, 3), np.uint8)
    out[:top].fill(LETTERBOX_FILL)
    out[top + new_h:].fill(LETTERBOX_FILL)
    out[top:top + new_h, :left].fill(LETTERBOX_FILL)
    out[top:top + new_h, left + new_w:].fill(LETTERBOX_FILL)
    region = out[top:top + new_h, left:left + new_w]
    if (new_h, new_w) == (h, w):
        region[...] = frame
    else:
        cv2.resize(frame, (new_w, new_h), dst=region, interpolation=cv2.INTER_LINEAR)
    return out, geo


def to_tensor(image_bgr: np.ndarray, out: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
    """(H, W, 3) BGR uint8 -> (1, 3, H, W) RGB in [0, 1]. `out` is a reusable buffer."""
    h, w = image_bgr.shape[:2]
    if out is None or out.shape != (1, 3, h, w) or out.dtype != dtype:
        out = np.empty((1, 3, h, w), dtype)
    # BGR -> RGB by reversing the channel axis while transposing HWC -> CHW. Divide (not multiply by
    # 1/255) so every value is bit-identical to Ultralytics' `.div_(255)`; it costs the same.
    np.divide(image_bgr[..., ::-1].transpose(2, 0, 1), dtype(255), out=out[0], casting="unsafe")
    return out


def preprocess_pixels(frame: np.ndarray, input_shape: tuple[int, int], buffers: dict | None = None,
                      stride: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """The letterboxed BGR frame as a (1, H, W, 3) uint8 batch, for a runtime that converts it to its
    input in its own graph; `buffers` (a dict kept by the caller) lets the letterbox be reused."""
    buffers = {} if buffers is None else buffers
    boxed, geo = letterbox(frame, input_shape, buffers.get("letterbox"), stride)
    buffers["letterbox"] = boxed
    return boxed[None], geo


def preprocess(frame: np.ndarray, input_shape: tuple[int, int], dtype: type = np.float32,
               buffers: dict | None = None, stride: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """`preprocess_pixels`' letterbox converted to RGB planes in [0, 1] (to_tensor); `buffers` (a dict kept
    by the caller) lets both be reused.

    `stride` selects the minimum-rectangle letterbox (only for models with dynamic input shapes).
    """
    buffers = {} if buffers is None else buffers
    pixels, geo = preprocess_pixels(frame, input_shape, buffers, stride)
    tensor = to_tensor(pixels[0], buffers.get("tensor"), dtype)
    buffers["tensor"] = tensor
    return tensor, geo


def classify_geometry(frame_shape: tuple[int, int], input_shape: tuple[int, int]
                      ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ultralytics' classify transform sizes: ((resized_h, resized_w), (crop_top, crop_left)).

    A square input resizes the short side to the input size (long side truncated, as torchvision's
    Resize does) and centre-crops; a non-square input is resized exactly.
    """
    h, w = frame_shape
    in_h, in_w = input_shape
    if in_h != in_w:
        return (in_h, in_w), (0, 0)
    size = in_h
    new_h, new_w = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    return (new_h, new_w), (int(round((new_h - in_h) / 2.0)), int(round((new_w - in_w) / 2.0)))


def preprocess_classify(frame: np.ndarray, input_shape: tuple[int, int], dtype: type = np.float32,
                        buffers: dict | None = None) -> tuple[np.ndarray, Letterbox]:
    """Classification input as Ultralytics makes it: resize (Pillow's bilinear), centre crop, RGB, [0, 1].

    Uses Pillow itself when it is installed (it always is beside Ultralytics, and it is ~2x faster),
    else `resize_like_pil`, its numpy re-implementation.
    """
    buffers = {} if buffers is None else buffers
    h, w = frame.shape[:2]
    (new_h, new_w), (top, left) = classify_geometry((h, w), input_shape)
    in_h, in_w = input_shape
    pillow = _pillow_image()
    if pillow is not None:
        resized = np.asarray(pillow.fromarray(np.ascontiguousarray(frame)).resize((new_w, new_h), pillow.BILINEAR))
        cropped = resized[top:top + in_h, left:left + in_w]
    else:
        cropped = resize_like_pil(frame, (new_h, new_w), crop=(top, left, in_h, in_w))
    tensor = to_tensor(cropped, buffers.get("tensor"), dtype)
    buffers["tensor"] = tensor
    return tensor, Letterbox(new_w / w, -float(left), -float(top), (h, w), (in_h, in_w))


@functools.lru_cache(maxsize=None)
def _pillow_image() -> Any:
    """PIL.Image when Pillow is installed, else None (imported on first use)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _pil_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First source index and fixed-point weights of every output pixel of Pillow's BILINEAR resize.

    Pillow widens the triangle filter by the reduction factor (antialiasing) and rounds normalised
    weights to 22-bit integers; each step below follows its arithmetic so results are bit-identical.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle filter's support is 1 source pixel, widened when reducing
    ksize = int(math.ceil(support)) * 2 + 1
    centers = (np.arange(out_size) + 0.5) * scale
    starts = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    counts = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - starts
    taps = np.arange(ksize)
    distance = ((starts[:, None] + taps[None, :]) - centers[:, None] + 0.5) * (1.0 / filter_scale)
    weights = np.clip(1.0 - np.abs(distance), 0.0, None)
    weights[taps[None, :] >= counts[:, None]] = 0.0
    total = np.zeros(out_size)
    for t in range(ksize):  # summed tap by tap, in Pillow's order, for the same rounding
        total = total + weights[:, t]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0)
    one = float(1 << _PIL_PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + weights * one), np.trunc(0.5 + weights * one))
    return starts, fixed.astype(np.int32)


def _pil_pass(image: np.ndarray, starts: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """One separable 8-bit resampling pass of Pillow along the first axis of `image` (gathering whole
    rows is much faster than gathering columns, so callers transpose instead)."""
    in_size = image.shape[0]
    acc = np.full((len(starts),) + image.shape[1:], 1 << (_PIL_PRECISION_BITS - 1), np.int32)
    term = np.empty_like(acc)
    weight_shape = (len(starts),) + (1,) * (image.ndim - 1)
    for t in range(fixed.shape[1]):
        np.multiply(image[np.minimum(starts + t, in_size - 1)], fixed[:, t].reshape(weight_shape), out=term)
        acc += term
    np.right_shift(acc, _PIL_PRECISION_BITS, out=acc)
    return np.clip(acc, 0, 255).astype(np.uint8)


def resize_like_pil(image: np.ndarray, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None
                    ) -> np.ndarray:
    """Resize (H, W, C) uint8 to `size` (h, w) as Pillow's BILINEAR resize does, bit for bit.

    Pillow resamples columns, then rows; `crop` (top, left, height, width) returns only that window
    of the resized image and computes only the pixels it needs (what a centre crop keeps). Pillow 13
    runs the row pass first for some shapes where height shrinks much more than width; there the two
    may differ by one grey level on a few pixels.
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    out_h, out_w = size
    top, left, crop_h, crop_w = crop if crop is not None else (0, 0, out_h, out_w)
    if top < 0 or left < 0 or top + crop_h > out_h or left + crop_w > out_w:
        raise ValueError(f"crop {crop} is outside the resized {size} image")
    if out_h != h:
        row_starts, row_weights = _pil_bilinear_taps(h, out_h)
        row_starts, row_weights = row_starts[top:top + crop_h], row_weights[top:top + crop_h]
        first = int(row_starts[0])
        last = int(min(row_starts[-1] + row_weights.shape[1], h))
        rows = image[first:last]
        row_starts = row_starts - first
    else:
        rows = image[top:top + crop_h]
    if out_w != w:
        col_starts, col_weights = _pil_bilinear_taps(w, out_w)
        columns = np.ascontiguousarray(rows.transpose(1, 0, 2))
        columns = _pil_pass(columns, col_starts[left:left + crop_w], col_weights[left:left + crop_w])
        rows = columns.transpose(1, 0, 2)
    else:
        rows = rows[:, left:left + crop_w]
    if out_h != h:
        rows = _pil_pass(np.ascontiguousarray(rows), row_starts, row_weights)
    return np.ascontiguousarray(rows)


# --- detection --------------------------------------------------------------------------------------

def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    out[:, 0] = xywh[:, 0] - half_w
    out[:, 1] = xywh[:, 1] - half_h
    out[:, 2] = xywh[:, 0] + half_w
    out[:, 3] = xywh[:, 1] + half_h
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) xyxy box with (N, 4) boxes."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: np.ndarray = inter / np.maximum(area + areas - inter, 1e-9)
    return iou


def _iou_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """(k, 4) x (m, 4) float32 xyxy -> (k, m) IoU (b defaults to a), with torchvision's float32 arithmetic."""
    b = a if b is None else b
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    # np.maximum(x, 0) rather than np.clip: the same values (NaN included), without clip's overhead
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(width, 0, out=width)
    inter *= np.maximum(height, 0, out=height)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou: np.ndarray = inter / (area_a[:, None] + area_b[None, :] - inter)
        return iou


def _float32_at_or_below(value: float) -> np.float32:
    """The largest float32 <= `value`: for a float32 x, x > value (in reals) exactly when x > this.

    Comparing a float32 array with a float64 scalar is done in float32 by numpy < 2 (value-based casting)
    and in float64 by numpy >= 2; this makes both give torchvision's answer (float32 IoU > double threshold).
    """
    below: np.float32 = np.float32(value)
    if float(below) > value:
        below = np.float32(np.nextafter(below, np.float32(-np.inf)))
    return below


def _greedy_blocks(boxes: np.ndarray, iou_threshold: float, max_keep: int | None = None,
                   block_size: int = _NMS_BLOCK) -> Iterator[tuple[list[int], int]]:
    """Greedy suppression of boxes already sorted best first, a block at a time: yields the kept positions
    so far and how many boxes were decided after each block; stops once `max_keep` boxes are kept.

    A box is kept when no kept box before it overlaps it by more than the threshold. Each block is checked
    against the boxes kept so far with one IoU matrix, then solved inside with its own, so memory stays
    bounded and a caller can stop early.
    """
    limit = len(boxes) if max_keep is None else max_keep
    keep: list[int] = []
    # torchvision compares the float32 IoU with the double threshold; NaN (empty boxes) never suppresses.
    threshold = _float32_at_or_below(iou_threshold)
    for start in range(0, len(boxes), block_size):
        block = boxes[start:start + block_size]
        suppressed = np.zeros(len(block), bool)
        if keep:
            suppressed |= (_iou_matrix(boxes[keep], block) > threshold).any(0)
        overlaps = _iou_matrix(block) > threshold
        for i in range(len(block)):
            if not suppressed[i]:
                keep.append(start + i)
                if len(keep) >= limit:
                    yield keep, start + i + 1
                    return
                suppressed |= overlaps[i]
        yield keep, start + len(block)


def _greedy(boxes: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Kept positions of boxes already sorted best first (see _greedy_blocks), at most `max_keep`."""
    keep: list[int] = []
    for kept_so_far, _ in _greedy_blocks(boxes, iou_threshold, max_keep):
        keep = kept_so_far
    return np.asarray(keep, np.int64)


def _greedy_if_mostly_kept(boxes: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray | None:
    """The first `max_keep` kept positions of boxes sorted best first, found without deciding the boxes after
    them; None as soon as fewer than _NMS_MIN_KEPT_SHARE of the boxes decided so far are kept (then most
    boxes are suppressed and solving each class on its own is cheaper)."""
    for keep, decided in _greedy_blocks(boxes, iou_threshold, max_keep, block_size=max(max_keep, 64)):
        if len(keep) >= max_keep:
            return np.asarray(keep, np.int64)
        if len(keep) < _NMS_MIN_KEPT_SHARE * decided:
            return None
    return np.asarray(keep, np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None,
        classes: np.ndarray | None = None) -> np.ndarray:
    """Greedy NMS exactly as torchvision.ops.nms (a box is dropped when IoU > threshold): kept indices,
    best score first, ties in index order.

    `classes`, when given, says that only boxes of the same class suppress each other (Ultralytics gets
    that by offsetting boxes per class; passing the classes too lets each class be solved on its own
    with a small IoU matrix, ~10x faster than one long loop over thousands of candidates).

    With many candidates and most of them kept (a heavy head: thousands of boxes scoring just above the
    threshold), the first `max_keep` kept boxes in score order are found first without classes, so the
    boxes after them are never looked at: the answer is the same, since a box's fate depends only on the
    boxes scoring above it.
    """
    count = len(boxes)
    if count == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    if classes is not None and max_keep is not None and count > 2 * max_keep:
        head = _greedy_if_mostly_kept(boxes[order], iou_threshold, max_keep)
        if head is not None:
            best_first: np.ndarray = order[head]
            return best_first
    if classes is None:
        groups = [order]
    else:
        by_class = order[np.argsort(np.asarray(classes)[order], kind="stable")]  # score order within a class
        starts = np.flatnonzero(np.diff(np.asarray(classes)[by_class])) + 1
        groups = np.split(by_class, starts)
    # A class can contribute at most max_keep boxes to the result, so each class stops there.
    kept = np.concatenate([group[_greedy(boxes[group], iou_threshold, max_keep)] for group in groups])
    rank = np.empty(count, np.int64)
    rank[order] = np.arange(count)
    kept = kept[np.argsort(rank[kept])]
    return kept[:max_keep] if max_keep is not None else kept


def is_end2end(output: np.ndarray, num_classes: int, num_masks: int = 0) -> bool:
    """Whether a head output has the NMS-free layout of YOLOv10 / YOLO26 end-to-end heads:
    (1, max_det, 6 + nm) rows of x1, y1, x2, y2, score, class[, mask coefficients], best first,
    instead of YOLOv8's (1, 4 + nc + nm, anchors)."""
    rows, columns = output.shape[-2:]
    return bool(columns == 6 + num_masks and rows != 4 + num_classes + num_masks)


def decode_end2end(output: np.ndarray, conf_threshold: float, max_det: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode an end-to-end head output (see is_end2end): no NMS, only the score threshold and max_det."""
    if output.ndim == 3:
        output = output[0]
    picked = output[output[:, 4] > conf_threshold][:max_det]
    return (picked[:, :4].astype(np.float32), picked[:, 4].astype(np.float32),
            np.rint(picked[:, 5]).astype(np.int64), picked[:, 6:].astype(np.float32))


def decode_detections(output: np.ndarray, num_classes: int, conf_threshold: float, iou_threshold: float,
                      max_det: int, num_masks: int = 0, end2end: bool | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image of a YOLOv8 head output (4 + nc + extra, anchors) with class-aware NMS, or
    of an end-to-end head (see is_end2end; `num_masks` tells its extra columns). `end2end` says which
    layout it is when the caller knows (rows a device already decoded); None tells it from the shape.

    Returns (boxes xyxy in input pixels, scores, class ids, extra columns such as mask coefficients),
    best score first.
    """
    if output.ndim == 3:
        output = output[0]
    if end2end or (end2end is None and is_end2end(output, num_classes, num_masks)):
        return decode_end2end(output, conf_threshold, max_det)
    class_scores = output[4:4 + num_classes]
    best_score = class_scores.max(0)  # the argmax is taken for the candidates only: 8x cheaper
    candidates = np.flatnonzero(best_score > conf_threshold)
    if candidates.size == 0:
        empty = np.zeros((0, 4), np.float32)
        return (empty, np.zeros(0, np.float32), np.zeros(0, np.int64),
                np.zeros((0, output.shape[0] - 4 - num_classes), np.float32))
    scores = best_score[candidates]
    if candidates.size > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        candidates, scores = candidates[top], scores[top]
    picked = output[:, candidates].T  # (n, 4 + nc + extra)
    boxes = xywh_to_xyxy(picked[:, :4])
    classes = picked[:, 4:4 + num_classes].argmax(1).astype(np.int64)
    keep = nms(boxes + (classes[:, None] * CLASS_OFFSET), scores, iou_threshold, max_det, classes)
    extra = picked[keep, 4 + num_classes:]
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), classes[keep], extra


def _frame_gains(geo: Letterbox) -> tuple[float, float]:
    """Per-axis input/frame scale of the resized content (each side was rounded separately)."""
    new_h, new_w = geo.resized_shape
    h, w = geo.frame_shape
    return new_w / w, new_h / h


def scale_boxes_to_frame(boxes: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Boxes in model-input pixels -> original frame pixels, clipped to the frame (as Ultralytics' scale_boxes)."""
    top, left = geo.offset
    gain_x, gain_y = _frame_gains(geo)
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] -= left
    out[:, [1, 3]] -= top
    out[:, [0, 2]] /= gain_x
    out[:, [1, 3]] /= gain_y
    h, w = geo.frame_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def scale_points_to_frame(points: np.ndarray, geo: Letterbox) -> np.ndarray:
    """(K, 2) x, y points in model-input pixels -> frame pixels, clipped to the frame."""
    top, left = geo.offset
    gain_x, gain_y = _frame_gains(geo)
    out = points.astype(np.float32, copy=True).reshape(-1, 2)
    out[:, 0] = ((out[:, 0] - left) / gain_x).clip(0, geo.frame_shape[1])
    out[:, 1] = ((out[:, 1] - top) / gain_y).clip(0, geo.frame_shape[0])
    return out


def postprocess_detect(output: np.ndarray, geo: Letterbox, num_classes: int, conf_threshold: float,
                       iou_threshold: float, max_det: int, end2end: bool | None = None) -> Detections:
    """Raw detection head output of one frame -> Detections in frame pixels."""
    boxes, scores, classes, _ = decode_detections(output, num_classes, conf_threshold, iou_threshold, max_det,
                                                  end2end=end2end)
    return Detections(scale_boxes_to_frame(boxes, geo), scores, classes)


# --- segmentation -----------------------------------------------------------------------------------

def _bilinear_source(dst: np.ndarray, src_size: int, dst_size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels and weights of destination pixels `dst` for a bilinear resize with half-pixel
    centres (PyTorch's interpolate(mode="bilinear", align_corners=False), in float32 like it)."""
    scale = np.float32(src_size) / np.float32(dst_size)
    src = np.maximum((dst.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    lower = np.minimum(src.astype(np.int64), src_size - 1)
    upper = np.minimum(lower + 1, src_size - 1)
    upper_weight = np.clip(src - lower, 0, 1).astype(np.float32)
    return lower, upper, np.float32(1) - upper_weight, upper_weight


def instance_masks(protos: np.ndarray, coefficients: np.ndarray, boxes: np.ndarray,
                   input_shape: tuple[int, int]) -> list[MaskRegion]:
    """Masks of detections at model-input resolution, each cropped to its box (Ultralytics' process_mask).

    protos (nm, mh, mw) prototype masks; coefficients (N, nm); boxes (N, 4) xyxy in input pixels. A
    pixel belongs to the instance when the bilinearly upsampled logit is > 0 (sigmoid > 0.5) and its
    index lies in [x1, x2) x [y1, y2). Only the prototype band under each box is evaluated.
    """
    if protos.ndim == 4:
        protos = protos[0]
    num_masks, proto_h, proto_w = protos.shape
    in_h, in_w = input_shape
    all_rows = _bilinear_source(np.arange(in_h), proto_h, in_h)  # sliced per box below
    all_cols = _bilinear_source(np.arange(in_w), proto_w, in_w)
    regions = []
    for coef, (x1, y1, x2, y2) in zip(coefficients.astype(np.float32), boxes):
        left, right = max(math.ceil(x1), 0), min(math.ceil(x2), in_w)
        top, bottom = max(math.ceil(y1), 0), min(math.ceil(y2), in_h)
        if right <= left or bottom <= top:
            regions.append(MaskRegion(np.zeros((0, 0), bool), max(top, 0), max(left, 0)))
            continue
        row0, row1, row_w0, row_w1 = (a[top:bottom] for a in all_rows)
        col0, col1, col_w0, col_w1 = (a[left:right] for a in all_cols)
        band_top, band_left = int(row0[0]), int(col0[0])
        band = protos[:, band_top:int(row1[-1]) + 1, band_left:int(col1[-1]) + 1]
        logits = (coef @ band.reshape(num_masks, -1)).reshape(band.shape[1:])
        rows = logits[row0 - band_top] * row_w0[:, None] + logits[row1 - band_top] * row_w1[:, None]
        upsampled = rows[:, col0 - band_left] * col_w0 + rows[:, col1 - band_left] * col_w1
        regions.append(MaskRegion(upsampled > 0, top, left))
    return regions


def regions_to_masks(regions: list[MaskRegion], input_shape: tuple[int, int]) -> np.ndarray:
    """(N, in_h, in_w) bool masks at model-input resolution (what Ultralytics' Results.masks.data holds)."""
    masks = np.zeros((len(regions), *input_shape), bool)
    for i, region in enumerate(regions):
        h, w = region.mask.shape
        masks[i, region.top:region.top + h, region.left:region.left + w] = region.mask
    return masks


def masks_to_frame(masks: np.ndarray, geo: Letterbox) -> np.ndarray:
    """(N, in_h, in_w) input-resolution masks -> (N, H, W) bool frame masks: drop the padding, resize
    bilinearly, threshold at 0.5 (Ultralytics' scale_masks)."""
    top, left = geo.offset
    new_h, new_w = geo.resized_shape
    h, w = geo.frame_shape
    out = np.zeros((len(masks), h, w), bool)
    for i, mask in enumerate(masks):
        content = np.ascontiguousarray(mask[top:top + new_h, left:left + new_w], dtype=np.float32)
        out[i] = cv2.resize(content, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return out


def simplify_polygon(contour: np.ndarray, max_points: int, epsilon: float = 1.0) -> np.ndarray:
    """Douglas-Peucker simplification of a closed contour to at most `max_points` points: starts at
    `epsilon` pixels and loosens it until the polygon is small enough. Returns (K, 2) float32."""
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}")
    contour = np.asarray(contour, np.float32).reshape(-1, 1, 2)
    polygon = contour if len(contour) <= max_points else cv2.approxPolyDP(contour, epsilon, True)
    while len(polygon) > max_points:
        # Loosen faster the further off the target the polygon is (a few passes even for ragged outlines).
        epsilon *= max(1.25, min(4.0, (len(polygon) / max_points) ** 0.5))
        polygon = cv2.approxPolyDP(contour, epsilon, True)
    return polygon.reshape(-1, 2).astype(np.float32)


def region_polygon(region: MaskRegion, geo: Letterbox, max_points: int = MAX_POLYGON_POINTS) -> np.ndarray:
    """Outline (K, 2) of a mask's largest connected part, in frame pixels, at most `max_points` points."""
    # Only the frame's content counts: mask pixels over the letterbox padding have no frame pixel.
    content_top, content_left = geo.offset
    content_h, content_w = geo.resized_shape
    top, left = max(region.top, content_top), max(region.left, content_left)
    bottom = min(region.top + region.mask.shape[0], content_top + content_h)
    right = min(region.left + region.mask.shape[1], content_left + content_w)
    if bottom <= top or right <= left:
        return np.zeros((0, 2), np.float32)
    visible = region.mask[top - region.top:bottom - region.top, left - region.left:right - region.left]
    contours, _ = cv2.findContours(visible.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=(left, top))
    if not contours:
        return np.zeros((0, 2), np.float32)
    largest = max(contours, key=cv2.contourArea)  # the first of equals (e.g. single pixels, area 0)
    return scale_points_to_frame(simplify_polygon(largest, max_points), geo)


def decode_segments(outputs: list[np.ndarray], geo: Letterbox, num_classes: int, conf_threshold: float,
                    iou_threshold: float, max_det: int, end2end: bool | None = None
                    ) -> tuple[Detections, list[MaskRegion]]:
    """Segmentation outputs -> (Detections in frame pixels without polygons, one MaskRegion each)."""
    if len(outputs) < 2:
        raise ValueError(f"a segmentation model has 2 outputs (detections, prototypes), got {len(outputs)}")
    protos = outputs[1][0] if outputs[1].ndim == 4 else outputs[1]
    boxes, scores, classes, coefficients = decode_detections(outputs[0], num_classes, conf_threshold,
                                                             iou_threshold, max_det, protos.shape[0], end2end)
    if coefficients.shape[1] != protos.shape[0]:
        raise ValueError(f"the detection output has {coefficients.shape[1]} mask coefficients but there are "
                         f"{protos.shape[0]} prototype masks")
    regions = instance_masks(protos, coefficients, boxes, geo.input_shape)
    # Ultralytics drops detections whose cropped mask is empty; so do we, to report the same set.
    keep = np.asarray([bool(r.mask.any()) for r in regions], bool)
    if not keep.all():
        regions = [r for r, k in zip(regions, keep) if k]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    return Detections(scale_boxes_to_frame(boxes, geo), scores, classes), regions


def polygon_points_per_instance(instances: int, max_polygon_points: int = MAX_POLYGON_POINTS,
                                polygon_point_budget: int = POLYGON_POINT_BUDGET) -> int:
    """Points each of a frame's `instances` polygons may have: at most `max_polygon_points`, all together at
    most `polygon_point_budget`, but at least MIN_POLYGON_POINTS each."""
    return max(MIN_POLYGON_POINTS, min(max_polygon_points, polygon_point_budget // max(instances, 1)))


def pending_polygons(pending: PendingPolygons) -> list[np.ndarray]:
    """The polygons of a frame's pending instance masks, one (K, 2) array in frame pixels each."""
    return [region_polygon(r, pending.geometry, pending.max_points) for r in pending.regions]


def postprocess_segment_deferred(outputs: list[np.ndarray], geometry: Letterbox, num_classes: int,
                                 conf_threshold: float, iou_threshold: float, max_det: int,
                                 max_polygon_points: int = MAX_POLYGON_POINTS,
                                 polygon_point_budget: int = POLYGON_POINT_BUDGET,
                                 end2end: bool | None = None) -> Detections:
    """postprocess_segment without its polygon step: boxes, scores and classes are final, the polygons are
    `pending` until `Detections.with_polygons()`, so a frame that is never published
    never pays for them."""
    detections, regions = decode_segments(outputs, geometry, num_classes, conf_threshold, iou_threshold, max_det,
                                          end2end)
    per_polygon = polygon_points_per_instance(len(regions), max_polygon_points, polygon_point_budget)
    return replace(detections, pending=PendingPolygons(regions, geometry, per_polygon))


def postprocess_segment(outputs: list[np.ndarray], geometry: Letterbox, num_classes: int, conf_threshold: float,
                        iou_threshold: float, max_det: int, max_polygon_points: int = MAX_POLYGON_POINTS,
                        polygon_point_budget: int = POLYGON_POINT_BUDGET, end2end: bool | None = None) -> Detections:
    """Segmentation outputs [(1, 4 + nc + nm, A), (1, nm, mh, mw)] -> Detections with one polygon per
    detection in `masks` (frame pixels).

    Each polygon has at most `max_polygon_points` points, and all polygons of the frame together at
    most `polygon_point_budget` (but at least MIN_POLYGON_POINTS each), so message size is bounded.
    """
    detections = postprocess_segment_deferred(outputs, geometry, num_classes, conf_threshold, iou_threshold,
                                              max_det, max_polygon_points, polygon_point_budget, end2end)
    return detections.with_polygons()[0]


def segment_frame_masks(outputs: list[np.ndarray], geometry: Letterbox, num_classes: int,
                        conf_threshold: float, iou_threshold: float, max_det: int
                        ) -> tuple[Detections, np.ndarray]:
    """Like postprocess_segment, plus the full-resolution (N, H, W) bool masks in frame pixels.

    Costs N x H x W memory: meant for tests, visualisation and offline use, not the streaming path.
    """
    detections, regions = decode_segments(outputs, geometry, num_classes, conf_threshold, iou_threshold, max_det)
    detections = replace(detections, polygons=[region_polygon(r, geometry) for r in regions])
    return detections, masks_to_frame(regions_to_masks(regions, geometry.input_shape), geometry)


# --- classification ---------------------------------------------------------------------------------

def top_k(probabilities: np.ndarray, k: int = 5) -> Classification:
    """Classification output (1, nc) or (nc,) -> the k best classes, best first.

    Ultralytics' classify models already end in a softmax (in PyTorch and in every export), so the
    values are probabilities and are passed through unchanged.
    """
    probs = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    k = min(k, probs.size)
    order = np.argsort(-probs, kind="stable")[:k]
    return Classification(order.astype(np.int64), probs[order])
