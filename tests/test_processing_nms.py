"""NMS: why it stays in NumPy, and what it must keep doing.

Measured against OpenCV's `cv2.dnn.NMSBoxesBatched` and torchvision (issue 14): OpenCV is faster only
below ~500 candidates (under 2 ms either way), 20-60x slower on a heavy head (8400 candidates: it has no
way to stop at max_det kept boxes, where `processing.nms` stops), and it does not give the same boxes:
it computes IoU in double and keeps a box at an IoU that torchvision's float32 arithmetic (Ultralytics'
reference) puts above the threshold, and it lets zero-area duplicates suppress each other. The tests
below pin those cases, and `processing.nms` on a heavy head against torchvision.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yolo_edge import processing as P

pytestmark = pytest.mark.runtime

# IoU 63 / 210 = 0.3 exactly in reals; in float32 it is 0.30000001 > 0.3, so torchvision suppresses.
IOU_AT_THRESHOLD = np.array([[4, 11, 18, 25], [9, 16, 20, 23]], np.float32)
# Two identical empty boxes: their IoU is 0 / 0 (NaN), which never suppresses in torchvision.
ZERO_AREA = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)


def heavy_head(rng: np.random.Generator, count: int = 8400, num_classes: int = 80, offset: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates like a random head at class_bias -1.0: every anchor scores, clustered boxes, many classes;
    boxes offset per class as decode_detections passes them."""
    centres = rng.uniform(0, 640, (count // 20 + 1, 2))
    centre = centres[rng.integers(0, len(centres), count)] + rng.normal(0, 8, (count, 2))
    size = rng.uniform(10, 120, (count, 2))
    boxes = np.hstack([centre - size / 2, centre + size / 2]).astype(np.float32)
    classes = rng.integers(0, num_classes, count)
    if offset:
        boxes = (boxes + classes[:, None] * P.CLASS_OFFSET).astype(np.float32)
    scores = (0.25 + 0.1 * rng.random(count)).astype(np.float32)
    return boxes, scores, classes


def opencv_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    try:
        nms_batched = cv2.dnn.NMSBoxesBatched
    except AttributeError:
        pytest.skip("this OpenCV has no dnn.NMSBoxesBatched (added in 4.6)")
    rects = boxes.astype(np.float64)
    rects[:, 2:] -= rects[:, :2]  # x, y, w, h
    kept = nms_batched(rects, scores, np.zeros(len(boxes), np.int32), 0.0, threshold)
    return np.asarray(kept, np.int64).reshape(-1)


def test_nms_of_no_boxes_is_empty():
    empty = np.zeros((0, 4), np.float32)
    for classes in (None, np.zeros(0, np.int64)):
        kept = P.nms(empty, np.zeros(0, np.float32), 0.5, 10, classes)
        assert kept.dtype == np.int64 and kept.tolist() == []


def test_equal_scores_keep_index_order_before_and_after_the_max_keep_cut():
    corners = np.arange(12, dtype=np.float32)[:, None] * 20  # disjoint boxes, all kept
    boxes = np.hstack([corners, corners, corners + 10, corners + 10])
    scores = np.array([0.5, 0.9] * 6, np.float32)
    classes = np.array([0, 1, 2] * 4)
    best_first = [1, 3, 5, 7, 9, 11, 0, 2, 4, 6, 8, 10]
    assert P.nms(boxes, scores, 0.5).tolist() == best_first
    assert P.nms(boxes, scores, 0.5, None, classes).tolist() == best_first
    assert P.nms(boxes, scores, 0.5, 8, classes).tolist() == best_first[:8]


def test_iou_equal_to_the_threshold_in_reals_is_judged_in_float32():
    scores = np.array([0.9, 0.8], np.float32)
    assert P.nms(IOU_AT_THRESHOLD, scores, 0.3).tolist() == [0]
    assert P.nms(IOU_AT_THRESHOLD, scores, 0.31).tolist() == [0, 1]


def test_zero_area_boxes_do_not_suppress_each_other():
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert P.nms(ZERO_AREA, scores, 0.5).tolist() == [0, 1, 2]


def test_opencv_nms_is_not_the_same_boxes():
    """The reason `processing.nms` does not use OpenCV; if this fails, OpenCV now agrees on these cases
    and can be measured again (it would still need to be faster on a heavy head)."""
    assert opencv_nms(IOU_AT_THRESHOLD, np.array([0.9, 0.8], np.float32), 0.3).tolist() == [0, 1]
    assert opencv_nms(ZERO_AREA, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist() == [0, 2]


@pytest.mark.parametrize("threshold", [0.45, 0.7])
def test_class_aware_nms_of_a_heavy_head_equals_one_pass_over_offset_boxes(threshold):
    boxes, scores, classes = heavy_head(np.random.default_rng(3), count=3000)
    whole = P.nms(boxes, scores, threshold)  # classes apart only through the offset, as Ultralytics does
    np.testing.assert_array_equal(P.nms(boxes, scores, threshold, None, classes), whole)
    np.testing.assert_array_equal(P.nms(boxes, scores, threshold, 300, classes), whole[:300])


@pytest.mark.parametrize("num_classes", [1, 80])
def test_nms_of_a_heavy_head_equals_torchvision(num_classes):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes, scores, classes = heavy_head(np.random.default_rng(num_classes), num_classes=num_classes)
    for threshold in (0.45, 0.7):
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)[:300]
        np.testing.assert_array_equal(P.nms(boxes, scores, threshold, 300, classes), expected.numpy())


def duplicates_around_few_objects(rng: np.random.Generator, objects: int = 30, per_object: int = 100
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates like a trained head in a crowded scene: many near-copies of each object's box, so most
    are suppressed (NMS gives up looking for max_keep kept boxes across classes and solves each class)."""
    count = objects * per_object
    centres = np.repeat(rng.uniform(50, 590, (objects, 2)), per_object, 0) + rng.normal(0, 3, (count, 2))
    sizes = np.repeat(rng.uniform(20, 150, (objects, 2)), per_object, 0) * rng.normal(1, 0.05, (count, 2))
    classes = np.repeat(rng.integers(0, 5, objects), per_object)
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]) + classes[:, None] * P.CLASS_OFFSET
    return boxes.astype(np.float32), rng.random(count).astype(np.float32), classes


@pytest.mark.parametrize("threshold", [0.45, 0.7])
@pytest.mark.parametrize("corpus", ["mostly kept", "mostly suppressed"])
def test_class_aware_nms_stops_early_or_gives_up_with_the_same_boxes(threshold, corpus):
    """A heavy head keeps most candidates (max_keep is reached after a few hundred, looked at across
    classes); duplicates around a few objects keep few (each class is solved alone). Both equal one
    greedy pass over the offset boxes, cut at max_keep."""
    rng = np.random.default_rng(11)
    boxes, scores, classes = heavy_head(rng) if corpus == "mostly kept" else duplicates_around_few_objects(rng)
    whole = P.nms(boxes, scores, threshold)
    for max_keep in (1, 50, 300):
        np.testing.assert_array_equal(P.nms(boxes, scores, threshold, max_keep, classes), whole[:max_keep])
