"""Moving coloured squares with known ground truth, and a tiny hand-built ONNX "shape detector" for them.

The detector is a real Ultralytics-layout detect model (input `images` (N, 3, H, W) RGB in [0, 1], output
(N, 4 + nc, A) of cx, cy, w, h in input pixels then per-class scores, Ultralytics' metadata), so the
runtime's real path (ONNX Runtime backend, letterbox, class-aware NMS) turns a frame drawn here into
exactly one detection per fully visible square. Tests of tracking, zones, lines and events can then
compare what the component publishes with ground truth that is known to the pixel.

How it scores: per class, a colour mask (clip(GAIN * (own channel - the other two) - OFFSET, 0, 1): 1 on
the square, 0 on any grey), averaged over every SQUARE x SQUARE window at a step of WINDOW_STRIDE pixels
(the fraction of the window the square covers), raised to SCORE_POWER so the windows around the best one
fall clearly below SHAPES_CONF, and one fixed box per window (its centre, SQUARE wide and high). The
best window is at most WINDOW_STRIDE / 2 px from the square; NMS (IoU 0.7) removes its neighbours.

A square cut by the frame's edge is detected (once) when it fills about 88 % of a window (SHAPES_CONF **
(1 / SCORE_POWER)), with the box of that window, up to 6 px wider than its visible part; else not at all.
Keep squares MIN_GAP px apart: two squares of one class close together could light a window between them,
and ones that overlap hide each other. Frame sizes are (height, width), as the model input's are; keep the
video's frame size equal to the model's input size, so the letterbox neither resizes nor pads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SQUARE = 48  # side of every square, pixels
WINDOW_STRIDE = 2  # pixels between the detector's windows: box error <= WINDOW_STRIDE / 2 px per side
MASK_GAIN = 2.0  # colour mask = clip(GAIN * (own - others) - OFFSET, 0, 1): JPEG-blurred edges become 0 or 1
MASK_OFFSET = 0.5
SCORE_POWER = 4  # score = window coverage ** SCORE_POWER
# conf_threshold to run the detector with. Measured on both scenes of tests/test_shapes_model.py (MJPG frames):
# whole squares score >= 0.858, anything else that NMS keeps (neighbour windows, background) <= 0.423.
SHAPES_CONF = 0.6
SHAPES_IOU = 0.7  # iou_threshold (the runtime's default)
SHAPES_SIZE = (320, 320)  # (height, width) of the model input and of the scenes' frames
SHAPES_FPS = 10.0
MIN_GAP = 16  # pixels to keep between squares (of one class, at least)
BACKGROUND = 114  # mid grey, the letterbox's fill
# class id = position; BGR colours as OpenCV draws them
COLOURS: dict[str, tuple[int, int, int]] = {"red": (0, 0, 255), "green": (0, 255, 0)}
CLASS_NAMES = tuple(COLOURS)
_RGB_INDEX = {"red": 0, "green": 1}  # the model input's channel that carries each class's colour
_OPSET = 13
_IR_VERSION = 8  # readable by every ONNX Runtime the tools accept (>= 1.16)


@dataclass(frozen=True)
class ShapePath:
    """One square moving linearly from `start` (at start_frame) to `end` (at end_frame).

    Positions are the square's top-left corner in pixels, rounded to whole pixels when drawn. The square
    is drawn only in frames start_frame..end_frame (inclusive). `name` says which object a path belongs
    to: an object that stops and moves on is several paths with one name, back to back in time.
    """

    label: str
    start: tuple[float, float]
    end: tuple[float, float]
    start_frame: int
    end_frame: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.label not in COLOURS:
            raise ValueError(f"ShapePath label {self.label!r} is not a detector class ({', '.join(COLOURS)})")
        if self.end_frame < self.start_frame or self.start_frame < 0:
            raise ValueError(f"ShapePath frames {self.start_frame}..{self.end_frame}: need 0 <= start <= end")

    def visible_in(self, frame_index: int) -> bool:
        return self.start_frame <= frame_index <= self.end_frame

    def top_left(self, frame_index: int) -> tuple[int, int]:
        """The drawn square's top-left pixel (x, y) in `frame_index` (linear motion, rounded half up)."""
        span = self.end_frame - self.start_frame
        t = (frame_index - self.start_frame) / span if span else 0.0
        x = self.start[0] + t * (self.end[0] - self.start[0])
        y = self.start[1] + t * (self.end[1] - self.start[1])
        return math.floor(x + 0.5), math.floor(y + 0.5)


