"""Pure numpy pre- and post-processing for YOLOv8-family models.

Every function here is free of I/O and state so it can be tested on synthetic tensors and proven
equal to Ultralytics' own predictor on real models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

LETTERBOX_FILL = 114
# Ultralytics offsets boxes by class id times this before NMS so classes never suppress each other.
CLASS_OFFSET = 7680.0
MAX_NMS_CANDIDATES = 30000


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the model input: scale, then padding on the left and top."""

    scale: float
    pad_x: float
    pad_y: float
    frame_shape: tuple[int, int]  # (height, width) of the original frame
    input_shape: tuple[int, int]  # (height, width) of the model input


@dataclass
class Detections:
    """Detections of one frame: boxes in original frame pixels (x1, y1, x2, y2)."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    masks: list[np.ndarray] | None = None  # per detection polygon (K, 2) in frame pixels (segment)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass
class Classification:
    """Top-k classes of one frame, best first."""

    class_ids: np.ndarray  # (k,) int64
    scores: np.ndarray  # (k,) float32

    def __len__(self) -> int:
        return len(self.scores)


def letterbox_geometry(frame_shape: tuple[int, int], input_shape: tuple[int, int]) -> Letterbox:
    """Scale and centred padding that fit `frame_shape` into `input_shape` keeping aspect ratio."""
    h, w = frame_shape
    in_h, in_w = input_shape
    scale = min(in_h / h, in_w / w)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    pad_x, pad_y = (in_w - new_w) / 2, (in_h - new_h) / 2
    return Letterbox(scale, pad_x, pad_y, (h, w), (in_h, in_w))


def letterbox(frame: np.ndarray, input_shape: tuple[int, int], out: np.ndarray | None = None
              ) -> tuple[np.ndarray, Letterbox]:
    """Resize `frame` (H, W, 3 uint8) into `input_shape` keeping aspect ratio; pad with grey 114.

    Rounds padding like Ultralytics' LetterBox so results match it pixel for pixel. `out`, when
    given, is a reusable (in_h, in_w, 3) uint8 buffer.
    """
    geo = letterbox_geometry(frame.shape[:2], input_shape)
    in_h, in_w = input_shape
    h, w = geo.frame_shape
    new_w, new_h = int(round(w * geo.scale)), int(round(h * geo.scale))
    top, left = int(round(geo.pad_y - 0.1)), int(round(geo.pad_x - 0.1))
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
    # BGR -> RGB by reversing the channel axis while transposing HWC -> CHW, then scale in place.
    np.multiply(image_bgr[..., ::-1].transpose(2, 0, 1), dtype(1 / 255), out=out[0], casting="unsafe")
    return out


def preprocess(frame: np.ndarray, input_shape: tuple[int, int], dtype: type = np.float32,
               buffers: dict | None = None) -> tuple[np.ndarray, Letterbox]:
    """Letterbox + tensor conversion; `buffers` (a dict kept by the caller) lets both be reused."""
    buffers = {} if buffers is None else buffers
    boxed, geo = letterbox(frame, input_shape, buffers.get("letterbox"))
    buffers["letterbox"] = boxed
    tensor = to_tensor(boxed, buffers.get("tensor"), dtype)
    buffers["tensor"] = tensor
    return tensor, geo


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
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None
        ) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: indices kept, highest score first."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32, copy=False)
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_detections(output: np.ndarray, num_classes: int, conf_threshold: float, iou_threshold: float,
                      max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image of a YOLOv8 head output (4 + nc + extra, anchors) with class-aware NMS.

    Returns (boxes xyxy in input pixels, scores, class ids, extra columns such as mask coefficients),
    best score first.
    """
    if output.ndim == 3:
        output = output[0]
    class_scores = output[4:4 + num_classes]
    best_class = class_scores.argmax(0)
    best_score = class_scores[best_class, np.arange(class_scores.shape[1])]
    candidates = np.flatnonzero(best_score > conf_threshold)
    if candidates.size == 0:
        empty = np.zeros((0, 4), np.float32)
        return empty, np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, output.shape[0] - 4 - num_classes), np.float32)
    scores = best_score[candidates]
    if candidates.size > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        candidates, scores = candidates[top], scores[top]
    picked = output[:, candidates].T  # (n, 4 + nc + extra)
    boxes = xywh_to_xyxy(picked[:, :4])
    classes = best_class[candidates].astype(np.int64)
    keep = nms(boxes + (classes[:, None] * CLASS_OFFSET), scores, iou_threshold, max_det)
    extra = picked[keep, 4 + num_classes:]
    return boxes[keep].astype(np.float32), scores[keep].astype(np.float32), classes[keep], extra


def scale_boxes_to_frame(boxes: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Boxes in model-input pixels -> original frame pixels, clipped to the frame."""
    pad_x = round(geo.pad_x - 0.1)
    pad_y = round(geo.pad_y - 0.1)
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] -= pad_x
    out[:, [1, 3]] -= pad_y
    out /= geo.scale
    h, w = geo.frame_shape
    out[:, 0] = out[:, 0].clip(0, w)
    out[:, 2] = out[:, 2].clip(0, w)
    out[:, 1] = out[:, 1].clip(0, h)
    out[:, 3] = out[:, 3].clip(0, h)
    return out


def postprocess_detect(output: np.ndarray, geo: Letterbox, num_classes: int, conf_threshold: float,
                       iou_threshold: float, max_det: int) -> Detections:
    """Raw detection head output of one frame -> Detections in frame pixels."""
    boxes, scores, classes, _ = decode_detections(output, num_classes, conf_threshold, iou_threshold, max_det)
    return Detections(scale_boxes_to_frame(boxes, geo), scores, classes)


def top_k(probabilities: np.ndarray, k: int = 5) -> Classification:
    """Classification output (1, nc) or (nc,) -> the k best classes, best first."""
    probs = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    k = min(k, probs.size)
    order = np.argsort(-probs, kind="stable")[:k]
    return Classification(order.astype(np.int64), probs[order])
