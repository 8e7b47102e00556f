"""The messages the component publishes: frame fields, classifications, size limits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_edge import messages
from yolo_edge.backends import ModelInfo
from yolo_edge.processing import Classification, Detections

pytestmark = pytest.mark.runtime

INFO = ModelInfo(name="m.onnx", format="onnx", runtime="onnxruntime x", device="cpu", task="detect",
                 input_shape=(640, 640), names={0: "person", 1: "bus"})


def _detections(n: int) -> Detections:
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 600, (n, 4)).astype(np.float32)
    return Detections(boxes, np.linspace(0.9, 0.3, n).astype(np.float32), np.zeros(n, np.int64))


def test_frame_message_fields():
    message = messages.frame_message(seq=3, info=INFO, source="v.avi", frame_shape=(480, 640),
                                     result=_detections(2), preprocess_ms=1.0, inference_ms=20.0,
                                     postprocess_ms=2.0, fps=30.0)
    assert message["type"] == "frame" and message["seq"] == 3
    assert message["timestamp"].endswith("Z") and "T" in message["timestamp"]
    assert message["latency_ms"] == {"preprocess": 1.0, "inference": 20.0, "postprocess": 2.0, "total": 23.0}
    assert message["model"]["input_size"] == [640, 640]
    first = message["detections"][0]
    assert set(first) == {"class_id", "label", "score", "box"} and first["label"] == "person"
    json.loads(messages.encode(message))


def test_classification_message():
    result = Classification(np.array([1, 0]), np.array([0.7, 0.2], np.float32))
    message = messages.frame_message(seq=1, info=INFO, source="s", frame_shape=(10, 10), result=result,
                                     preprocess_ms=0, inference_ms=0, postprocess_ms=0, fps=0)
    assert message["classes"][0] == {"class_id": 1, "label": "bus", "score": 0.7}


def test_oversized_frame_is_truncated_under_the_limit():
    message = messages.frame_message(seq=1, info=INFO, source="s", frame_shape=(480, 640),
                                     result=_detections(1000), preprocess_ms=0, inference_ms=0,
                                     postprocess_ms=0, fps=0)
    payload = messages.encode(message, limit=20_000)
    body = json.loads(payload)
    assert len(payload) <= 20_000 and body["truncated"] is True
    assert 0 < len(body["detections"]) < 1000 and body["detection_count"] == 1000
    assert body["detections"][0]["score"] == pytest.approx(0.9)


def test_batch_of_frames_fits_the_limit():
    frames = [messages.frame_message(seq=i, info=INFO, source="s", frame_shape=(480, 640),
                                     result=_detections(300), preprocess_ms=0, inference_ms=0,
                                     postprocess_ms=0, fps=0) for i in range(5)]
    payload = messages.encode(messages.frames_message(frames), limit=messages.MAX_PAYLOAD_BYTES)
    assert len(payload) <= messages.MAX_PAYLOAD_BYTES
    assert json.loads(payload)["count"] == 5
