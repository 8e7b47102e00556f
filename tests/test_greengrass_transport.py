"""GreengrassTransport with the real awsiotsdk client (GreengrassCoreIPCClientV2 over awscrt),
connected to a test nucleus that speaks eventstream RPC on a Unix socket (greengrass_ipc_server)."""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import greengrass_ipc_server as wire
import pytest
import yaml
from greengrass_ipc_server import GreengrassIpcServer
from harness import wait_until

from yolo_edge.config import Config
from yolo_edge.transport import TransportError
from yolo_edge.transport.greengrass import (
    CALLBACK_THREAD_PREFIX,
    IPC_SOCKET_ENV,
    GreengrassTransport,
    MessageRejected,
    greengrass_available,
    nucleus_payload_limit,
)

pytestmark = pytest.mark.runtime

REPO = Path(__file__).resolve().parent.parent
IN, OUT = "inference/input", "inference/output"
WAIT_S = 10.0  # for what the transport does on its own threads


def recipe_defaults() -> dict[str, Any]:
    recipe = yaml.safe_load((REPO / "recipe.yaml").read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]


@pytest.fixture
def nucleus() -> Iterator[GreengrassIpcServer]:
    with GreengrassIpcServer(recipe_defaults()) as server:
        yield server
    assert server.protocol_errors == [], "the client sent something that is not eventstream RPC"


@pytest.fixture
def transport(nucleus: GreengrassIpcServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GreengrassTransport]:
    for name, value in nucleus.environment().items():
        monkeypatch.setenv(name, value)
    transport = GreengrassTransport(config_debounce_s=0.05)
    yield transport
    transport.close()


class Inbox:
    """A command handler that records payloads and the threads they arrived on."""

    def __init__(self, before: Callable[[bytes], None] | None = None) -> None:
        self.payloads: list[bytes] = []
        self.threads: set[str] = set()
        self._before = before
        self._changed = threading.Condition()

    def __call__(self, payload: bytes) -> None:
        if self._before is not None:
            self._before(payload)
        with self._changed:
            self.payloads.append(payload)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def wait_count(self, count: int, timeout: float = 10.0) -> list[bytes]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.payloads) >= count, timeout):
                raise AssertionError(f"{len(self.payloads)} of {count} messages arrived: {self.payloads}")
            return list(self.payloads)


def test_connects_with_the_nucleus_token_subscribes_and_publishes_never_swapped(nucleus, transport) -> None:
    inbox = Inbox()
    transport.start(IN, inbox)
    assert transport.name == "greengrass"
    assert nucleus.connect_tokens == [nucleus.token]
    (subscription,) = nucleus.calls("SubscribeToIoTCore")
    assert subscription.body == {"topicName": IN, "qos": "1"}
    assert nucleus.subscribed_topics() == [IN]
    assert transport.connected()
    assert nucleus.states == ["RUNNING"], "the component reports RUNNING once it takes commands"

    assert nucleus.send_iot_message(IN, b'{"status": "start"}') == 1
    assert inbox.wait_count(1) == [b'{"status": "start"}']
    # Delivered on the client's callback thread, neither the caller's nor the network thread.
    assert all(name.startswith(CALLBACK_THREAD_PREFIX) for name in inbox.threads), inbox.threads

    transport.publish(OUT, b'{"type": "frame"}')
    (published,) = nucleus.published
    assert (published.topic, published.qos, published.json()) == (OUT, "1", {"type": "frame"})
    # Nothing listens on the output topic.
    assert nucleus.send_iot_message(OUT, b'{"status": "stop"}') == 0


def test_commands_reach_the_handler_in_the_order_the_nucleus_sent_them(nucleus, transport) -> None:
    """awsiotsdk runs stream callbacks on an executor; with its default thread pool, a callback
    thread preempted mid-way (a loaded device) lets the next command overtake it."""
    jitter = random.Random(7)
    inbox = Inbox(before=lambda _payload: time.sleep(jitter.uniform(0, 0.002)))
    transport.start(IN, inbox)
    sent = [json.dumps({"status": "start" if i % 2 == 0 else "stop", "request_id": str(i)}).encode()
            for i in range(120)]
    for payload in sent:
        nucleus.send_iot_message(IN, payload)
    assert inbox.wait_count(len(sent), timeout=30) == sent


