"""GreengrassTransport against a fake nucleus: a client with GreengrassCoreIPCClientV2's surface that
delivers awsiotsdk's real model objects from its own threads, like the nucleus does."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import yaml
from awsiot.eventstreamrpc import ConnectionClosedError
from awsiot.greengrasscoreipc.model import (
    ConfigurationUpdateEvent,
    ConfigurationUpdateEvents,
    GetConfigurationResponse,
    InvalidArgumentsError,
    IoTCoreMessage,
    MQTTMessage,
    PublishToIoTCoreResponse,
    ServiceError,
    SubscribeToConfigurationUpdateResponse,
    SubscribeToIoTCoreResponse,
    UnauthorizedError,
    UpdateStateResponse,
)

from yolo_edge.config import Config
from yolo_edge.transport import TransportError
from yolo_edge.transport.greengrass import GreengrassTransport, MessageRejected, greengrass_available

REPO = Path(__file__).resolve().parent.parent
COMPONENT = "com.yoloedge.inference"


def recipe_defaults() -> dict[str, Any]:
    recipe = yaml.safe_load((REPO / "recipe.yaml").read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]


class FakeOperation:
    def __init__(self, client: FakeIPCClient, topic: str | None, handlers: dict[str, Callable | None]) -> None:
        self.client = client
        self.topic = topic
        self.handlers = handlers
        self.closed = False

    def close(self) -> Future:
        self.client.check_not_in_callback("operation.close")
        self.closed = True
        done: Future = Future()
        done.set_result(None)
        return done


class FakeIPCClient:
    """GreengrassCoreIPCClientV2's methods used by the transport, plus the nucleus' side:
    `deliver` (a message from IoT Core), `merge_configuration` (a deployment), `stream_error`.

    Callbacks run on fresh threads. An IPC call made from inside a callback is recorded as a
    violation: with the real client it deadlocks when the callback runs on the network thread."""

    def __init__(self, configuration: dict[str, Any]) -> None:
        self.configuration = copy.deepcopy(configuration)
        self.subscriptions: list[FakeOperation] = []
        self.config_streams: list[FakeOperation] = []
        self.published: list[tuple[str, bytes, str]] = []
        self.states: list[str] = []
        self.get_configuration_calls: list[list[str] | None] = []
        self.failures: dict[str, Exception] = {}
        self.violations: list[str] = []
        self.closed = False
        self._local = threading.local()
        self._published = threading.Condition()

    # -- helpers --
    def check_not_in_callback(self, what: str) -> None:
        if getattr(self._local, "in_callback", False):
            self.violations.append(what)

    def _enter(self, what: str) -> None:
        self.check_not_in_callback(what)
        if self.closed:
            raise ConnectionClosedError("connection closed")
        if what in self.failures:
            raise self.failures[what]

    def _in_thread(self, function: Callable, *args: Any) -> Any:
        result: list[Any] = []

        def target() -> None:
            self._local.in_callback = True
            result.append(function(*args))

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(5)
        return result[0] if result else None

    # -- GreengrassCoreIPCClientV2 surface --
    def subscribe_to_iot_core(self, *, topic_name: str, qos: str, on_stream_event: Callable | None = None,
                              on_stream_error: Callable | None = None, on_stream_closed: Callable | None = None,
                              stream_handler: Any = None) -> tuple[SubscribeToIoTCoreResponse, FakeOperation]:
        self._enter("subscribe_to_iot_core")
        assert stream_handler is None and on_stream_event is not None
        operation = FakeOperation(self, topic_name, {"event": on_stream_event, "error": on_stream_error,
                                                     "closed": on_stream_closed, "qos": qos})
        self.subscriptions.append(operation)
        return SubscribeToIoTCoreResponse(), operation

    def publish_to_iot_core(self, *, topic_name: str, qos: str, payload: bytes | str,
                            **_optional: Any) -> PublishToIoTCoreResponse:
        self._enter("publish_to_iot_core")
        with self._published:
            self.published.append((topic_name, payload, qos))
            self._published.notify_all()
        return PublishToIoTCoreResponse()

    def get_configuration(self, *, component_name: str | None = None,
                          key_path: list[str] | None = None) -> GetConfigurationResponse:
        self._enter("get_configuration")
        self.get_configuration_calls.append(key_path)
        assert key_path == [], "the transport reads the whole configuration"
        return GetConfigurationResponse(component_name=COMPONENT, value=copy.deepcopy(self.configuration))

    def subscribe_to_configuration_update(self, *, component_name: str | None = None,
                                          key_path: list[str] | None = None, on_stream_event: Callable | None = None,
                                          on_stream_error: Callable | None = None,
                                          on_stream_closed: Callable | None = None,
                                          ) -> tuple[SubscribeToConfigurationUpdateResponse, FakeOperation]:
        self._enter("subscribe_to_configuration_update")
        operation = FakeOperation(self, None, {"event": on_stream_event, "error": on_stream_error,
                                               "closed": on_stream_closed, "key_path": key_path})
        self.config_streams.append(operation)
        return SubscribeToConfigurationUpdateResponse(), operation

    def update_state(self, *, state: str) -> UpdateStateResponse:
        self._enter("update_state")
        self.states.append(state)
        return UpdateStateResponse()

    def close(self, *, executor_wait: bool = True) -> Future:
        self.closed = True
        done: Future = Future()
        done.set_result(None)
        return done

    # -- the nucleus' side --
    def live_subscriptions(self) -> list[FakeOperation]:
        return [op for op in self.subscriptions if not op.closed]

    def deliver(self, topic: str, payload: bytes) -> int:
        """A message arriving from IoT Core; returns how many subscriptions it was handed to."""
        targets = [op for op in self.live_subscriptions() if op.topic == topic]
        for op in targets:
            event = IoTCoreMessage(message=MQTTMessage(topic_name=topic, payload=payload))
            self._in_thread(op.handlers["event"], event)
        return len(targets)

    def merge_configuration(self, values: dict[str, Any]) -> None:
        """A deployment merging `values`: one event per changed key, as the nucleus sends them."""
        self.configuration.update(copy.deepcopy(values))
        for key in values:
            event = ConfigurationUpdateEvents(configuration_update_event=ConfigurationUpdateEvent(
                component_name=COMPONENT, key_path=[key]))
            for op in self.config_streams:
                if not op.closed:
                    self._in_thread(op.handlers["event"], event)

    def stream_error(self, operation: FakeOperation, error: Exception) -> bool:
        return self._in_thread(operation.handlers["error"], error)

    def wait_published(self, predicate: Callable[[str, dict], bool], start: int = 0,
                       timeout: float = 60.0) -> tuple[int, dict]:
        """Index and JSON of the first published message from `start` on that matches."""
        deadline = time.monotonic() + timeout
        with self._published:
            index = start
            while True:
                while index < len(self.published):
                    topic, payload, _qos = self.published[index]
                    message = json.loads(payload)
                    if predicate(topic, message):
                        return index, message
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching message within {timeout} s")
                self._published.wait(remaining)


@pytest.fixture
def client() -> FakeIPCClient:
    return FakeIPCClient(recipe_defaults())


@pytest.fixture
def transport(client: FakeIPCClient) -> GreengrassTransport:
    transport = GreengrassTransport(client, config_debounce_s=0.05)
    yield transport
    transport.close()
    assert client.violations == [], "IPC calls were made from inside stream callbacks"


class Inbox:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.threads: set[str] = set()

    def __call__(self, payload: bytes) -> None:
        self.payloads.append(payload)
        self.threads.add(threading.current_thread().name)


def test_input_topic_is_subscribed_and_output_is_published_never_swapped(client, transport) -> None:
    inbox = Inbox()
    transport.start("inference/input", inbox)
    assert transport.name == "greengrass"
    (subscription,) = client.subscriptions
    assert subscription.topic == "inference/input"
    assert subscription.handlers["qos"] == "1"
    assert transport.connected()

    assert client.deliver("inference/input", b'{"status": "start"}') == 1
    assert inbox.payloads == [b'{"status": "start"}']
    assert threading.main_thread().name not in inbox.threads  # delivered from the nucleus' thread

    transport.publish("inference/output", b'{"type": "frame"}')
    assert client.published == [("inference/output", b'{"type": "frame"}', "1")]
    # Nothing listens on the output topic, and nothing was published to the input topic.
    assert client.deliver("inference/output", b'{"status": "stop"}') == 0
    assert inbox.payloads == [b'{"status": "start"}']


def test_changing_the_input_topic_resubscribes_and_drops_the_old_one(client, transport) -> None:
    inbox = Inbox()
    transport.start("inference/input", inbox)
    old = client.subscriptions[0]
    transport.set_input_topic("lab/dev1/in")
    assert old.closed
    assert [op.topic for op in client.live_subscriptions()] == ["lab/dev1/in"]
    assert client.deliver("inference/input", b"old") == 0
    assert client.deliver("lab/dev1/in", b"new") == 1
    # A message already in flight on the old stream when it was replaced is dropped.
    old.handlers["event"](IoTCoreMessage(message=MQTTMessage(topic_name="inference/input", payload=b"late")))
    assert inbox.payloads == [b"new"]
    transport.set_input_topic("lab/dev1/in")  # unchanged: no new subscription
    assert len(client.subscriptions) == 2


def test_a_topic_change_before_start_is_not_lost(client, transport) -> None:
    transport.set_input_topic("lab/new/in")  # the controller applied a configuration update first
    assert client.subscriptions == []
    transport.start("inference/input", Inbox())
    assert [op.topic for op in client.live_subscriptions()] == ["lab/new/in"]


def test_a_subscription_closed_by_the_nucleus_is_reported_and_renewed(client, transport) -> None:
    inbox = Inbox()
    transport.start("inference/input", inbox)
    first = client.subscriptions[0]
    first.closed = True  # the nucleus ends the stream
    client._in_thread(first.handlers["closed"])
    assert not transport.connected()
    assert client.deliver("inference/input", b"lost") == 0
    transport.set_input_topic("inference/input")  # same topic, but the stream is gone: subscribe again
    assert transport.connected()
    assert [op.topic for op in client.live_subscriptions()] == ["inference/input"]
    assert client.deliver("inference/input", b"again") == 1
    assert inbox.payloads == [b"again"]


def test_text_payloads_become_bytes_and_a_failing_handler_keeps_the_stream(client, transport, caplog) -> None:
    received: list[bytes] = []

    def handler(payload: bytes) -> None:
        received.append(payload)
        if payload == b"boom":
            raise ValueError("handler bug")

    transport.start("inference/input", handler)
    op = client.subscriptions[0]
    client._in_thread(op.handlers["event"], IoTCoreMessage(message=MQTTMessage(
        topic_name="inference/input", payload='{"status": "pause"}')))
    with caplog.at_level(logging.ERROR):
        client.deliver("inference/input", b"boom")
    client.deliver("inference/input", b"after")
    assert received == [b'{"status": "pause"}', b"boom", b"after"]
    assert "command handler failed" in caplog.text


def test_stream_errors_keep_the_stream_and_are_logged(client, transport, caplog) -> None:
    transport.start("inference/input", Inbox())
    transport.watch_configuration(lambda mapping: None)
    with caplog.at_level(logging.WARNING):
        assert client.stream_error(client.subscriptions[0], RuntimeError("socket hiccup")) is False
        assert client.stream_error(client.config_streams[0], RuntimeError("bad frame")) is False
    assert "socket hiccup" in caplog.text and "bad frame" in caplog.text
    assert transport.connected()


def test_read_configuration_returns_the_whole_mapping(client, transport) -> None:
    mapping = transport.read_configuration()
    assert client.get_configuration_calls == [[]]
    assert mapping == recipe_defaults()
    assert "accessControl" in mapping
    assert Config.from_mapping(mapping) == Config()


def test_configuration_updates_are_reread_once_per_burst_and_delivered(client, transport) -> None:
    delivered: list[dict] = []
    arrived = threading.Event()

    def on_config(mapping: dict) -> None:
        delivered.append(mapping)
        arrived.set()

    transport.watch_configuration(on_config)
    assert client.config_streams[0].handlers["key_path"] == []
    client.merge_configuration({"model_loc": "yolov8s.onnx", "conf_threshold": "0.5", "camera_id": "1"})
    assert arrived.wait(5)
    time.sleep(0.2)  # nothing more should come for this burst
    assert len(delivered) == 1
    assert client.get_configuration_calls == [[]]
    assert delivered[0]["model_loc"] == "yolov8s.onnx" and delivered[0]["camera_id"] == "1"
    assert Config.from_mapping(delivered[0]).conf_threshold == 0.5

    arrived.clear()
    client.merge_configuration({"max_det": "10"})
    assert arrived.wait(5)
    assert len(delivered) == 2 and delivered[1]["max_det"] == "10"
    with pytest.raises(TransportError, match="only once"):
        transport.watch_configuration(on_config)


def test_a_failing_reread_is_logged_and_the_next_update_still_arrives(client, transport, caplog) -> None:
    delivered: list[dict] = []
    arrived = threading.Event()
    transport.watch_configuration(lambda m: (delivered.append(m), arrived.set()))
    client.failures["get_configuration"] = ServiceError(message="nucleus busy")
    with caplog.at_level(logging.ERROR):
        client.merge_configuration({"max_det": "5"})
        deadline = time.monotonic() + 5
        while "nucleus busy" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "nucleus busy" in caplog.text and delivered == []
    del client.failures["get_configuration"]
    client.merge_configuration({"max_det": "6"})
    assert arrived.wait(5)
    assert delivered[-1]["max_det"] == "6"


@pytest.mark.parametrize(("error", "text", "retryable"), [
    (UnauthorizedError(message="Principal com.yoloedge.inference is not authorized to perform aws.greengrass."
                               "ipc.mqttproxy:aws.greengrass#PublishToIoTCore on resource x/y"),
     "UnauthorizedError", False),
    (InvalidArgumentsError(message="bad topic"), "InvalidArgumentsError", False),
    (ServiceError(message="Message size exceeds the configured limit of 131072 bytes"), "ServiceError", False),
    (ServiceError(message="Spooler queue is full"), "ServiceError", True),
    (ConnectionClosedError("lost"), "ConnectionClosedError", True),
])
def test_publish_errors_become_transport_errors(client, transport, error, text, retryable) -> None:
    client.failures["publish_to_iot_core"] = error
    with pytest.raises(TransportError) as raised:
        transport.publish("inference/output", b"{}")
    assert text in str(raised.value) and "inference/output" in str(raised.value)
    assert raised.value.__cause__ is error
    # A message the nucleus refuses for good must not be retried (and block the ones behind it).
    assert getattr(raised.value, "retryable", True) is retryable
    assert isinstance(raised.value, MessageRejected) is (not retryable)


def test_subscribe_and_configuration_errors_become_transport_errors(client, transport) -> None:
    client.failures["subscribe_to_iot_core"] = UnauthorizedError(message="not authorized: inference/input")
    with pytest.raises(TransportError, match="subscribe to 'inference/input' failed: UnauthorizedError: not auth"):
        transport.start("inference/input", Inbox())
    assert not transport.connected()
    client.failures["get_configuration"] = ConnectionClosedError("gone")
    with pytest.raises(TransportError, match="get_configuration failed"):
        transport.read_configuration()
    client.failures["update_state"] = ServiceError(message="x")
    with pytest.raises(TransportError, match="update_state"):
        transport.report_error()


def test_report_error_and_close(client, transport) -> None:
    transport.start("inference/input", Inbox())
    transport.watch_configuration(lambda m: None)
    transport.report_error()
    assert client.states == ["ERRORED"]
    transport.close()
    transport.close()  # idempotent
    assert client.closed
    assert all(op.closed for op in client.subscriptions + client.config_streams)
    assert not transport.connected()
    with pytest.raises(TransportError, match="closed"):
        transport.publish("inference/output", b"{}")


def test_greengrass_available_needs_the_nucleus_variables(monkeypatch) -> None:
    assert greengrass_available({"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": "/s", "SVCUID": "t"})
    assert not greengrass_available({"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": "/s"})
    assert not greengrass_available({})
    monkeypatch.delenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", raising=False)
    monkeypatch.delenv("SVCUID", raising=False)
    assert not greengrass_available()
    with pytest.raises(TransportError, match="AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"):
        GreengrassTransport().read_configuration()


@pytest.mark.integration
def test_configuration_update_swaps_the_model_of_a_running_component(random_model, sample_video) -> None:
    """End to end through the fake nucleus: start by a command on the input topic, frames from the
    detect model, then a deployment merges a new model_loc and the next frames come from it."""
    from yolo_edge.app import Component

    detect, segment = random_model("detect", 320), random_model("segment", 320)
    client = FakeIPCClient({**recipe_defaults(), "model_loc": str(detect), "camera_id": str(sample_video),
                            "loop_source": "true", "MODEL_HEIGHT": "320", "MODEL_WIDTH": "320",
                            "max_publish_rate": "0", "summary_interval_s": "0"})
    # Wired as `yolo-edge run --greengrass` does.
    transport = GreengrassTransport(client, config_debounce_s=0.05)
    config = Config.from_mapping(transport.read_configuration())
    component = Component(config, transport)
    transport.watch_configuration(component.submit_config)
    component.start()
    try:
        def on_output(kind: str, extra: Callable[[dict], bool] = lambda m: True) -> Callable[[str, dict], bool]:
            return lambda topic, m: topic == "inference/output" and m.get("type") == kind and extra(m)

        client.wait_published(on_output("status", lambda m: m["event"] == "model_loaded"))
        assert client.deliver("inference/input", b'{"status": "start"}') == 1
        index, frame = client.wait_published(on_output("frame"))
        assert frame["model"]["task"] == "detect" and frame["model"]["format"] == "onnx"

        client.merge_configuration({"model_loc": str(segment)})
        index, applied = client.wait_published(on_output("status", lambda m: m["event"] == "config_applied"), index)
        assert "model_loc" in applied["changed"]
        index, first_new = client.wait_published(on_output("frame", lambda m: m["model"]["task"] == "segment"), index)
        for _ in range(3):
            index, later = client.wait_published(on_output("frame"), index + 1)
            assert later["model"]["task"] == "segment", "frames after the swap must use the new model"
        assert first_new["model"]["name"] != frame["model"]["name"]
        assert all(topic == "inference/output" and qos == "1" for topic, _p, qos in client.published)
        assert [op.topic for op in client.live_subscriptions()] == ["inference/input"]
    finally:
        component.stop()
    assert client.closed
    assert client.violations == []