# --- the scenes -------------------------------------------------------------------------------------

def shape_boxes(paths: Sequence[ShapePath], frame_index: int, frame_size: tuple[int, int] = SHAPES_SIZE
                ) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Ground truth of one frame: (label, (x1, y1, x2, y2)) of every square drawn in it, clipped to the
    frame of (height, width) `frame_size`, in path order; squares wholly outside the frame are left out.

    A fully visible square's box is (x, y, x + SQUARE, y + SQUARE): the Ultralytics convention, where
    x2 is one past the last pixel, which is what the detector reports.
    """
    height, width = frame_size
    boxes = []
    for path in paths:
        if not path.visible_in(frame_index):
            continue
        x, y = path.top_left(frame_index)
        x1, y1 = max(x, 0), max(y, 0)
        x2, y2 = min(x + SQUARE, width), min(y + SQUARE, height)
        if x2 > x1 and y2 > y1:
            boxes.append((path.label, (float(x1), float(y1), float(x2), float(y2))))
    return boxes


def fully_visible(box: tuple[float, float, float, float]) -> bool:
    """Whether a `shape_boxes` box is a whole square (not cut by the frame's edge)."""
    return box[2] - box[0] == SQUARE and box[3] - box[1] == SQUARE


def draw_frame(paths: Sequence[ShapePath], frame_index: int, frame_size: tuple[int, int] = SHAPES_SIZE
               ) -> np.ndarray:
    """Frame `frame_index` of the scene: (height, width, 3) BGR uint8, grey 114 with the squares drawn
    in it (later paths on top)."""
    height, width = frame_size
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    for path in paths:
        if path.visible_in(frame_index):
            x, y = path.top_left(frame_index)
            cv2.rectangle(frame, (x, y), (x + SQUARE - 1, y + SQUARE - 1), COLOURS[path.label], thickness=-1)
    return frame


def write_shapes_video(path: Path, paths: Sequence[ShapePath], frames: int,
                       frame_size: tuple[int, int] = SHAPES_SIZE, fps: float = SHAPES_FPS) -> Path:
    """The scene's first `frames` frames as an MJPG .avi that cv2.VideoCapture reads back."""
    height, width = frame_size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write the video {path}")
    try:
        for index in range(frames):
            writer.write(draw_frame(paths, index, frame_size))
    finally:
        writer.release()
    return path


CROSSING_FRAMES = 90
LOITER_REGION = (0, 0, 160, 160)  # x1, y1, x2, y2: the top-left quadrant of the 320 x 320 frame


def crossing_scene() -> tuple[list[ShapePath], int]:
    """A 320 x 320, 10 fps scene of CROSSING_FRAMES (90) frames for events tests: (paths, frame count).

    Three squares (objects "a", "b", "c", named in ShapePath.name), each entering the frame from one
    side, crossing the vertical line x = 160 exactly once and leaving by the other side, in separate
    lanes (64 px apart), never overlapping:

    - "a", red, lane y = 24..72: enters from the left in frames 0-12, STOPS at x = 56..104 in frames
      12-37 (26 frames, 2.6 s, wholly inside LOITER_REGION, the top-left quadrant (0, 0)-(160, 160);
      its bottom centre is (80, 72)), then moves right and has left the frame at frame 62. Three paths.
    - "b", green, lane y = 136..184: right to left, frames 5-45.
    - "c", red, lane y = 248..296: left to right, frames 15-55.

    Frames 63-89 are empty, so every track can end before the video does.

    Expected, for a line from (160, 0) to (160, 320): 3 `new` and 3 `end` events (one each per object,
    no ID switches: no two squares ever overlap), and 3 crossings: 2 left -> right ("a", "c"; red) and
    1 right -> left ("b"; green). Only "a" is ever in the top-left quadrant, so a zone there sees one
    entry and, with loitering_s <= 2 s, one loitering alert.
    """
    return [
        ShapePath("red", (-SQUARE, 24), (56, 24), 0, 12, name="a"),
        ShapePath("red", (56, 24), (56, 24), 13, 37, name="a"),
        ShapePath("red", (66, 24), (320, 24), 38, 62, name="a"),
        ShapePath("green", (320, 136), (-SQUARE, 136), 5, 45, name="b"),
        ShapePath("red", (-SQUARE, 248), (320, 248), 15, 55, name="c"),
    ], CROSSING_FRAMES


# --- the detector -----------------------------------------------------------------------------------

def window_centres(input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """x and y centres (input pixels) of the detector's windows along each axis."""
    height, width = input_size
    xs = np.arange(0, width - SQUARE + 1, WINDOW_STRIDE, dtype=np.float32) + SQUARE / 2
    ys = np.arange(0, height - SQUARE + 1, WINDOW_STRIDE, dtype=np.float32) + SQUARE / 2
    return xs, ys


def anchor_boxes(input_size: tuple[int, int]) -> np.ndarray:
    """(1, 4, A) cx, cy, w, h of every window, row by row (the order AveragePool's output flattens in)."""
    xs, ys = window_centres(input_size)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    side = np.full(cx.size, SQUARE, np.float32)
    return np.stack([cx.ravel(), cy.ravel(), side, side])[None].astype(np.float32)


def _colour_weights() -> tuple[np.ndarray, np.ndarray]:
    """1x1 convolution (nc, 3, 1, 1) and bias (nc,) giving GAIN * (own - others) - OFFSET per class."""
    weights = np.full((len(CLASS_NAMES), 3, 1, 1), -MASK_GAIN, np.float32)
    for class_id, label in enumerate(CLASS_NAMES):
        weights[class_id, _RGB_INDEX[label]] = MASK_GAIN
    return weights, np.full(len(CLASS_NAMES), -MASK_OFFSET, np.float32)


def build_shape_detector(path: Path, input_size: tuple[int, int] = SHAPES_SIZE) -> Path:
    """Write the shape detector for (height, width) `input_size` to `path` (.onnx) and return it.

    The batch dimension is symbolic, so the runtime may infer several cameras' frames in one call.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = input_size
    if height < SQUARE or width < SQUARE:
        raise ValueError(f"input_size {input_size} is smaller than the {SQUARE} px squares")
    classes = len(CLASS_NAMES)
    boxes = anchor_boxes(input_size)
    anchors = boxes.shape[2]
    weights, bias = _colour_weights()

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    initializers = [
        const("colour_w", weights), const("colour_b", bias),
        const("zero", np.array(0, np.float32)), const("one", np.array(1, np.float32)),
        const("power", np.array(SCORE_POWER, np.float32)),
        const("scores_shape", np.array([0, classes, anchors], np.int64)),
        const("anchors", boxes), const("batch_start", np.array([0], np.int64)),
        const("batch_end", np.array([1], np.int64)), const("box_dims", np.array([4, anchors], np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "colour_w", "colour_b"], ["colour"]),
        helper.make_node("Clip", ["colour", "zero", "one"], ["mask"]),
        # the window average in two separable passes: rows, then columns
        helper.make_node("AveragePool", ["mask"], ["rows"], kernel_shape=[1, SQUARE], strides=[1, WINDOW_STRIDE]),
        helper.make_node("AveragePool", ["rows"], ["coverage"], kernel_shape=[SQUARE, 1],
                         strides=[WINDOW_STRIDE, 1]),
        helper.make_node("Pow", ["coverage", "power"], ["window_scores"]),
        helper.make_node("Reshape", ["window_scores", "scores_shape"], ["scores"]),
        helper.make_node("Shape", ["images"], ["input_shape"]),
        helper.make_node("Slice", ["input_shape", "batch_start", "batch_end"], ["batch"]),
        helper.make_node("Concat", ["batch", "box_dims"], ["boxes_shape"], axis=0),
        helper.make_node("Expand", ["anchors", "boxes_shape"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "shape_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + classes, anchors])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="yolo_edge_tools.shapes")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    helper.set_model_props(model, _metadata(input_size))
    onnx.save(model, str(path))
    return path


def _metadata(input_size: tuple[int, int]) -> dict[str, str]:
    """Ultralytics-style metadata (values written with str(), as Ultralytics writes them)."""
    names = dict(enumerate(CLASS_NAMES))
    return {
        "description": "yolo-edge shape detector: red and green squares of 48 px (tests only)",
        "author": "yolo_edge_tools.shapes",
        "task": "detect",
        "stride": str(WINDOW_STRIDE),
        "imgsz": str([input_size[0], input_size[1]]),
        "names": str(names),
        "half": "False",
    }
