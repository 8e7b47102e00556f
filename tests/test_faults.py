"""Faults the component must survive: a broker that dies and comes back, models that cannot load or
run, and a corpus of bad commands sent through a real Mosquitto. After each, the component is
still running and still answers commands."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from yolo_edge.app import Component
from yolo_edge.backends import ModelLoadError
from yolo_edge.config import Config
from yolo_edge.predictor import Predictor, load_predictor
from yolo_edge.transport.mqtt import MqttSettings, MqttTransport

pytestmark = [pytest.mark.runtime, pytest.mark.integration]

IN, OUT = "faults/in", "faults/out"
Match = Callable[[Dict[str, Any]], bool]


class Listener:
    """An MQTT client on the output topic that survives broker restarts (resubscribes on connect)
    and keeps every message, so tests can wait for one with a deadline and look back at all."""

    def __init__(self, port: int, topic: str = OUT, command_topic: str = IN) -> None:
        self.topic, self.command_topic = topic, command_topic
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # back before the component is
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "listener could not subscribe"

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _client, _userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"type": "<not json>", "raw": message.payload[:200].decode(errors="replace")}
        with self._cond:
            self.messages.append(body)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def since(self, mark: int, match: Match | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [m for m in self.messages[mark:] if match is None or match(m)]

    def wait_for(self, match: Match, since: int = 0, timeout: float = 20.0, count: int = 1) -> dict[str, Any]:
        """The `count`-th message after index `since` that matches; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages[since:] if match(m)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [(m.get("type"), m.get("event") or m.get("code") or m.get("state"))
                            for m in self.messages[since:][-15:]]
                    raise AssertionError(f"no matching message within {timeout} s; last messages: {tail}")
                self._cond.wait(left)

    def send(self, payload: bytes | str | dict, topic: str | None = None, retain: bool = False) -> None:
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic or self.command_topic, body, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def is_type(kind: str, **fields: Any) -> Match:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


def is_state(state: str, **fields: Any) -> Match:
    return is_type("state", state=state, **fields)


def is_status(event: str) -> Match:
    return is_type("status", event=event)


def base_config(model: Path, source: Path | str, **extra: Any) -> Config:
    values = {"model_loc": str(model), "camera_id": str(source), "MODEL_HEIGHT": 320, "MODEL_WIDTH": 320,
              "summary_interval_s": 0, "event_topic": IN, "output_topic": OUT, "loop_source": True}
    values.update(extra)
    return Config.from_mapping(values)


@contextmanager
def running_component(broker, config: Config, **kwargs: Any) -> Iterator[tuple[Component, Listener]]:
    """A component on `broker` with a listener subscribed before it starts; both closed after."""
    listener = Listener(broker.port, config.output_topic, config.event_topic)
    transport = MqttTransport(MqttSettings(port=broker.port))
    component = Component(config, transport, **kwargs).start()
    try:
        assert transport.wait_connected(10)
        listener.wait_for(is_state("idle", reason="component started"))
        yield component, listener
    finally:
        component.stop()
        listener.close()


@pytest.fixture(scope="module")
def model(random_model) -> Path:
    return random_model("detect", 320)


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
    ("corrupt", lambda tmp, good: _corrupt(tmp), {}, None, "ONNX Runtime could not read it"),
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
        real = predictor.infer_and_decode

        def infer(prepared):
            if failures["left"] and predictor.backend is not None:
                failures["left"] -= 1
                raise MemoryError()
            return real(prepared)

        predictor.infer_and_decode = infer
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


# ---------------------------------------------------------------------------------------------
# The publisher's buffer, against a transport whose connection the test switches
# ---------------------------------------------------------------------------------------------

class SwitchedTransport:
    """Records publishes; `up` says whether it is connected; `reject` makes publish raise."""

    name = "switched"
    max_payload_bytes = 128 * 1024
    reconnects = 0

    def __init__(self) -> None:
        self.up = False
        self.reject: Exception | None = None
        self.published: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def connected(self) -> bool:
        return self.up

    def set_input_topic(self, topic: str) -> None:
        pass  # no subscriptions here

    def publish(self, topic: str, payload: bytes) -> None:
        if self.reject is not None:
            raise self.reject
        with self.lock:
            self.published.append(json.loads(payload))

    def kinds(self) -> list[str]:
        with self.lock:
            return [m.get("event") or m.get("reason") or m.get("seq") or m["type"] for m in self.published]


def _frame(seq: int, pad: int = 0) -> dict[str, Any]:
    return {"type": "frame", "seq": seq, "pad": "x" * pad}


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_publisher_drops_frames_first_while_disconnected_and_reports_the_count():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    publisher = Publisher(transport, lambda: OUT, capacity=5, retry_interval_s=0.05).start()
    try:
        publisher.submit({"type": "state", "reason": "start command"})
        for seq in range(1, 11):
            publisher.submit(_frame(seq))
        publisher.submit({"type": "summary", "reason": "final"})
        _wait(lambda: publisher.dropped == 7)
        assert publisher.pending() == 5 and transport.published == []
        transport.up = True
        _wait(lambda: publisher.pending() == 0)
        assert transport.kinds() == ["messages_dropped", "start command", 8, 9, 10, "final"]
        assert transport.published[0]["dropped"] == 7 and transport.published[0]["dropped_total"] == 7
    finally:
        publisher.close(1.0)