def test_changing_the_input_topic_resubscribes_and_drops_the_old_one(nucleus, transport, caplog) -> None:
    release, blocked = threading.Event(), threading.Event()

    def hold_the_callback_thread(payload: bytes) -> None:
        if payload == b"hold":
            blocked.set()
            release.wait(10)

    inbox = Inbox(before=hold_the_callback_thread)
    transport.start(IN, inbox)
    nucleus.send_iot_message(IN, b"hold")
    assert blocked.wait(10)
    # A message that the client has already queued for the old subscription when it is replaced:
    # the stream error after it is reported on the network thread only once "late" is queued.
    caplog.set_level(logging.WARNING)
    nucleus.send_iot_message(IN, b"late")
    nucleus.send_malformed_event("SubscribeToIoTCore")
    wait_until(lambda: "IPC stream error" in caplog.text, WAIT_S, what="stream error")

    transport.set_input_topic("lab/dev1/in")
    release.set()
    nucleus.wait_until(lambda: nucleus.subscribed_topics() == ["lab/dev1/in"], what="old subscription closed")
    old = nucleus.all_streams("SubscribeToIoTCore")[0]
    assert old.closed_by_client
    assert nucleus.send_iot_message(IN, b"old") == 0
    assert nucleus.send_iot_message("lab/dev1/in", b"new") == 1
    assert inbox.wait_count(2) == [b"hold", b"new"]

    transport.set_input_topic("lab/dev1/in")  # unchanged: no new subscription
    assert len(nucleus.calls("SubscribeToIoTCore")) == 2


def test_a_topic_change_before_start_is_not_lost(nucleus, transport) -> None:
    transport.set_input_topic("lab/new/in")  # the controller applied a configuration update first
    assert nucleus.calls("SubscribeToIoTCore") == []
    transport.start(IN, Inbox())
    assert nucleus.subscribed_topics() == ["lab/new/in"]


def test_a_subscription_closed_by_the_nucleus_is_reported_and_renewed(nucleus, transport, caplog) -> None:
    inbox = Inbox()
    transport.start(IN, inbox)
    with caplog.at_level(logging.WARNING):
        assert nucleus.end_subscriptions(IN) == 1
        wait_until(lambda: "closed by the nucleus" in caplog.text, WAIT_S, what="closed subscription reported")
    assert not transport.connected()
    assert nucleus.send_iot_message(IN, b"lost") == 0
    transport.set_input_topic(IN)  # same topic, but the stream is gone: subscribe again
    assert transport.connected()
    assert nucleus.subscribed_topics() == [IN]
    nucleus.send_iot_message(IN, b"again")
    assert inbox.wait_count(1) == [b"again"]


