"""The component end to end: real Mosquitto, real exported ONNX model, real video, real MQTT client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from harness import Operator, base_config, is_state, is_status, running_component

from yolo_edge.app import Component
from yolo_edge.config import Config
from yolo_edge.predictor import load_predictor

pytestmark = [pytest.mark.runtime, pytest.mark.integration]


@pytest.fixture
def running(broker, model, sample_video) -> Iterator[tuple[Component, Operator, list[Config]]]:
    loads: list[Config] = []

    def counting_loader(config: Config):
        loads.append(config)
        return load_predictor(config)

    config = base_config(model, sample_video, max_publish_rate=0)
    with running_component(broker, config, predictor_factory=counting_loader) as (component, operator):
        operator.wait_for_next(is_status("model_loaded"))
        yield component, operator, loads


def test_start_pause_resume_stop(running):
    component, operator, loads = running
    operator.send({"status": "start", "request_id": "r1"})
    started = operator.wait_for_next(is_state("running"))
    assert started["request_id"] == "r1" and started["previous"] == "idle"

    frames = [operator.wait_for_next(lambda m: m.get("type") == "frame") for _ in range(5)]
    frame = frames[-1]
    assert frame["model"]["format"] == "onnx" and frame["model"]["task"] == "detect"
    assert frame["model"]["input_size"] == [320, 320]
    assert set(frame["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
    assert frame["latency_ms"]["inference"] > 0
    assert frame["detection_count"] == len(frame["detections"]) > 0
    assert [f["seq"] for f in frames] == sorted(f["seq"] for f in frames)
    frame_period = max(f["latency_ms"]["inference"] + f["latency_ms"]["postprocess"] for f in frames) / 1000

    operator.send({"status": "pause"})
    operator.wait_for_next(is_state("paused"))
    # At most the frame in flight when pause arrived may still come; then nothing.
    time.sleep(frame_period + 0.3)
    late = [m for m in operator.drain(1.0) if m.get("type") == "frame"]
    assert late == [], f"{len(late)} frames published while paused"

    operator.send({"status": "start"})
    resumed = operator.wait_for_next(is_state("running"))
    assert resumed["previous"] == "paused"
    operator.wait_for_next(lambda m: m.get("type") == "frame")

    operator.send({"status": "stop"})
    summary = operator.wait_for_next(lambda m: m.get("type") == "summary" and m["final"])
    assert summary["frames"] >= 6 and summary["fps"] > 0
    for stage in ("preprocess", "inference", "postprocess", "total"):
        p = summary["latency_ms"][stage]
        assert 0 <= p["p50"] <= p["p90"] <= p["p99"]
    operator.wait_for_next(is_state("idle"))

    operator.send({"status": "start"})
    operator.wait_for_next(is_state("running"))
    operator.wait_for_next(lambda m: m.get("type") == "frame")
    assert len(loads) == 1, "the model must be loaded once and kept across stop/start"


BAD_COMMANDS: list[tuple[bytes, str]] = [
    (b"not json", "invalid_json"),
    (b"", "empty_payload"),
    (b"\x00\x01\x02\xff", "not_utf8"),
    (b"42", "not_an_object"),
    (b"null", "not_an_object"),
    (b'["start"]', "not_an_object"),
    (b'"start"', "not_an_object"),
    (b"{}", "missing_status"),
    (b'{"state": "start"}', "missing_status"),
    (b'{"status": 1}', "invalid_status_type"),
    (b'{"status": null}', "invalid_status_type"),
    (b'{"status": {"x": 1}}', "invalid_status_type"),
    (b'{"status": "launch"}', "unknown_status"),
    (b'{"status": "st\xc3\xa4rt"}', "unknown_status"),
    (b'{"status": "start", "request_id": []}', "invalid_request_id"),
    (json.dumps({"status": "start", "pad": "x" * 5000}).encode(), "payload_too_large"),
    (b'{"status": "pause"}', "invalid_transition"),  # pause while idle
]


def test_bad_commands_get_one_error_each_and_the_component_stays_controllable(running):
    component, operator, _ = running
    for payload, _code in BAD_COMMANDS:
        operator.send(payload)
    errors = []
    deadline = time.monotonic() + 20
    while len(errors) < len(BAD_COMMANDS) and time.monotonic() < deadline:
        errors += [m for m in operator.drain(0.5) if m.get("type") == "error"]
    assert [e["code"] for e in errors] == [code for _, code in BAD_COMMANDS]
    assert all(e["message"] for e in errors)
    assert not [m for m in operator.drain(0.5) if m.get("type") == "error"], "more than one error per command"

    operator.send({"status": "start"})
    operator.wait_for_next(is_state("running"))
    operator.wait_for_next(lambda m: m.get("type") == "frame")


def test_video_end_returns_to_idle_with_a_final_summary(broker, model, tmp_path):
    from conftest import make_video

    video = make_video(tmp_path / "short.avi", frames=6)
    config = Config.from_mapping({"model_loc": str(model), "camera_id": str(video),
                                  "MODEL_HEIGHT": 320, "MODEL_WIDTH": 320, "max_publish_rate": 0})
    with running_component(broker, config) as (component, operator):
        operator.wait_for_next(lambda m: m.get("type") == "status" and m["event"] == "model_loaded")
        operator.send({"status": "start"})
        summary = operator.wait_for_next(lambda m: m.get("type") == "summary" and m["final"])
        assert summary["frames"] == 6 and summary["frames_published"] == 6
        idle = operator.wait_for_next(is_state("idle"))
        assert idle["reason"] == "source ended"


def test_idle_and_paused_use_no_cpu(running):
    import resource

    component, operator, _ = running

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    before = cpu_seconds()
    time.sleep(2.0)
    idle_cpu = cpu_seconds() - before
    operator.send({"status": "start"})
    operator.wait_for_next(lambda m: m.get("type") == "frame")
    operator.send({"status": "pause"})
    operator.wait_for_next(is_state("paused"))
    time.sleep(0.5)
    before = cpu_seconds()
    time.sleep(2.0)
    paused_cpu = cpu_seconds() - before
    # A busy loop would burn ~2 s of CPU here; idle waits cost a few milliseconds.
    assert idle_cpu < 0.1, f"idle used {idle_cpu:.3f} s of CPU in 2 s"
    assert paused_cpu < 0.1, f"paused used {paused_cpu:.3f} s of CPU in 2 s"


def test_unloadable_model_reports_an_error_and_stays_controllable(broker, tmp_path, sample_video):
    model = tmp_path / "missing.onnx"
    config = Config.from_mapping({"model_loc": str(model), "camera_id": str(sample_video)})
    with running_component(broker, config) as (component, operator):
        error = operator.wait_for_next(lambda m: m.get("type") == "error")
        assert error["code"] == "model_load_failed" and str(model) in error["message"]
        operator.send({"status": "start"})
        again = operator.wait_for_next(lambda m: m.get("type") == "error")
        assert again["code"] == "model_load_failed"
        operator.send({"status": "stop"})
        assert operator.wait_for_next(is_state("idle"))["reason"] == "already idle"


def test_send_command_line(broker, running):
    from yolo_edge.cli import main

    component, operator, _ = running
    assert main(["send", "start", "--topic", "test/in", "--broker", broker.address]) == 0
    operator.wait_for_next(is_state("running"))


def test_publish_rate_cap_counts_unpublished_frames_and_batches_frames(broker, model, tmp_path):
    from conftest import make_video

    video = make_video(tmp_path / "v.avi", frames=24)
    config = Config.from_mapping({"model_loc": str(model), "camera_id": str(video),
                                  "MODEL_HEIGHT": 320, "MODEL_WIDTH": 320, "max_publish_rate": 2,
                                  "frames_per_message": 2, "summary_interval_s": 0})
    with running_component(broker, config) as (component, operator):
        operator.wait_for_next(lambda m: m.get("type") == "status" and m["event"] == "model_loaded")
        operator.send({"status": "start"})
        seen: list[dict] = []
        summary = operator.wait_for_next(lambda m: seen.append(m) or (m.get("type") == "summary" and m["final"]))
        batches = [m for m in seen + operator.drain(0.5) if m.get("type") == "frames"]
        assert not [m for m in seen if m.get("type") == "frame"], "frames must only come in batches"
        assert summary["frames"] == 24
        assert summary["frames_published"] + summary["frames_not_published"] == 24
        assert summary["frames_not_published"] > 0
        assert batches and all(len(b["frames"]) == b["count"] <= 2 for b in batches)
