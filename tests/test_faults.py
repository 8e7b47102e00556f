"""Faults the component must survive: a broker that dies and comes back, models that cannot load or
run, and a corpus of bad commands sent through a real Mosquitto. After each, the component is
still running and still answers commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
from harness import IN, base_config, is_state, is_status, is_type, running_component

from yolo_edge.backends import ModelLoadError
from yolo_edge.config import Config
from yolo_edge.predictor import Predictor, load_predictor

pytestmark = [pytest.mark.runtime, pytest.mark.integration]


# ---------------------------------------------------------------------------------------------
# Broker loss
# ---------------------------------------------------------------------------------------------

def test_broker_restart_mid_run_buffers_then_resumes_and_reports_drops(broker, model, sample_video):
    capacity = 15
    config = base_config(model, sample_video, max_publish_rate=0)
    with running_component(broker, config, publish_buffer=capacity) as (component, listener):
        listener.send({"status": "start"})
        listener.wait_for(is_type("frame"), count=5)

        broker.stop()
        down_at = time.monotonic()
        # Keep the broker down until the component has produced well over `capacity` messages.
        deadline = down_at + 20
        while component.publisher.dropped < 10 and time.monotonic() < deadline:
            assert component.publisher.pending() <= 2 * capacity + 1, "the publish buffer grew past its bound"
            time.sleep(0.05)
        assert component.publisher.dropped >= 10, "no frames were produced while the broker was down"
        assert component.controller.state.value == "running", "a broker outage must not stop the run"
        # The component's paho retries 1 s after the loss, then 2 s later: restart the broker in between,
        # so the listener (retrying every 0.5 s) is subscribed again before the component publishes.
        time.sleep(max(0.0, down_at + 1.5 - time.monotonic()))
        mark = listener.mark()
        broker.start()

        dropped = listener.wait_for(is_status("messages_dropped"), since=mark, timeout=40)
        assert dropped["dropped"] >= 10 and dropped["dropped_total"] >= dropped["dropped"]
        # Frames resume after the report, and commands work again (the subscription came back).
        after = listener.mark()
        listener.wait_for(is_type("frame"), since=after, count=3)
        listener.send({"status": "stop", "request_id": "after-outage"})
        listener.wait_for(is_state("idle", request_id="after-outage"), since=after)
        summary = listener.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=after)
        assert summary["messages_dropped"] >= dropped["dropped"]
        assert summary["transport_reconnects"] >= 1
        seqs = [m["seq"] for m in listener.since(0, is_type("frame"))]
        assert seqs == sorted(seqs), "frames after the outage came out of order"


def test_component_keeps_its_buffer_while_the_broker_is_down_at_a_stop(broker, model, sample_video):
    """State and summary messages survive an outage ahead of frames: the buffer drops frames first."""
    config = base_config(model, sample_video, max_publish_rate=0)
    with running_component(broker, config, publish_buffer=10) as (component, listener):
        listener.send({"status": "start"})
        listener.wait_for(is_type("frame"), count=3)
        broker.stop()
        while component.publisher.dropped < 10:
            time.sleep(0.05)
        component.submit_command(b'{"status": "stop", "request_id": "stop-while-down"}')
        while component.controller.state.value != "idle":
            time.sleep(0.05)
        # More frames than the buffer holds were produced; the stop's messages must still be kept.
        mark = listener.mark()
        broker.start()
        listener.wait_for(is_state("idle", request_id="stop-while-down"), since=mark, timeout=40)
        listener.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)


# ---------------------------------------------------------------------------------------------
# Model failures
# ---------------------------------------------------------------------------------------------

def _raising(exc: BaseException) -> Callable[[Config], Predictor]:
    def factory(config: Config) -> Predictor:
        raise exc

    return factory


def _corrupt(tmp: Path) -> Path:
    path = tmp / "corrupt.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf" * 50)
    return path


def _garbage_engine(tmp: Path) -> Path:
    path = tmp / "garbage.engine"
    path.write_bytes(b"\x00" * 256)
    return path


def _unknown_extension(tmp: Path) -> Path:
    path = tmp / "model.tflite"
    path.write_bytes(b"\x00" * 16)
    return path


# (id, model path maker, config extras, predictor factory or None for the real loader, cause fragment)
MODEL_FAULTS = [
    ("missing", lambda tmp, good: tmp / "nowhere" / "missing.onnx", {}, None, "file not found"),
    ("corrupt", lambda tmp, good: _corrupt(tmp), {}, None, "could not read it"),  # ONNX Runtime or OpenVINO
    ("unknown-extension", lambda tmp, good: _unknown_extension(tmp), {}, None, "unknown model extension '.tflite'"),
    ("wrong-task", lambda tmp, good: good, {"task": "segment"}, None, "config key 'task' asks for 'segment'"),
    ("engine-without-tensorrt", lambda tmp, good: _garbage_engine(tmp), {}, None, "TensorRT"),
    # TensorRT cannot run here: its backend's error for a foreign engine is raised at the boundary.
    ("engine-other-tensorrt", lambda tmp, good: tmp / "other.engine", {},
     _raising(ModelLoadError("other.engine", "the engine was built with TensorRT 8.6.1, this device has "
                             "10.3.0; rebuild it on this device")), "built with TensorRT 8.6.1"),
    ("out-of-memory", lambda tmp, good: good, {}, _raising(MemoryError()), "out of memory"),
]


@pytest.mark.parametrize("case", MODEL_FAULTS, ids=[c[0] for c in MODEL_FAULTS])
def test_model_failure_is_reported_and_a_config_change_recovers(case, broker, model, sample_video, tmp_path):
    _name, make_path, extra, factory, cause = case
    bad = make_path(tmp_path, model)
    config = base_config(bad, sample_video, **extra)
    calls: list[Config] = []
    fault = {"active": True}

    def loader(cfg: Config) -> Predictor:
        calls.append(cfg)
        if factory is not None and fault["active"] and cfg.model_loc == str(bad):
            return factory(cfg)
        return load_predictor(cfg)

    with running_component(broker, config, predictor_factory=loader) as (component, listener):
        error = listener.wait_for(is_type("error", code="model_load_failed"))
        assert cause in error["message"] and cause in error["cause"]
        assert str(bad.name) in error["message"] and error["model_loc"] == str(bad)

        # Still controllable: start retries the model and fails with the same clear error.
        mark = listener.mark()
        listener.send({"status": "start", "request_id": "try"})
        again = listener.wait_for(is_type("error", code="model_load_failed"), since=mark)
        assert again["request_id"] == "try"
        assert len(calls) == 2, "a start must retry loading the configured model"
        listener.send({"status": "stop", "request_id": "ping"})
        listener.wait_for(is_state("idle", request_id="ping", reason="already idle"), since=mark)

        # Recovery: a configuration change that fixes it loads the model at once; when the file was
        # right and only memory was short, the next start loads it.
        fault["active"] = False
        fixed = Config.from_mapping({**{k: v for k, v in config.to_mapping().items() if k != "task"},
                                     "model_loc": str(model)})
        if fixed != config:
            component.submit_config(fixed.to_mapping())
            loaded = listener.wait_for(is_status("model_loaded"), since=mark)
        listener.send({"status": "start", "request_id": "go"})
        loaded = listener.wait_for(is_status("model_loaded"), since=mark)
        assert loaded["model_loc"] == str(model)
        running = listener.wait_for(is_state("running", request_id="go"), since=mark)
        assert running["model"] == model.name
        listener.wait_for(is_type("frame"), since=mark)


def test_failed_swap_keeps_running_then_start_retries_the_configured_model(broker, model, sample_video, tmp_path):
    config = base_config(model, sample_video)
    late = tmp_path / "late.onnx"
    with running_component(broker, config) as (component, listener):
        listener.send({"status": "start"})
        listener.wait_for(is_type("frame"))

        mark = listener.mark()
        component.submit_config({**config.to_mapping(), "model_loc": str(late)})
        error = listener.wait_for(is_type("error", code="model_load_failed"), since=mark)
        assert error["running_model"] == model.name and str(late) in error["message"]
        kept = listener.wait_for(is_status("model_kept"), since=mark)
        assert kept["configured_model_loc"] == str(late) and kept["running_model_loc"] == str(model)
        listener.wait_for(is_type("frame"), since=listener.mark())  # the old model keeps running

        # Stop; a start while the configured model is still missing is refused (it never runs the old one).
        listener.send({"status": "stop"})
        summary = listener.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
        assert summary["configured_model_loc"] == str(late)
        mark = listener.mark()
        listener.send({"status": "start", "request_id": "still-missing"})
        refused = listener.wait_for(is_type("error", code="model_load_failed"), since=mark)
        assert refused["request_id"] == "still-missing"
        time.sleep(0.3)
        assert not listener.since(mark, is_state("running")), "started with a model that is not configured"

        # The file arrives: the next start loads and runs it.
        late.write_bytes(model.read_bytes())
        listener.send({"status": "start", "request_id": "now"})
        loaded = listener.wait_for(is_status("model_loaded"), since=mark)
        assert loaded["model_loc"] == str(late)
        assert listener.wait_for(is_state("running", request_id="now"), since=mark)["model"] == "late.onnx"
        frame = listener.wait_for(is_type("frame"), since=mark)
        assert frame["model"]["name"] == "late.onnx"


def test_out_of_memory_during_inference_ends_the_run_and_start_works_again(broker, model, sample_video):
    failures = {"left": 1}

    def loader(cfg: Config) -> Predictor:
        predictor = load_predictor(cfg)
        real = predictor.submit

        def submit(prepared):  # where the controller hands frames to the model, one at a time or side by side
            if failures["left"] and predictor.backend is not None:
                failures["left"] -= 1
                raise MemoryError()
            return real(prepared)

        predictor.submit = submit
        return predictor

    with running_component(broker, base_config(model, sample_video), predictor_factory=loader) as (_c, listener):
        listener.send({"status": "start"})
        error = listener.wait_for(is_type("error", code="inference_failed"))
        assert error["cause"] == "out of memory" and model.name in error["message"]
        listener.wait_for(is_state("idle", reason="inference failed"))
        mark = listener.mark()
        listener.send({"status": "start"})
        listener.wait_for(is_type("frame"), since=mark)


# ---------------------------------------------------------------------------------------------
# Bad commands
# ---------------------------------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b'{"status": ' + b"[" * depth + b"]" * depth + b"}"


# (name, payload, expected error code, or None when the payload is a valid command)
BAD_COMMANDS: list[tuple[str, bytes, str | None]] = [
    ("not json", b"start please", "invalid_json"),
    ("truncated json", b'{"status": "sta', "invalid_json"),
    ("single quotes", b"{'status': 'start'}", "invalid_json"),
    ("trailing comma", b'{"status": "start",}', "invalid_json"),
    ("NaN literal", b'{"status": NaN}', "invalid_status_type"),
    ("binary", bytes(range(256)), "not_utf8"),
    ("latin-1 text", "{\"status\": \"d\xe9marrer\"}".encode("latin-1"), "not_utf8"),
    ("empty", b"", "empty_payload"),
    ("whitespace", b"  \n\t ", "empty_payload"),
    ("1 MB", b'{"status": "start", "pad": "' + b"x" * 1_000_000 + b'"}', "payload_too_large"),
    ("4097 bytes", b'{"status": "start", "pad": "' + b"y" * 4070 + b'"}', "payload_too_large"),
    ("array", b'["start"]', "not_an_object"),
    ("empty array", b"[]", "not_an_object"),
    ("null", b"null", "not_an_object"),
    ("number", b"42", "not_an_object"),
    ("float", b"-1.5e300", "not_an_object"),
    ("bare string", b'"start"', "not_an_object"),
    ("true", b"true", "not_an_object"),
    ("deeply nested array", b"[" * 3000 + b"]" * 3000, "payload_too_large"),
    ("nested 1500 deep", _nested(1500), "invalid_json"),
    ("nested objects", b'{"a":' * 600 + b"1" + b"}" * 600, "missing_status"),
    ("empty object", b"{}", "missing_status"),
    ("wrong key", b'{"state": "start"}', "missing_status"),
    ("key case", b'{"STATUS": "start"}', "missing_status"),
    ("status number", b'{"status": 1}', "invalid_status_type"),
    ("status null", b'{"status": null}', "invalid_status_type"),
    ("status bool", b'{"status": true}', "invalid_status_type"),
    ("status list", b'{"status": ["start"]}', "invalid_status_type"),
    ("status object", b'{"status": {"value": "start"}}', "invalid_status_type"),
    ("unknown status", b'{"status": "launch"}', "unknown_status"),
    ("empty status", b'{"status": ""}', "unknown_status"),
    ("unicode status", '{"status": "stärt"}'.encode(), "unknown_status"),
    ("fullwidth status", '{"status": "ｓｔａｒｔ"}'.encode(), "unknown_status"),
    ("emoji status", '{"status": "🚀"}'.encode(), "unknown_status"),
    ("NUL in status", b'{"status": "start\\u0000"}', "unknown_status"),
    ("lone surrogate", b'{"status": "\\ud800"}', "unknown_status"),
    ("request_id number", b'{"status": "start", "request_id": 7}', "invalid_request_id"),
    ("request_id too long", b'{"status": "start", "request_id": "' + b"r" * 200 + b'"}', "invalid_request_id"),
    ("pause while idle", b'{"status": "pause"}', "invalid_transition"),
    # Valid commands in odd shapes: each must give exactly one state message.
    ("upper case", b'{"status": "STOP"}', None),
    ("padded", b'{"status": "  stop \\n"}', None),
    ("extra fields", b'{"status": "stop", "by": "operator", "n": [1, 2, {"x": null}]}', None),
    ("unicode extra field", '{"status": "stop", "note": "日本語 ✓"}'.encode(), None),
    ("duplicate keys", b'{"status": "launch", "status": "stop"}', None),
    ("BOM-less utf-8 with spaces", b'\n {"status":"stop"} \n', None),
]


def test_bad_command_corpus_each_gets_one_reply_and_the_component_stays_controllable(broker, model, sample_video):
    assert len([c for c in BAD_COMMANDS if c[2]]) >= 30
    config = base_config(model, sample_video)
    # A generous error budget: this test checks one reply per command; the limiter has its own test.
    with running_component(broker, config, controller_options={"error_burst": 1000}) as (component, listener):
        for name, payload, code in BAD_COMMANDS:
            mark = listener.mark()
            listener.send(payload)
            reply = listener.wait_for(lambda m: m.get("type") in ("error", "state"), since=mark, timeout=10)
            if code is None:
                assert reply["type"] == "state" and reply["state"] == "idle", (name, reply)
            else:
                assert reply["type"] == "error" and reply["code"] == code, (name, reply)
                assert reply["message"], name
        # Nothing more came than one reply per command.
        time.sleep(0.3)
        replies = [m for m in listener.messages if m.get("type") in ("error", "state")]
        assert len(replies) == 1 + len(BAD_COMMANDS), "a command got more than one reply"
        assert component.controller.commands_rejected == sum(1 for c in BAD_COMMANDS if c[2]) - 1

        # Very fast toggles: every one is applied in order and acknowledged once.
        mark = listener.mark()
        toggles = ["start", "pause", "start", "pause", "start", "stop"] * 5
        for i, action in enumerate(toggles):
            listener.send({"status": action, "request_id": f"t{i}"})
        last = listener.wait_for(is_type("state", request_id=f"t{len(toggles) - 1}"), since=mark, timeout=30)
        assert last["state"] == "idle"
        acks = listener.since(mark, lambda m: m.get("type") == "state" and m.get("request_id", "").startswith("t"))
        assert [a["request_id"] for a in acks] == [f"t{i}" for i in range(len(toggles))]
        expected = {"start": "running", "pause": "paused", "stop": "idle"}
        assert [a["state"] for a in acks] == [expected[t] for t in toggles]

        # Still controllable at the end: a normal run works.
        mark = listener.mark()
        listener.send({"status": "start"})
        listener.wait_for(is_type("frame"), since=mark)
        assert component.controller.state.value == "running"


def test_error_flood_is_rate_limited_and_the_suppressed_count_reported(broker, model, sample_video):
    config = base_config(model, sample_video)
    with running_component(broker, config) as (component, listener):
        from yolo_edge.controller import ERROR_BURST, ERROR_RATE_PER_S

        mark = listener.mark()
        flood = 200
        for i in range(flood):
            listener.client.publish(IN, f"garbage {i}".encode(), qos=1)
        listener.send({"status": "stop", "request_id": "after-flood"})  # queued behind the flood
        listener.wait_for(is_state("idle", request_id="after-flood"), since=mark, timeout=30)
        errors = listener.since(mark, is_type("error"))
        elapsed_allowance = 5 * ERROR_RATE_PER_S  # the flood takes at most a few seconds to process
        assert ERROR_BURST <= len(errors) <= ERROR_BURST + elapsed_allowance, len(errors)
        assert component.controller.commands_rejected == flood

        time.sleep(1.1 / ERROR_RATE_PER_S)  # one token back
        listener.send(b"one more bad one")
        report = listener.wait_for(is_type("error", code="invalid_json"), since=mark, count=len(errors) + 1)
        assert report["suppressed"] == flood - len(errors)

        listener.send({"status": "start"})
        listener.send({"status": "stop"})
        summary = listener.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
        assert summary["errors_suppressed"] == flood - len(errors)
        assert summary["commands_rejected"] == flood + 1