def test_a_failing_handler_keeps_the_stream(nucleus, transport, caplog) -> None:
    def explode(payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("handler bug")

    inbox = Inbox(before=explode)
    transport.start(IN, inbox)
    with caplog.at_level(logging.ERROR):
        for payload in (b'{"status": "pause"}', b"boom", b"after"):
            nucleus.send_iot_message(IN, payload)
        assert inbox.wait_count(2) == [b'{"status": "pause"}', b"after"]
    assert "command handler failed" in caplog.text and "handler bug" in caplog.text


def test_stream_errors_keep_the_stream_are_logged_and_block_nothing(nucleus, transport, caplog) -> None:
    inbox = Inbox()
    transport.start(IN, inbox)
    transport.watch_configuration(lambda mapping: None)
    with caplog.at_level(logging.WARNING):
        assert nucleus.send_malformed_event("SubscribeToIoTCore") == 1
        assert nucleus.send_malformed_event("SubscribeToConfigurationUpdate") == 1
        wait_until(lambda: caplog.text.count("IPC stream error") == 2, WAIT_S, what="two stream errors logged")
    assert "subscription to 'inference/input'" in caplog.text and "configuration update" in caplog.text
    # on_stream_error runs on the client's network thread: had it blocked there, nothing below would pass.
    nucleus.send_iot_message(IN, b"still here")
    assert inbox.wait_count(1) == [b"still here"]
    transport.publish(OUT, b"{}")
    assert transport.connected()
    assert len(nucleus.open_streams("SubscribeToConfigurationUpdate")) == 1


def test_read_configuration_returns_the_whole_mapping(nucleus, transport) -> None:
    mapping = transport.read_configuration()
    (call,) = nucleus.calls("GetConfiguration")
    assert call.body == {"keyPath": []}
    assert mapping == recipe_defaults()
    assert "accessControl" in mapping
    assert Config.from_mapping(mapping) == Config()


def test_configuration_updates_are_reread_once_per_burst_and_delivered(nucleus, transport) -> None:
    delivered: list[dict] = []
    arrived = threading.Event()

    def on_config(mapping: dict) -> None:
        delivered.append(mapping)
        arrived.set()

    transport.watch_configuration(on_config)
    (subscription,) = nucleus.calls("SubscribeToConfigurationUpdate")
    assert subscription.body == {"keyPath": []}
    assert nucleus.merge_configuration({"model_loc": "yolov8s.onnx", "conf_threshold": "0.5", "camera_id": "1"}) == 3
    assert arrived.wait(5)
    time.sleep(0.2)  # nothing more should come for this burst
    assert len(delivered) == 1
    assert len(nucleus.calls("GetConfiguration")) == 1
    assert delivered[0]["model_loc"] == "yolov8s.onnx" and delivered[0]["camera_id"] == "1"
    assert Config.from_mapping(delivered[0]).conf_threshold == 0.5

    arrived.clear()
    nucleus.merge_configuration({"max_det": "10"})
    assert arrived.wait(5)
    assert len(delivered) == 2 and delivered[1]["max_det"] == "10"
    with pytest.raises(TransportError, match="only once"):
        transport.watch_configuration(on_config)


def test_a_failing_reread_is_logged_and_the_next_update_still_arrives(nucleus, transport, caplog) -> None:
    delivered: list[dict] = []
    arrived = threading.Event()
    transport.watch_configuration(lambda m: (delivered.append(m), arrived.set()))
    nucleus.fail("GetConfiguration", "ServiceError", "nucleus busy", times=1)
    with caplog.at_level(logging.ERROR):
        nucleus.merge_configuration({"max_det": "5"})
        wait_until(lambda: "nucleus busy" in caplog.text, WAIT_S, what="failed re-read logged")
    assert delivered == []
    nucleus.merge_configuration({"max_det": "6"})
    assert arrived.wait(5)
    assert delivered[-1]["max_det"] == "6"


@pytest.mark.parametrize(("error", "message", "retryable"), [
    ("UnauthorizedError", "Principal com.yoloedge.inference is not authorized to perform aws.greengrass."
                          "ipc.mqttproxy:aws.greengrass#PublishToIoTCore on resource inference/output", False),
    ("InvalidArgumentsError", "bad topic", False),
    ("ServiceError", "Message size exceeds the configured limit of 131072 bytes", False),
    ("ServiceError", "Spooler queue is full", True),
])
def test_publish_errors_become_transport_errors(nucleus, transport, error, message, retryable) -> None:
    nucleus.fail("PublishToIoTCore", error, message, times=1)
    with pytest.raises(TransportError) as raised:
        transport.publish(OUT, b"{}")
    text = str(raised.value)
    assert error in text and message in text and OUT in text
    assert type(raised.value.__cause__).__name__ == error
    # A message the nucleus refuses for good must not be retried (and block the ones behind it).
    assert getattr(raised.value, "retryable", True) is retryable
    assert isinstance(raised.value, MessageRejected) is (not retryable)
    transport.publish(OUT, b'{"next": 1}')  # the failure was for that message only
    assert [p.json() for p in nucleus.published] == [{"next": 1}]


def test_a_lost_nucleus_connection_is_a_retryable_transport_error(nucleus, transport) -> None:
    transport.start(IN, Inbox())
    nucleus.drop_connections()
    wait_until(lambda: not transport.connected(), WAIT_S, what="lost connection noticed")
    with pytest.raises(TransportError) as raised:
        transport.publish(OUT, b"{}")
    # ConnectionClosedError, or awscrt's own error when the drop is still being processed.
    assert "ConnectionClosedError" in str(raised.value) or "CONNECTION_CLOSED" in str(raised.value)
    assert getattr(raised.value, "retryable", True) is True


def test_subscribe_and_configuration_errors_become_transport_errors(nucleus, transport) -> None:
    nucleus.fail("SubscribeToIoTCore", "UnauthorizedError", "not authorized: inference/input")
    with pytest.raises(TransportError, match="subscribe to 'inference/input' failed: UnauthorizedError: not auth"):
        transport.start(IN, Inbox())
    assert not transport.connected()
    nucleus.fail("GetConfiguration", "ResourceNotFoundError", "no such key")
    with pytest.raises(TransportError, match="get_configuration failed: ResourceNotFoundError: no such key"):
        transport.read_configuration()
    nucleus.fail("UpdateState", "ServiceError", "state store down")
    with pytest.raises(TransportError, match="update_state.*state store down"):
        transport.report_error()


def test_a_refused_running_report_does_not_stop_the_start(nucleus, transport, caplog) -> None:
    nucleus.fail("UpdateState", "ServiceError", "not now", times=1)
    with caplog.at_level(logging.WARNING):
        transport.start(IN, Inbox())
    assert transport.connected()
    assert "could not report RUNNING" in caplog.text and "not now" in caplog.text


def test_close_ends_the_streams_before_the_connection_without_a_traceback(nucleus, transport, caplog,
                                                                          capfd) -> None:
    caplog.set_level(logging.DEBUG)
    inbox = Inbox()
    transport.start(IN, inbox)
    transport.watch_configuration(lambda m: None)
    transport.set_input_topic("lab/other/in")  # a replaced subscription is closed too
    transport.report_error()
    assert nucleus.states == ["RUNNING", "ERRORED"]
    for _ in range(20):  # events in flight while closing
        nucleus.send_iot_message("lab/other/in", b"{}")
    transport.close()
    transport.close()  # idempotent
    nucleus.wait_until(lambda: not any(nucleus.open_streams(op) for op in
                                       ("SubscribeToIoTCore", "SubscribeToConfigurationUpdate")))
    streams = nucleus.all_streams("SubscribeToIoTCore") + nucleus.all_streams("SubscribeToConfigurationUpdate")
    assert len(streams) == 3 and all(stream.closed_by_client for stream in streams), \
        "each stream is ended by the client (TERMINATE_STREAM), not by the connection going away"
    assert "configuration update stream closed" in caplog.text  # its on_stream_closed ran
    assert not transport.connected()
    with pytest.raises(TransportError, match="closed"):
        transport.publish(OUT, b"{}")
    time.sleep(0.2)  # late callbacks of the closed connection, if any, would log now
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Traceback" not in logged and "cannot schedule new futures" not in logged, logged


def test_a_wrong_token_or_no_nucleus_is_a_clear_error(nucleus, monkeypatch) -> None:
    env = nucleus.environment(token="not-the-svcuid")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TransportError, match="cannot connect to the Greengrass nucleus over IPC: AccessDeniedError"):
        GreengrassTransport().read_configuration()
    assert nucleus.connect_tokens == ["not-the-svcuid"]

    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", nucleus.socket_path + ".missing")
    with pytest.raises(TransportError, match="cannot connect to the Greengrass nucleus over IPC"):
        GreengrassTransport().read_configuration()


