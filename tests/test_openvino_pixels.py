"""OpenVINO takes detection and segmentation frames as they are (letterboxed BGR, uint8) and converts them
in its own graph (backends/openvino_pixels): the same outputs as the model fed numpy's planes, within
float rounding; a converted model kept in the cache, made again when it is gone, and compiled as it is
where the cache cannot keep it. Skipped where openvino is not installed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import asset_images

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, load_backend
from yolo_edge.backends.base import InputLayout
from yolo_edge.predictor import PostprocessSettings, Predictor

ov = pytest.importorskip("openvino")

SIZE = 320
# Measured on bus.jpg and zidane.jpg against the model fed numpy's planes: box coordinates within 0.002
# model px (0.008 at 640), class scores and mask coefficients within 5e-5, prototypes within 1.3e-4 (320).
BOX_TOLERANCE_PX = 0.01
SCORE_TOLERANCE = 1e-4
PROTOTYPE_TOLERANCE = 5e-4


def images() -> list[np.ndarray]:
    return [image for image in (cv2.imread(str(path)) for path in asset_images()) if image is not None]


def openvino(path: Path, **options: object) -> Predictor:
    backend = load_backend(path, BackendOptions(device="cpu", runtime="openvino", input_size=(SIZE, SIZE),
                                                **options))  # type: ignore[arg-type]
    return Predictor(backend, PostprocessSettings())


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_frames_go_in_as_they_are_and_give_the_outputs_of_numpys_planes(task: str, random_model, tmp_path,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", str(tmp_path))
    path = random_model(task, SIZE)
    predictor = openvino(path)
    assert predictor.info.input_layout is InputLayout.BGR_PIXELS and predictor.info.input_dtype == "uint8"
    planes_model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for image in images():
        prepared = predictor.prepare(image)
        tensor = prepared.tensor
        assert isinstance(tensor, np.ndarray)
        assert tensor.shape == (1, SIZE, SIZE, 3) and tensor.dtype == np.uint8
        np.testing.assert_array_equal(tensor[0], processing.letterbox(image, (SIZE, SIZE))[0])
        ours = predictor.backend.infer(tensor)
        theirs = planes_model(processing.preprocess(image, (SIZE, SIZE))[0])
        for index, reference in enumerate(theirs.values()):
            if index == 0:  # (1, 4 + classes [+ mask coefficients], anchors): box rows, then the rest
                np.testing.assert_allclose(ours[0][:, :4], reference[:, :4], rtol=0, atol=BOX_TOLERANCE_PX)
                np.testing.assert_allclose(ours[0][:, 4:], reference[:, 4:], rtol=0, atol=SCORE_TOLERANCE)
            else:  # segmentation prototypes
                np.testing.assert_allclose(ours[index], reference, rtol=0, atol=PROTOTYPE_TOLERANCE)


def test_classification_keeps_its_planes(random_model) -> None:
    predictor = openvino(random_model("classify", 224))
    assert predictor.info.input_layout is InputLayout.RGB_PLANES and predictor.info.input_dtype == "float32"
    tensor = predictor.prepare(images()[0]).tensor
    assert isinstance(tensor, np.ndarray) and tensor.shape == (1, 3, 224, 224) and tensor.dtype == np.float32


def test_bf16_keeps_numpys_planes(random_model) -> None:
    """In bf16 OpenVINO would convert the pixels in bf16 too, and move boxes against Ultralytics' own
    export run in bf16 (tests/test_equivalence_openvino.py holds that to IoU >= 0.99)."""
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no BF16 support in OpenVINO")
    predictor = openvino(random_model("detect", SIZE), precision="bf16")
    assert predictor.info.input_layout is InputLayout.RGB_PLANES and predictor.info.precision == "bf16"


def test_float_planes_are_refused_with_what_the_model_takes(random_model) -> None:
    backend = openvino(random_model("detect", SIZE)).backend
    planes = processing.preprocess(images()[0], (SIZE, SIZE))[0]
    with pytest.raises(ValueError, match=r"takes letterboxed BGR frames, \(N, H, W, 3\) uint8 .*got \(1, 3, 320, "
                                         r"320\) float32"):
        backend.infer(planes)


def test_the_kept_model_is_made_again_when_it_is_gone(random_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", str(tmp_path))
    path = random_model("detect", SIZE)
    frame = processing.preprocess_pixels(images()[0], (SIZE, SIZE))[0]
    first = openvino(path).backend.infer(frame)
    (kept,) = (tmp_path / "openvino" / "pixels").glob("*.xml")
    assert kept.with_suffix(".bin").is_file()
    assert not list(kept.parent.glob("*.tmp.*"))
    kept.unlink()  # the facts are still there: the model is read and converted again
    again = openvino(path).backend.infer(frame)
    assert kept.is_file()
    for ours, theirs in zip(again, first):
        np.testing.assert_array_equal(ours, theirs)


def test_a_cache_that_cannot_keep_the_converted_model_only_costs_a_conversion(random_model, tmp_path,
                                                                              monkeypatch, caplog) -> None:
    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", str(tmp_path))
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "pixels").write_text("a file where the folder would be")
    path = random_model("detect", SIZE)
    frame = processing.preprocess_pixels(images()[0], (SIZE, SIZE))[0]
    with caplog.at_level(logging.INFO, logger="yolo_edge.backends.openvino_pixels"):
        blocked = openvino(path)
    assert "cannot keep the converted OpenVINO model" in caplog.text
    assert blocked.info.input_layout is InputLayout.BGR_PIXELS
    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", "off")
    uncached = openvino(path)
    for ours, theirs in zip(blocked.backend.infer(frame), uncached.backend.infer(frame)):
        np.testing.assert_array_equal(ours, theirs)


def test_a_dynamic_model_is_converted_after_its_reshape(random_model: Callable[..., Path]) -> None:
    predictor = openvino(random_model("detect", SIZE, dynamic=True), performance="latency")
    assert predictor.info.input_layout is InputLayout.BGR_PIXELS and predictor.info.max_batch > 1
    batch = np.concatenate([processing.preprocess_pixels(image, (SIZE, SIZE))[0] for image in images()])
    outputs = predictor.backend.infer(batch)
    for row, image in enumerate(images()):
        alone = predictor.backend.infer(processing.preprocess_pixels(image, (SIZE, SIZE))[0])
        np.testing.assert_allclose(outputs[0][row:row + 1], alone[0], rtol=1e-4, atol=1e-3)
