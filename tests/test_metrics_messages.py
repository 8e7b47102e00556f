from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_edge import messages
from yolo_edge.backends import ModelInfo
from yolo_edge.metrics import RollingFPS, RunStats, percentiles
from yolo_edge.processing import Classification, Detections

pytestmark = pytest.mark.runtime

INFO = ModelInfo(name="m.onnx", format="onnx", runtime="onnxruntime x", device="cpu", task="detect",
                 input_shape=(640, 640), names={0: "person", 1: "bus"})


def test_rolling_fps_counts_delivered_frames_per_second():
    fps = RollingFPS(window=10)
    for i in range(20):
        fps.tick(i * 0.05)
    assert fps.value == pytest.approx(20.0)


def test_percentiles_and_run_stats():
    assert percentiles([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
    stats = RunStats()
    stats.reset(0.0)
    for i in range(100):
        stats.record(i * 0.1, 1.0, float(i), 2.0)
    summary = stats.latency_summary()
    assert summary["inference"]["p50"] == pytest.approx(49.5)
    assert summary["total"]["p99"] == pytest.approx(98.01 + 3.0)
    assert summary["inference"]["p50"] <= summary["inference"]["p90"] <= summary["inference"]["p99"]
    assert stats.fps() == pytest.approx(10.0)


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


def test_publish_gate_caps_the_rate_without_drifting_below_it():
    from yolo_edge.controller import PublishGate

    gate = PublishGate(10.0)
    allowed = sum(gate.allow(i / 100) for i in range(300))  # 100 frames/s for 3 s
    assert allowed in (30, 31)
    uncapped = PublishGate(0.0)
    assert all(uncapped.allow(i / 100) for i in range(50))