def test_greengrass_available_needs_the_nucleus_variables(monkeypatch) -> None:
    environ = {"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": "/s", "SVCUID": "t"}
    assert greengrass_available(environ)
    assert not greengrass_available({"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": "/s"})
    assert not greengrass_available({})
    monkeypatch.delenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", raising=False)
    monkeypatch.delenv("SVCUID", raising=False)
    assert not greengrass_available()
    with pytest.raises(TransportError, match="AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"):
        GreengrassTransport().read_configuration()



def test_the_test_nucleus_frames_every_header_type_and_checks_both_crcs() -> None:
    """The framing under the tests above: what the real client accepts must also round-trip."""
    headers = [("t", wire.BOOL_TRUE, True), ("f", wire.BOOL_FALSE, False), ("b", wire.BYTE, -7),
               ("s", wire.INT16, -300), (":stream-id", wire.INT32, 2**31 - 1), ("l", wire.INT64, -(2**40)),
               ("raw", wire.BYTE_BUF, b"\x00\xff"), ("operation", wire.STRING, "aws.greengrass#Ping"),
               ("when", wire.TIMESTAMP, 1_700_000_000_000), ("id", wire.UUID, uuid.UUID(int=12345))]
    encoded = wire.encode_message(headers, b'{"k": 1}')
    message = read_back(encoded)
    assert message is not None and message.payload == b'{"k": 1}' and message.stream_id == 2**31 - 1
    assert {name: value for name, (_kind, value) in message.headers.items()} == \
        {name: value for name, _kind, value in headers}
    for corrupt_at in (9, len(encoded) - 6):  # inside the prelude CRC, inside the payload
        damaged = bytearray(encoded)
        damaged[corrupt_at] ^= 0x01
        with pytest.raises(wire.ProtocolError, match="CRC"):
            read_back(bytes(damaged))


def read_back(data: bytes) -> wire.Message | None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(data)
        left.shutdown(socket.SHUT_WR)
        return wire.read_message(right)


@pytest.fixture
def quick_transport(nucleus: GreengrassIpcServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GreengrassTransport]:
    """A transport that retries a lost connection after 50 ms, then 100, 200 ms."""
    for name, value in nucleus.environment().items():
        monkeypatch.setenv(name, value)
    transport = GreengrassTransport(config_debounce_s=0.05, reconnect_delays_s=(0.05, 0.2))
    yield transport
    transport.close()


