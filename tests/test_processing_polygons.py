"""Segmentation polygons are computed only for frames that are published with their detections.

Decoding keeps the instance masks and leaves the polygons pending; the controller finishes them for a
frame that passes the publish gate with `publish_detections` on, and counts their time as
post-processing. Checked on a real exported model, real images and video, and a real Mosquitto.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import asset_images, make_video
from harness import base_config, is_state, running_component

from yolo_edge import messages, processing
from yolo_edge.config import Config
from yolo_edge.frame_step import infer_frame
from yolo_edge.limits import PublishGate
from yolo_edge.metrics import RollingFPS
from yolo_edge.pipeline import FeedFrame
from yolo_edge.predictor import Predictor, load_predictor
from yolo_edge_tools import bench_worker

pytestmark = pytest.mark.runtime

SIZE = 320


class PolygonCalls:
    """Replaces processing.region_polygon with a wrapper that counts calls (from any thread) and may
    sleep in each, so the polygon step's cost is known."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sleep_s: float = 0.0) -> None:
        self.count = 0
        self.sleep_s = sleep_s
        self._lock = threading.Lock()
        self._real = processing.region_polygon
        monkeypatch.setattr(processing, "region_polygon", self)

    def __call__(self, *args, **kwargs) -> np.ndarray:
        with self._lock:
            self.count += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self._real(*args, **kwargs)


