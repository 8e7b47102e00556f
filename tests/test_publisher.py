"""The publisher: its bounded buffer while the transport is down (frames dropped first, the count
reported), messages it cannot encode or that the transport refuses, and messages fitted under the size
limit of the transport or of the configuration. Against a transport whose connection the test switches."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
from harness import OUT, wait_until

from yolo_edge.app import Component
from yolo_edge.config import Config

pytestmark = [pytest.mark.runtime, pytest.mark.integration]


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


def test_publisher_drops_frames_first_while_disconnected_and_reports_the_count():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    publisher = Publisher(transport, lambda kind: OUT, capacity=5, retry_interval_s=0.05).start()
    try:
        publisher.submit({"type": "state", "reason": "start command"})
        for seq in range(1, 11):
            publisher.submit(_frame(seq))
        publisher.submit({"type": "summary", "reason": "final"})
        wait_until(lambda: publisher.dropped == 7)
        assert publisher.pending() == 5 and transport.published == []
        transport.up = True
        wait_until(lambda: publisher.pending() == 0)
        assert transport.kinds() == ["messages_dropped", "start command", 8, 9, 10, "final"]
        assert transport.published[0]["dropped"] == 7 and transport.published[0]["dropped_total"] == 7
    finally:
        publisher.close(1.0)


def test_publisher_buffer_is_bounded_in_bytes_too():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    publisher = Publisher(transport, lambda kind: OUT, capacity=1000, capacity_bytes=50_000,
                          retry_interval_s=0.05).start()
    try:
        for seq in range(1, 101):
            publisher.submit(_frame(seq, pad=10_000))  # ~10 KB each: 5 fit
        wait_until(lambda: publisher.dropped >= 95)
        assert publisher.pending() <= 5
        transport.up = True
        wait_until(lambda: publisher.pending() == 0)
        assert transport.kinds()[0] == "messages_dropped" and transport.kinds()[-1] == 100
    finally:
        publisher.close(1.0)


def test_publisher_survives_messages_it_cannot_encode_or_the_transport_rejects():
    from yolo_edge.publisher import Publisher

    transport = SwitchedTransport()
    transport.up = True
    publisher = Publisher(transport, lambda kind: OUT, retry_interval_s=0.05).start()
    try:
        publisher.submit({"type": "summary", "fps": float("nan")})  # not JSON: dropped, counted
        transport.reject = ValueError("payload rejected")  # not a TransportError: dropped, counted
        publisher.submit(_frame(1))
        wait_until(lambda: publisher.failed == 2)
        transport.reject = None
        publisher.submit(_frame(2))
        wait_until(lambda: transport.kinds() == [2])
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
    publisher = Publisher(transport, lambda kind: OUT, retry_interval_s=0.05).start()
    try:
        transport.reject = Refused("not authorized")
        publisher.submit(_frame(1))
        wait_until(lambda: publisher.failed == 1)
        transport.reject = TransportError("spooler full")
        publisher.submit(_frame(2))
        time.sleep(0.2)
        assert publisher.pending() == 1 and publisher.failed == 1
        transport.reject = None
        publisher.submit(_frame(3))
        wait_until(lambda: transport.kinds() == [2, 3])
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
    publisher = Publisher(transport, lambda kind: OUT, retry_interval_s=0.05, max_bytes=limit).start()
    try:
        publisher.submit(_many_detections_frame(1))
        wait_until(lambda: len(transport.published) == 1)
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