def test_a_lost_connection_is_reconnected_with_both_streams_and_the_missed_configuration(
        nucleus, quick_transport, caplog) -> None:
    inbox = Inbox()
    configurations: list[dict[str, Any]] = []
    quick_transport.start(IN, inbox)
    quick_transport.watch_configuration(configurations.append)
    assert len(nucleus.connect_tokens) == 1
    with caplog.at_level(logging.INFO):
        nucleus.drop_connections()
        nucleus.wait_until(lambda: len(nucleus.connect_tokens) == 2, what="a new connection")
        wait_until(quick_transport.connected, WAIT_S, what="the command subscription back")
        nucleus.wait_until(lambda: len(nucleus.open_streams("SubscribeToConfigurationUpdate")) == 1,
                           what="the configuration stream back")
    assert "closed by the nucleus; reconnecting" in caplog.text and "reconnected to the nucleus" in caplog.text
    assert quick_transport.reconnects == 1
    wait_until(lambda: len(configurations) == 1, WAIT_S, what="the configuration re-read after the outage")
    nucleus.send_iot_message(IN, b'{"status": "start"}')
    assert inbox.wait_count(1) == [b'{"status": "start"}']
    quick_transport.publish(OUT, b'{"type": "state"}')
    nucleus.wait_published(lambda m: m.topic == OUT)
    nucleus.merge_configuration({"conf_threshold": "0.5"})
    wait_until(lambda: len(configurations) == 2 and configurations[-1]["conf_threshold"] == "0.5", WAIT_S,
               what="a configuration update on the new stream")


def test_a_subscription_the_nucleus_ends_is_renewed_by_itself(nucleus, quick_transport) -> None:
    inbox = Inbox()
    quick_transport.start(IN, inbox)
    assert nucleus.end_subscriptions(IN) == 1
    nucleus.wait_until(lambda: nucleus.subscribed_topics() == [IN] and len(nucleus.connect_tokens) == 2,
                       what="resubscribed on a new connection")
    wait_until(quick_transport.connected, WAIT_S, what="connected again")
    nucleus.send_iot_message(IN, b"again")
    assert inbox.wait_count(1) == [b"again"]


def test_reconnecting_backs_off_while_the_nucleus_is_away_and_close_ends_it(nucleus, quick_transport, caplog) -> None:
    quick_transport.start(IN, Inbox())
    with caplog.at_level(logging.WARNING):
        nucleus.stop()  # no nucleus at all: every attempt fails
        wait_until(lambda: caplog.text.count("reconnecting to the nucleus failed") >= 3, WAIT_S,
                   what="three failed attempts")
    delays = [float(d) for d in re.findall(r"next attempt in ([0-9.]+) s", caplog.text)]
    assert delays[:3] == [0.1, 0.2, 0.2]  # doubled, capped
    started = time.monotonic()
    quick_transport.close()
    assert time.monotonic() - started < 1.5 and not quick_transport.connected()


@pytest.mark.parametrize(("socket_name", "limit"), [("gg-ipc.socket", 7000), ("ipc.socket", 128 * 1024)])
def test_the_payload_limit_follows_the_nucleus(socket_name, limit, monkeypatch) -> None:
    with GreengrassIpcServer(recipe_defaults(), socket_name=socket_name) as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        transport = GreengrassTransport()
        try:
            assert transport.max_payload_bytes == limit
        finally:
            transport.close()
    assert nucleus_payload_limit({IPC_SOCKET_ENV: "/run/greengrass/gg-ipc.socket"}) == 7000
    assert nucleus_payload_limit({}) == 128 * 1024


def test_reconnecting_gives_up_once_after_the_set_time(nucleus, monkeypatch, caplog) -> None:
    for name, value in nucleus.environment().items():
        monkeypatch.setenv(name, value)
    reasons: list[str] = []
    transport = GreengrassTransport(reconnect_delays_s=(0.05, 0.1), give_up_after_s=0.3, on_gave_up=reasons.append)
    try:
        transport.start(IN, Inbox())
        with caplog.at_level(logging.ERROR):
            nucleus.stop()  # a nucleus that does not take this process back (lite forgets its token)
            wait_until(lambda: reasons, WAIT_S, what="giving up")
            time.sleep(0.5)  # later failures do not call it again
        assert len(reasons) == 1 and "reconnection attempts" in reasons[0]
        assert "giving up" in caplog.text
    finally:
        transport.close()