class DecodedCounts:
    """Wraps processing.postprocess_segment_deferred to record how many detections each decoded frame had."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.per_frame: list[int] = []
        self._real = processing.postprocess_segment_deferred
        monkeypatch.setattr(processing, "postprocess_segment_deferred", self)

    def __call__(self, *args, **kwargs) -> processing.Detections:
        result = self._real(*args, **kwargs)
        self.per_frame.append(len(result))
        return result


def predictor_for(model: Path, **extra) -> Predictor:
    return load_predictor(Config.from_mapping({"model_loc": str(model), "camera_id": "unused",
                                               "MODEL_HEIGHT": SIZE, "MODEL_WIDTH": SIZE, **extra}))


def real_frames() -> list[np.ndarray]:
    frames = [cv2.imread(str(path)) for path in asset_images()]
    assert all(frame is not None for frame in frames)
    # Also a wide crop, so the letterbox pads the other axis.
    return frames + [cv2.resize(frames[0], (frames[0].shape[1], frames[0].shape[0] // 2))]


def assert_same_polygons(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


# --- processing and predictor -------------------------------------------------------------------------

def deferred_points(instances: int, budget: int) -> int:
    """The per-polygon bound, written out independently of processing.polygon_points_per_instance."""
    return max(processing.MIN_POLYGON_POINTS, min(processing.MAX_POLYGON_POINTS, budget // max(instances, 1)))


@pytest.mark.parametrize("budget", [processing.POLYGON_POINT_BUDGET, 200])
def test_deferred_then_polygonize_equals_postprocess_segment(segment_model, monkeypatch, budget):
    predictor = predictor_for(segment_model)
    calls = PolygonCalls(monkeypatch)
    nc = predictor.info.num_classes
    instances = 0
    for frame in real_frames():
        prepared = predictor.prepare(frame)
        outputs = predictor.backend.infer(prepared.tensor)
        geometry = prepared.geometry
        eager = processing.postprocess_segment(outputs, geometry, nc, 0.25, 0.7, 300, polygon_point_budget=budget)
        calls.count = 0
        deferred = processing.postprocess_segment_deferred(outputs, geometry, nc, 0.25, 0.7, 300,
                                                           polygon_point_budget=budget)
        assert calls.count == 0, "decoding must not compute polygons"
        assert deferred.pending is not None and len(deferred.pending.regions) == len(deferred)
        assert deferred.pending.max_points == processing.polygon_points_per_instance(
            len(deferred), processing.MAX_POLYGON_POINTS, budget)
        np.testing.assert_array_equal(deferred.boxes, eager.boxes)
        np.testing.assert_array_equal(deferred.scores, eager.scores)
        np.testing.assert_array_equal(deferred.class_ids, eager.class_ids)

        finished, elapsed = deferred.with_polygons()
        assert elapsed > 0 and finished.pending is None
        assert deferred.pending is not None, "the one polygon step makes a new result; the decoded one is unchanged"
        assert calls.count == len(deferred)
        assert_same_polygons(finished.masks, eager.masks)
        again, more = finished.with_polygons()
        assert more == 0.0 and again is finished and calls.count == len(deferred), "polygons are made once"
        # The bounded-size rules hold as before.
        assert all(len(p) <= deferred_points(len(deferred), budget) for p in finished.masks)
        assert sum(len(p) for p in finished.masks) <= max(budget, processing.MIN_POLYGON_POINTS * len(deferred))
        instances += len(deferred)
    assert instances > 100, "too few instances for a meaningful comparison"


def test_polygon_points_per_instance_keeps_the_bounds():
    assert processing.polygon_points_per_instance(1) == processing.MAX_POLYGON_POINTS
    assert processing.polygon_points_per_instance(0) == processing.MAX_POLYGON_POINTS
    assert processing.polygon_points_per_instance(300) == 4096 // 300 == 13
    assert processing.polygon_points_per_instance(3000) == processing.MIN_POLYGON_POINTS
    assert processing.polygon_points_per_instance(10, 8, 1000) == 8


def test_reading_masks_of_a_pending_result_refuses_until_the_polygon_step(segment_model, monkeypatch):
    predictor = predictor_for(segment_model)
    frame = real_frames()[0]
    want = predictor.predict(frame).result
    calls = PolygonCalls(monkeypatch)
    result = predictor.infer_and_decode(predictor.prepare(frame)).result
    assert calls.count == 0 and result.pending is not None
    with pytest.raises(processing.PolygonsPending):
        result.masks  # noqa: B018 - never None or stale: a pending result has no masks to read
    assert calls.count == 0
    finished, _ = result.with_polygons()
    assert_same_polygons(finished.masks, want.masks)
    assert calls.count == len(result) > 0 and finished.pending is None


def test_predict_finishes_and_infer_and_decode_defers(segment_model, monkeypatch):
    predictor = predictor_for(segment_model)
    frame = real_frames()[0]
    calls = PolygonCalls(monkeypatch, sleep_s=0.002)
    predicted = predictor.predict(frame)
    assert predicted.finished and calls.count == len(predicted.result) > 10
    assert predicted.postprocess_ms >= calls.count * 2, "predict() must count the polygons as post-processing"

    calls.count = 0
    prediction = predictor.infer_and_decode(predictor.prepare(frame))
    assert not prediction.finished and calls.count == 0
    before, total_before = prediction.postprocess_ms, prediction.total_ms
    finished = prediction.finish()
    added = finished.postprocess_ms - before
    assert calls.count == len(finished.result) and added >= calls.count * 2
    assert finished.total_ms == pytest.approx(total_before + added)
    assert not prediction.finished and prediction.postprocess_ms == before, "finish() returns a new prediction"
    assert finished.finish() is finished and calls.count == len(finished.result), "polygons are made once"
    assert_same_polygons(finished.result.masks, predicted.result.masks)


def test_detect_and_classify_predictions_have_nothing_to_finish(random_model):
    for task, size in (("detect", SIZE), ("classify", 224)):
        predictor = load_predictor(Config.from_mapping({
            "model_loc": str(random_model(task, size, "onnx")), "camera_id": "unused", "MODEL_HEIGHT": size,
            "MODEL_WIDTH": size}))
        prediction = predictor.infer_and_decode(predictor.prepare(real_frames()[0]))
        before = prediction.postprocess_ms
        assert prediction.finished and prediction.finish() is prediction and prediction.postprocess_ms == before


def frame_message(predictor: Predictor, prediction, include_detections: bool = True) -> dict:
    return messages.frame_message(seq=1, info=predictor.info, source="s", frame_shape=(480, 640),
                                  result=prediction.result, preprocess_ms=prediction.preprocess_ms,
                                  inference_ms=prediction.inference_ms, postprocess_ms=prediction.postprocess_ms,
                                  fps=1.0, include_detections=include_detections)


def test_frame_message_never_publishes_pending_polygons(segment_model, monkeypatch):
    predictor = predictor_for(segment_model)
    calls = PolygonCalls(monkeypatch, sleep_s=0.002)
    prediction = predictor.infer_and_decode(predictor.prepare(real_frames()[0]))
    count = len(prediction.result)

    without = frame_message(predictor, prediction, include_detections=False)
    assert calls.count == 0 and not prediction.finished, "no detections published, no polygons needed"
    assert without["detections"] == [] and without["detection_count"] == count

    with pytest.raises(ValueError, match="polygons"):
        frame_message(predictor, prediction)  # a pending result is never published
    assert calls.count == 0
    finished = prediction.finish()
    message = frame_message(predictor, finished)
    assert calls.count == count and finished.result.pending is None
    assert all("polygon" in d for d in message["detections"]) and len(message["detections"]) == count
    # The polygon time, not in the decoded prediction's numbers, is in the message's.
    assert message["latency_ms"]["postprocess"] >= prediction.postprocess_ms + count * 2 - 0.01
    assert message["latency_ms"]["total"] >= prediction.total_ms + count * 2 - 0.01


@pytest.mark.parametrize("with_messages", [True, False])
def test_the_bench_encoder_counts_polygons_as_postprocess(segment_model, monkeypatch, with_messages):
    predictor = predictor_for(segment_model, performance="latency")  # decoded by infer_and_decode, watched here
    frame = real_frames()[0]
    encode = bench_worker._message_encoder({"messages": with_messages}, predictor, "s", False)
    calls = PolygonCalls(monkeypatch, sleep_s=0.002)
    decoded: list = []  # what infer_and_decode returned, before the polygon step
    decode = predictor.infer_and_decode
    monkeypatch.setattr(predictor, "infer_and_decode", lambda prepared: decoded.append(decode(prepared)) or decoded[-1])
    item = FeedFrame(predictor.prepare(frame), 0, time.monotonic())
    # The controller's own frame step, as the bench worker runs it: every frame counts as published.
    inferred = infer_frame(predictor, item, RollingFPS(), PublishGate(0), with_detections=True)
    prediction = inferred.prediction
    before = decoded[0].postprocess_ms
    message_ms = encode(inferred, 1)
    stages = bench_worker._stages(prediction, message_ms)
    assert calls.count == len(prediction.result) > 0 and prediction.finished
    assert stages["postprocess"] >= before + calls.count * 2
    assert stages["total"] == pytest.approx(stages["preprocess"] + stages["inference"] + stages["postprocess"])
    assert stages["message"] < calls.count * 2, "the polygon time belongs to post-processing, not the message"


# --- the controller, end to end ------------------------------------------------------------------------

def run_component(broker, config: Config) -> tuple[list[dict], dict]:
    """Start `config` on a real Mosquitto, run its video to the end; (frame messages, final summary)."""
    with running_component(broker, config) as (_component, operator):
        operator.wait_for_next(lambda m: m.get("type") == "status" and m["event"] == "model_loaded", timeout=60)
        operator.send({"status": "start"})
        seen: list[dict] = []
        summary = operator.wait_for_next(lambda m: seen.append(m) or (m.get("type") == "summary" and m["final"]),
                                         timeout=120)
        operator.wait_for_next(is_state("idle"))
        frames = [m for m in seen if m.get("type") == "frame"]
        return frames, summary


def component_config(model: Path, video: Path, **extra) -> Config:
    return base_config(model, video, loop_source=False, **extra)


@pytest.mark.integration
def test_frames_over_the_publish_cap_never_compute_polygons(broker, segment_model, tmp_path, monkeypatch):
    video = make_video(tmp_path / "capped.avi", frames=24)
    calls = PolygonCalls(monkeypatch)
    decoded = DecodedCounts(monkeypatch)
    frames, summary = run_component(broker, component_config(segment_model, video, max_publish_rate=1))
    assert summary["frames"] == len(decoded.per_frame) == 24
    assert summary["frames_not_published"] > 0 and summary["frames_published"] == len(frames) > 0
    published = sum(f["detection_count"] for f in frames)
    # One polygon per published detection, none for the frames the gate dropped.
    assert calls.count == published
    assert sum(decoded.per_frame) > published, "the unpublished frames had instances too"
    assert published > 0
    polygons = [d["polygon"] for f in frames for d in f["detections"]]
    assert len(polygons) == published
    assert sum(len(p) >= 3 for p in polygons) >= 0.9 * published, "published frames carry real polygons"


@pytest.mark.integration
def test_no_polygons_when_detections_are_not_published(broker, segment_model, tmp_path, monkeypatch):
    video = make_video(tmp_path / "counts-only.avi", frames=6)
    calls = PolygonCalls(monkeypatch)
    decoded = DecodedCounts(monkeypatch)
    frames, summary = run_component(broker, component_config(segment_model, video, max_publish_rate=0,
                                                             publish_detections=False))
    assert summary["frames"] == summary["frames_published"] == len(frames) == 6
    assert [f["detection_count"] for f in frames] == decoded.per_frame and sum(decoded.per_frame) > 0
    assert all(f["detections"] == [] for f in frames)
    assert calls.count == 0


@pytest.mark.integration
def test_published_postprocess_latency_includes_the_polygons(broker, segment_model, tmp_path, monkeypatch):
    """Each polygon takes at least 20 ms here, so a frame's published post-processing must be at least
    20 ms per detection; the run's summary records the same final numbers."""
    video = make_video(tmp_path / "timed.avi", frames=6)
    calls = PolygonCalls(monkeypatch, sleep_s=0.02)
    frames, summary = run_component(broker, component_config(segment_model, video, max_publish_rate=0, max_det=5))
    assert len(frames) == summary["frames"] == 6
    assert calls.count == sum(f["detection_count"] for f in frames) > 0
    for frame in frames:
        latency = frame["latency_ms"]
        assert latency["postprocess"] >= 20 * frame["detection_count"], frame
        assert latency["total"] == pytest.approx(latency["preprocess"] + latency["inference"]
                                                 + latency["postprocess"], abs=0.01)
    postprocess = sorted(f["latency_ms"]["postprocess"] for f in frames)
    recorded = summary["latency_ms"]["postprocess"]
    assert recorded["mean"] == pytest.approx(sum(postprocess) / len(postprocess), abs=0.01)
    assert recorded["p50"] == pytest.approx((postprocess[2] + postprocess[3]) / 2, abs=0.01)