def test_publisher_buffer_is_bounded_in_bytes_too():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    publisher = Publisher(transport, lambda: OUT, capacity=1000, capacity_bytes=50_000,
                          retry_interval_s=0.05).start()
    try:
        for seq in range(1, 101):
            publisher.submit(_frame(seq, pad=10_000))  # ~10 KB each: 5 fit
        _wait(lambda: publisher.dropped >= 95)
        assert publisher.pending() <= 5
        transport.up = True
        _wait(lambda: publisher.pending() == 0)
        assert transport.kinds()[0] == "messages_dropped" and transport.kinds()[-1] == 100
    finally:
        publisher.close(1.0)


def test_publisher_survives_messages_it_cannot_encode_or_the_transport_rejects():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    transport.up = True
    publisher = Publisher(transport, lambda: OUT, retry_interval_s=0.05).start()
    try:
        publisher.submit({"type": "summary", "fps": float("nan")})  # not JSON: dropped, counted
        transport.reject = ValueError("payload rejected")  # not a TransportError: dropped, counted
        publisher.submit(_frame(1))
        _wait(lambda: publisher.failed == 2)
        transport.reject = None
        publisher.submit(_frame(2))
        _wait(lambda: transport.kinds() == [2])
    finally:
        publisher.close(1.0)


def test_publisher_drops_a_message_refused_for_good_and_keeps_publishing():
    """A non-retryable TransportError (e.g. IPC UnauthorizedError, payload over the nucleus limit)
    must not block the messages behind it; a retryable one keeps the message for later."""
    from yolo_edge.publisher import Publisher
    from yolo_edge.transport import TransportError

    class Refused(TransportError):
        retryable = False

    transport = SwitchedTransport()
    transport.up = True
    publisher = Publisher(transport, lambda: OUT, retry_interval_s=0.05).start()
    try:
        transport.reject = Refused("not authorized")
        publisher.submit(_frame(1))
        _wait(lambda: publisher.failed == 1)
        transport.reject = TransportError("spooler full")
        publisher.submit(_frame(2))
        time.sleep(0.2)
        assert publisher.pending() == 1 and publisher.failed == 1
        transport.reject = None
        publisher.submit(_frame(3))
        _wait(lambda: transport.kinds() == [2, 3])
    finally:
        publisher.close(1.0)


def _many_detections_frame(seq: int) -> dict[str, Any]:
    """A real frame message of 300 detections: about 20 KB of JSON."""
    from yolo_edge import messages
    from yolo_edge.backends import ModelInfo
    from yolo_edge.processing import Detections

    boxes = np.array([[i, i, i + 10.5, i + 20.25] for i in range(300)], dtype=np.float32)
    result = Detections(boxes=boxes, scores=np.linspace(0.9, 0.3, 300, dtype=np.float32),
                        class_ids=np.zeros(300, dtype=np.int64))
    info = ModelInfo(name="m.onnx", format="onnx", runtime="onnxruntime", device="cpu", task="detect",
                     input_shape=(640, 640), names={0: "person"})
    return messages.frame_message(seq=seq, info=info, source="s", frame_shape=(480, 640), result=result,
                                  preprocess_ms=1, inference_ms=1, postprocess_ms=1, fps=1)


@pytest.mark.parametrize(("transport_limit", "configured", "expected"), [
    (128 * 1024, None, 128 * 1024), (7000, None, 7000), (128 * 1024, 2000, 2000)])
def test_frame_messages_are_fitted_under_the_transport_or_configured_limit(transport_limit, configured, expected):
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    transport.up = True
    transport.max_payload_bytes = transport_limit
    sizes: list[int] = []
    original = transport.publish

    def publish(topic: str, payload: bytes) -> None:
        sizes.append(len(payload))
        original(topic, payload)

    transport.publish = publish  # type: ignore[method-assign]
    limit = (lambda: configured) if configured else None
    publisher = Publisher(transport, lambda: OUT, retry_interval_s=0.05, max_bytes=limit).start()
    try:
        publisher.submit(_many_detections_frame(1))
        _wait(lambda: len(transport.published) == 1)
    finally:
        publisher.close(1.0)
    body = transport.published[0]
    assert sizes[0] <= expected and body["detection_count"] == 300
    assert body["truncated"] is (expected < 20_000) and (len(body["detections"]) < 300) is (expected < 20_000)
    assert sizes[0] > expected * 0.9 or expected == 128 * 1024  # trimmed only as far as needed


@pytest.mark.parametrize(("configured", "carried", "expected"), [
    (0, 7000, 7000), (2000, 7000, 2000), (20_000, 7000, 7000), (0, 128 * 1024, 128 * 1024)])
def test_the_message_limit_never_exceeds_what_the_transport_carries(configured, carried, expected, caplog):
    transport = SwitchedTransport()
    transport.max_payload_bytes = carried
    component = Component(Config.from_mapping({"max_message_bytes": configured}), transport)
    with caplog.at_level(logging.WARNING):
        assert component._max_message_bytes() == expected
        assert component._max_message_bytes() == expected
    warnings = [r.getMessage() for r in caplog.records if "max_message_bytes" in r.getMessage()]
    if configured > carried:  # said once, naming the key and both values
        assert len(warnings) == 1 and f"is {configured}" in warnings[0] and f"{carried} bytes" in warnings[0]
    else:
        assert warnings == []
