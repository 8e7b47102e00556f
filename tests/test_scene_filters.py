"""Detection filters: classes by name or id, min_score, min_area/max_area in pixels or as a fraction of the frame,
and every bad value named by its full config key."""

from __future__ import annotations

import numpy as np
import pytest

from yolo_edge.config import ConfigError
from yolo_edge.scene.filters import DetectionFilter

pytestmark = pytest.mark.runtime

NAMES = {0: "person", 1: "car", 2: "truck"}
FRAME = (100, 200)  # height, width: 20,000 px


def test_classes_by_name_id_or_comma_separated_string():
    by_list = DetectionFilter.from_mapping("cameras.dock-1.filters", {"classes": ["person", 2]})
    by_text = DetectionFilter.from_mapping("cameras.dock-1.filters", {"classes": "person, 2"})
    assert by_list.classes == ("person", 2)
    assert by_text.classes == ("person", 2)
    assert by_list.class_ids(NAMES) == frozenset({0, 2})
    assert DetectionFilter(classes=("Truck", "CAR")).class_ids(NAMES) == frozenset({1, 2})
    assert DetectionFilter().class_ids(NAMES) is None


def test_unknown_class_name_or_id_names_the_key_and_the_model_classes():
    with pytest.raises(ConfigError) as raised:
        DetectionFilter.from_mapping("cameras.dock-1.filters", {"classes": ["person", "bus"]}).class_ids(NAMES)
    assert raised.value.key == "cameras.dock-1.filters.classes"
    assert raised.value.value == "bus"
    assert raised.value.allowed == "one of the model's classes: 0 person, 1 car, 2 truck"
    with pytest.raises(ConfigError) as raised:
        DetectionFilter.from_mapping("filters", {"classes": [7]}).class_ids(NAMES)
    assert (raised.value.key, raised.value.value) == ("filters.classes", 7)


def test_keep_by_class_and_score():
    boxes = np.array([[0, 0, 10, 10]] * 4, dtype=np.float64)
    scores = np.array([0.9, 0.3, 0.5, 0.49])
    class_ids = np.array([0, 0, 1, 2])
    only_people = DetectionFilter(classes=("person",))
    assert only_people.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [True, True, False, False]
    sure = DetectionFilter(min_score=0.5)
    assert sure.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [True, False, True, False]


def test_area_as_fraction_of_the_frame_and_in_pixels():
    # areas 900, 1000, 4000, 5000 px in a 20,000 px frame
    boxes = np.array([[0, 0, 30, 30], [0, 0, 50, 20], [10, 10, 90, 60], [0, 0, 100, 50]], dtype=np.float64)
    scores = np.ones(4)
    class_ids = np.zeros(4, dtype=np.int64)
    fraction = DetectionFilter.from_mapping("f", {"min_area": 0.05, "max_area": "0.2"})  # 1,000 to 4,000 px
    assert fraction.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [False, True, True, False]
    pixels = DetectionFilter.from_mapping("f", {"min_area": 901, "max_area": 5000})
    assert pixels.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [False, True, True, True]
    only_max = DetectionFilter(max_area=999.0)
    assert only_max.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [True, False, False, False]
    whole_frame = DetectionFilter(max_area=1.0)
    assert whole_frame.keep(boxes, scores, class_ids, FRAME, NAMES).tolist() == [True] * 4


def test_empty_filter_keeps_everything_including_no_detections():
    empty = DetectionFilter.from_mapping("f", None)
    assert empty.is_empty
    assert DetectionFilter.from_mapping("f", {}).is_empty
    assert not DetectionFilter(min_score=0.1).is_empty
    assert not DetectionFilter(classes=(0,)).is_empty
    assert empty.keep(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), FRAME, NAMES).tolist() == []
    boxes = np.array([[0, 0, 1, 1], [5, 5, 200, 100]], dtype=np.float64)
    kept = empty.keep(boxes, np.array([0.0, 1.0]), np.array([9, 0]), FRAME, NAMES)
    assert kept.tolist() == [True, True]


@pytest.mark.parametrize(("value", "key", "bad"), [
    ({"min_score": 1.5}, "cameras.a.filters.min_score", 1.5),
    ({"min_score": "high"}, "cameras.a.filters.min_score", "high"),
    ({"min_area": -1}, "cameras.a.filters.min_area", -1),
    ({"max_area": True}, "cameras.a.filters.max_area", True),
    ({"min_area": 0.5, "max_area": 0.25}, "cameras.a.filters.max_area", 0.25),
    ({"min_area": 500, "max_area": 100}, "cameras.a.filters.max_area", 100),
    ({"classes": {"person": 1}}, "cameras.a.filters.classes", {"person": 1}),
    ({"classes": [1.5]}, "cameras.a.filters.classes", 1.5),
    ({"classes": [-1]}, "cameras.a.filters.classes", -1),
    ({"min_scor": 0.5}, "cameras.a.filters.min_scor", 0.5),
    ("person", "cameras.a.filters", "person"),
])
def test_bad_values_name_the_full_key(value, key, bad):
    with pytest.raises(ConfigError) as raised:
        DetectionFilter.from_mapping("cameras.a.filters", value)
    assert (raised.value.key, raised.value.value) == (key, bad)


def test_min_and_max_area_in_different_units_are_not_compared():
    mixed = DetectionFilter.from_mapping("f", {"min_area": 500, "max_area": 0.5})
    assert (mixed.min_area, mixed.max_area) == (500.0, 0.5)
