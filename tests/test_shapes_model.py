"""The moving-squares fixture (yolo_edge_tools.shapes): its hand-built ONNX detector, run through the real
ONNX Runtime backend and the runtime's post-processing on a real MJPG video, gives exactly the ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest

from yolo_edge.backends import BackendOptions, load_backend
from yolo_edge.predictor import PostprocessSettings, Predictor
from yolo_edge.processing import Detections, box_iou
from yolo_edge_tools.shapes import (
    CLASS_NAMES,
    LOITER_REGION,
    MIN_GAP,
    SHAPES_CONF,
    SHAPES_FPS,
    SHAPES_IOU,
    SHAPES_SIZE,
    SQUARE,
    WINDOW_STRIDE,
    ShapePath,
    build_shape_detector,
    crossing_scene,
    draw_frame,
    fully_visible,
    shape_boxes,
    write_shapes_video,
)

# Two squares passing each other in lanes 32 px apart, one standing still, one crossing top to bottom once
# the lanes are empty; every square enters and leaves the frame except the one standing still.
TEST_SCENE = [
    ShapePath("red", (-SQUARE, 40), (320, 40), 0, 40, name="left-to-right"),
    ShapePath("green", (320, 120), (-SQUARE, 120), 0, 40, name="right-to-left"),
    ShapePath("red", (16, 200), (16, 200), 10, 70, name="still"),
    ShapePath("green", (136, -SQUARE), (136, 320), 42, 80, name="top-to-bottom"),
]
TEST_FRAMES = 85
SCENES = {"test": (TEST_SCENE, TEST_FRAMES), "crossing": crossing_scene()}
WHOLE_SQUARES = {"test": 148, "crossing": 110}  # fully visible squares over all frames (the scenes' geometry)
MAX_BOX_ERROR = WINDOW_STRIDE / 2  # pixels: the nearest window is at most half a step away


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shape_detector(tmp_path_factory.mktemp("shapes") / "shapes.onnx")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {name: write_shapes_video(folder / f"{name}.avi", paths, frames) for name, (paths, frames) in SCENES.items()}


def read_frames(video: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def predictor(model: Path, conf: float) -> Predictor:
    return Predictor(load_backend(model, BackendOptions(device="cpu")), PostprocessSettings(conf, SHAPES_IOU))


@dataclass
class Tally:
    """What a scene's frames gave: problems found, squares checked, the largest box error seen."""

    problems: list[str] = field(default_factory=list)
    whole_squares: int = 0
    partial_detections: int = 0
    max_error: float = 0.0


def check_frame(index: int, result: Detections, truth: list[tuple[str, tuple[float, float, float, float]]],
                tally: Tally) -> None:
    """One detection per whole square (right class, box within MAX_BOX_ERROR), at most one per square cut
    by the frame's edge, none anywhere else."""
    owners = []  # the ground-truth square each detection belongs to
    for box, class_id in zip(result.boxes, result.class_ids):
        label = CLASS_NAMES[int(class_id)]
        matches = [i for i, (truth_label, truth_box) in enumerate(truth)
                   if truth_label == label and box_iou(np.array(truth_box, np.float32), box[None])[0] > 0.5]
        if len(matches) != 1:
            tally.problems.append(f"frame {index}: {label} {box.tolist()} matches {len(matches)} squares")
        owners.extend(matches[:1])
    for i, (label, truth_box) in enumerate(truth):
        mine = [k for k, owner in enumerate(owners) if owner == i]
        if not fully_visible(truth_box):
            tally.partial_detections += len(mine)
            if len(mine) > 1:
                tally.problems.append(f"frame {index}: {label} {truth_box} at the edge detected {len(mine)} times")
            continue
        tally.whole_squares += 1
        if len(mine) != 1:
            tally.problems.append(f"frame {index}: {label} {truth_box} detected {len(mine)} times")
            continue
        error = float(np.abs(result.boxes[mine[0]] - np.array(truth_box)).max())
        tally.max_error = max(tally.max_error, error)
        if error > MAX_BOX_ERROR:
            tally.problems.append(f"frame {index}: {label} {truth_box} found at {result.boxes[mine[0]].tolist()}")


def whole_squares(paths: list[ShapePath], frames: int) -> int:
    return sum(fully_visible(box) for i in range(frames) for _, box in shape_boxes(paths, i, SHAPES_SIZE))


