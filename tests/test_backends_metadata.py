"""The model facts every backend reads the same way (backends/metadata.py): task fallback, class counts
and numbered class names for models without metadata."""

from __future__ import annotations

import numpy as np
import pytest

from yolo_edge.backends import ModelLoadError
from yolo_edge.backends.metadata import (
    class_count,
    classes_from_output,
    infer_task,
    model_task,
    numbered_names,
    parse_metadata,
)

pytestmark = pytest.mark.runtime

DETECT = [(1, 84, 8400)]
SEGMENT = [(1, 116, 8400), (1, 32, 160, 160)]
CLASSIFY = [(1, 1000)]


def test_classes_from_output_takes_the_array_or_its_shape():
    assert classes_from_output(np.zeros((1, 84, 10), np.float32), 0) == 80
    assert classes_from_output((1, 116, 8400), 32) == 80
    assert classes_from_output([1, 7, 21], 0) == 3


@pytest.mark.parametrize(("shapes", "task", "count"), [
    (DETECT, "detect", 80),
    (SEGMENT, "segment", 80),
    (CLASSIFY, "classify", 1000),
    ([(1, 5, 2100)], "detect", 1),
])
def test_class_count_from_output_shapes(shapes, task, count):
    assert class_count(shapes, task) == count


def test_class_count_of_a_dynamic_dimension_is_unknown():
    """ONNX names a dynamic dimension; the count is then not readable."""
    assert class_count([(1, "channels", "anchors")], "detect") is None
    assert class_count([("batch", "classes")], "classify") is None
    assert numbered_names([(1, "channels", "anchors")], "detect") == {}


def test_class_count_with_a_dynamic_mask_dimension_counts_no_masks():
    assert class_count([(1, 116, 8400), (1, "masks", 160, 160)], "segment") == 112


def test_numbered_names():
    assert numbered_names([(1, 7, 2100)], "detect") == {0: "0", 1: "1", 2: "2"}
    assert numbered_names([(1, 3)], "classify") == {0: "0", 1: "1", 2: "2"}
    assert numbered_names([(1, 4, 2100)], "detect") == {}
    assert numbered_names([(1, 2, 2100)], "detect") == {}  # never a negative count


@pytest.mark.parametrize(("shapes", "task"), [(DETECT, "detect"), (SEGMENT, "segment"), (CLASSIFY, "classify")])
def test_infer_task_from_output_shapes(shapes, task):
    assert infer_task(shapes) == task


def test_model_task_prefers_the_metadata():
    assert model_task("m.onnx", "segment", "auto", DETECT) == "segment"
    assert model_task("m.onnx", "segment", "segment", DETECT) == "segment"


def test_model_task_takes_the_configured_task_without_metadata():
    assert model_task("m.onnx", None, "classify", DETECT) == "classify"


def test_model_task_infers_from_shapes_without_metadata_or_configuration():
    assert model_task("m.onnx", None, "auto", SEGMENT) == "segment"
    assert model_task("m.pt", None, "auto", None) == "detect"  # no shapes to read (PyTorch before a run)


def test_model_task_errors_name_the_file_and_the_config_key():
    with pytest.raises(ModelLoadError, match=r"m\.onnx.*'detect' model but config key 'task' asks for 'segment'"):
        model_task("m.onnx", "detect", "segment", DETECT)
    with pytest.raises(ModelLoadError, match=r"m\.onnx.*task 'pose' is not supported"):
        model_task("m.onnx", "pose", "auto", DETECT)


def test_parse_metadata_reads_ultralytics_literals():
    meta = parse_metadata({"task": "Detect", "names": "{0: 'person', 1: 'bicycle'}", "stride": "32",
                           "imgsz": "[480, 640]", "dynamic": "False"})
    assert meta == {"task": "detect", "names": {0: "person", 1: "bicycle"}, "stride": 32, "imgsz": (480, 640),
                    "dynamic": False}