@pytest.mark.parametrize("scene", sorted(SCENES))
@pytest.mark.parametrize("conf", [SHAPES_CONF - 0.1, SHAPES_CONF, SHAPES_CONF + 0.1])
def test_every_frame_gives_the_ground_truth(detector: Path, videos: dict[str, Path], scene: str,
                                            conf: float) -> None:
    """Through the real backend and NMS, at SHAPES_CONF and 0.1 either side of it (the margin)."""
    paths, frames = SCENES[scene]
    model = predictor(detector, conf)
    tally = Tally()
    read = 0
    for index, frame in enumerate(read_frames(videos[scene])):
        result = model.predict(frame).result
        assert isinstance(result, Detections)
        check_frame(index, result, shape_boxes(paths, index, SHAPES_SIZE), tally)
        read += 1
    assert read == frames
    assert tally.problems == []
    assert tally.whole_squares == whole_squares(paths, frames) == WHOLE_SQUARES[scene]
    assert tally.max_error <= MAX_BOX_ERROR


def test_nothing_is_detected_on_an_empty_frame_or_an_empty_scene(detector: Path) -> None:
    model = predictor(detector, SHAPES_CONF)
    assert len(model.predict(draw_frame([], 0, SHAPES_SIZE)).result) == 0
    white = np.full((*SHAPES_SIZE, 3), 255, np.uint8)
    assert len(model.predict(white).result) == 0


def test_the_model_loads_as_an_ultralytics_detect_model(detector: Path) -> None:
    backend = load_backend(detector, BackendOptions(device="cpu"))
    info = backend.info
    written = onnxruntime.InferenceSession(str(detector)).get_modelmeta().custom_metadata_map
    assert {key: written[key] for key in ("task", "names", "imgsz", "stride")} == {
        "task": "detect", "names": "{0: 'red', 1: 'green'}", "imgsz": "[320, 320]", "stride": str(WINDOW_STRIDE)}
    assert (info.task, info.names, info.input_shape, info.format) == ("detect", {0: "red", 1: "green"}, SHAPES_SIZE,
                                                                      "onnx")
    windows = ((SHAPES_SIZE[0] - SQUARE) // WINDOW_STRIDE + 1) * ((SHAPES_SIZE[1] - SQUARE) // WINDOW_STRIDE + 1)
    frame = draw_frame([ShapePath("green", (100, 60), (100, 60), 0, 0)], 0, SHAPES_SIZE)
    tensor = frame[None, ..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255
    (output,) = backend.infer(tensor)
    assert output.shape == (1, 4 + len(CLASS_NAMES), windows)
    best = int(output[0, 5].argmax())
    assert output[0, :4, best].tolist() == [100 + SQUARE / 2, 60 + SQUARE / 2, SQUARE, SQUARE]
    assert output[0, 5, best] == 1.0 and output[0, 4].max() == 0.0  # a clean frame: a whole window of green


def test_frames_of_several_cameras_are_inferred_in_one_batch(detector: Path) -> None:
    """The batch dimension is symbolic: the runtime's multi-camera batching works on this model too."""
    model = predictor(detector, SHAPES_CONF)
    paths, _ = crossing_scene()
    frames = [draw_frame(paths, index, SHAPES_SIZE) for index in (20, 30, 40)]
    assert model.info.max_batch > 1
    batch = model.infer_batch([model.prepare(frame) for frame in frames])
    alone = [model.predict(frame) for frame in frames]
    assert [p.batch_size for p in batch] == [3, 3, 3]
    for together, single in zip(batch, alone):
        assert isinstance(together.result, Detections) and isinstance(single.result, Detections)
        np.testing.assert_array_equal(together.result.boxes, single.result.boxes)
        np.testing.assert_array_equal(together.result.class_ids, single.result.class_ids)


def test_other_input_sizes_build_and_detect(tmp_path: Path) -> None:
    size = (240, 320)
    model = predictor(build_shape_detector(tmp_path / "wide.onnx", size), SHAPES_CONF)
    assert model.info.input_shape == size
    result = model.predict(draw_frame([ShapePath("red", (250, 170), (250, 170), 0, 0)], 0, size)).result
    assert isinstance(result, Detections)
    assert result.boxes.tolist() == [[250, 170, 250 + SQUARE, 170 + SQUARE]] and result.class_ids.tolist() == [0]


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_the_videos_read_back_with_every_frame(videos: dict[str, Path], scene: str) -> None:
    paths, frames = SCENES[scene]
    capture = cv2.VideoCapture(str(videos[scene]))
    assert capture.isOpened()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(SHAPES_FPS)
    capture.release()
    read = list(read_frames(videos[scene]))
    assert len(read) == frames
    assert all(frame.shape == (*SHAPES_SIZE, 3) for frame in read)
    drawn = draw_frame(paths, 30, SHAPES_SIZE).astype(np.int16)
    assert np.abs(read[30].astype(np.int16) - drawn).mean() < 2  # MJPG is lossy, but close


def test_shape_boxes_clip_to_the_frame_and_skip_squares_outside_it() -> None:
    paths = [ShapePath("red", (-SQUARE, 10), (-SQUARE, 10), 0, 5), ShapePath("green", (-20, 300), (-20, 300), 0, 5),
             ShapePath("red", (100.4, 20.5), (100.4, 20.5), 0, 5), ShapePath("green", (0, 0), (0, 0), 6, 9)]
    assert shape_boxes(paths, 3, SHAPES_SIZE) == [("green", (0.0, 300.0, 28.0, 320.0)),
                                                  ("red", (100.0, 21.0, 148.0, 69.0))]
    assert not fully_visible((0.0, 300.0, 28.0, 320.0)) and fully_visible((100.0, 21.0, 148.0, 69.0))
    moving = ShapePath("red", (0, 0), (100, 50), 10, 20)
    assert [moving.top_left(i) for i in (10, 15, 20)] == [(0, 0), (50, 25), (100, 50)]
    assert shape_boxes([moving], 9, SHAPES_SIZE) == [] and shape_boxes([moving], 21, SHAPES_SIZE) == []


@pytest.mark.parametrize(("label", "frames", "message"), [
    ("blue", (0, 1), "label 'blue' is not a detector class"),
    ("red", (5, 4), "frames 5..4"),
    ("red", (-1, 4), "frames -1..4"),
])
def test_bad_paths_are_refused(label: str, frames: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShapePath(label, (0, 0), (0, 0), *frames)


# --- the crossing scene's promises (what the events tests rely on) ------------------------------------

def object_positions(paths: list[ShapePath], frames: int) -> dict[str, dict[int, tuple[int, int]]]:
    """Per object name, frame -> top-left of its square (every frame it is drawn in, once)."""
    positions: dict[str, dict[int, tuple[int, int]]] = {}
    for path in paths:
        for index in range(path.start_frame, min(path.end_frame, frames - 1) + 1):
            track = positions.setdefault(path.name, {})
            assert index not in track, f"object {path.name} is drawn twice in frame {index}"
            track[index] = path.top_left(index)
    return positions


def inside_frame(x: int, y: int) -> bool:
    return x > -SQUARE and y > -SQUARE and x < SHAPES_SIZE[1] and y < SHAPES_SIZE[0]


def test_crossing_scene_objects_cross_the_middle_once_each() -> None:
    paths, frames = crossing_scene()
    positions = object_positions(paths, frames)
    assert sorted(positions) == ["a", "b", "c"] and 60 <= frames <= 90
    middle = SHAPES_SIZE[1] / 2
    directions = {}
    for name, track in positions.items():
        indices = sorted(track)
        assert indices == list(range(indices[0], indices[-1] + 1)), f"{name} skips frames"
        assert not inside_frame(*track[indices[0]]) and not inside_frame(*track[indices[-1]]), name
        sides = [track[i][0] + SQUARE / 2 > middle for i in indices]  # the box centre's side of x = 160
        changes = [i for i in range(1, len(sides)) if sides[i] != sides[i - 1]]
        assert len(changes) == 1, f"{name} crosses the middle {len(changes)} times"
        directions[name] = "left_to_right" if sides[-1] else "right_to_left"
        steps = [abs(track[b][0] - track[a][0]) + abs(track[b][1] - track[a][1]) for a, b in zip(indices, indices[1:])]
        assert max(steps) <= 12, f"{name} jumps {max(steps)} px in one frame"
    assert directions == {"a": "left_to_right", "b": "right_to_left", "c": "left_to_right"}
    last_drawn = max(path.end_frame for path in paths)
    assert all(shape_boxes(paths, i, SHAPES_SIZE) == [] for i in range(last_drawn, frames))
    assert frames - last_drawn >= 20  # time for tracks to end before the video does


def test_crossing_scene_squares_never_come_close() -> None:
    paths, frames = crossing_scene()
    for index in range(frames):
        boxes = [box for _, box in shape_boxes(paths, index, SHAPES_SIZE)]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                assert gap >= MIN_GAP, f"frame {index}: {a} and {b} are {gap} px apart"


def test_crossing_scene_a_stops_in_the_top_left_quadrant_for_over_two_seconds() -> None:
    paths, frames = crossing_scene()
    positions = object_positions(paths, frames)
    assert (0, 0, SHAPES_SIZE[1] // 2, SHAPES_SIZE[0] // 2) == LOITER_REGION
    x1, y1, x2, y2 = LOITER_REGION

    def in_region(x: int, y: int) -> bool:  # the whole square, so its bottom centre and box are in it
        return x >= x1 and y >= y1 and x + SQUARE <= x2 and y + SQUARE <= y2

    still = [i for i, at in positions["a"].items() if at == (56, 24)]
    assert still == list(range(12, 38)) and len(still) / SHAPES_FPS >= 2.0
    assert in_region(56, 24)
    assert all(not in_region(*at) for name in ("b", "c") for at in positions[name].values())
