"""Encodes and publishes messages on its own thread, off the inference path.

Messages wait in a bounded buffer while the transport is disconnected; when it is full the oldest
message is dropped and counted, and the count is reported once the connection is back, so memory
stays bounded however long the outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import messages
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 0.5


class Publisher:
    def __init__(self, transport: Transport, topic: Callable[[], str], capacity: int = 1000) -> None:
        self._transport = transport
        self._topic = topic
        self._buffer: deque[dict[str, Any]] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._closing = False
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self._unreported_drops = 0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def submit(self, message: dict[str, Any]) -> None:
        with self._cond:
            if len(self._buffer) >= self._capacity:
                self._buffer.popleft()
                self.dropped += 1
                self._unreported_drops += 1
            self._buffer.append(message)
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer)

    def close(self, flush_timeout: float = 2.0) -> None:
        """Publish what is buffered (up to `flush_timeout` seconds), then stop."""
        deadline = time.monotonic() + flush_timeout
        with self._cond:
            self._cond.wait_for(lambda: not self._buffer, max(0.0, deadline - time.monotonic()))
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.1, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._buffer or self._closing)
                if self._closing:
                    return
                message = self._buffer[0]
                drops, self._unreported_drops = self._unreported_drops, 0
            if drops:
                self._send(messages.status_message(
                    "messages_dropped", f"{drops} messages were dropped while the connection was down "
                    f"(buffer of {self._capacity})", dropped=drops, dropped_total=self.dropped), retry=False)
            if self._send(message, retry=True):
                with self._cond:
                    if self._buffer and self._buffer[0] is message:
                        self._buffer.popleft()
                    self._cond.notify_all()

    def _send(self, message: dict[str, Any], retry: bool) -> bool:
        try:
            payload = messages.encode(message)
        except (TypeError, ValueError) as exc:
            self.failed += 1
            log.error("dropping unencodable %s message: %s", message.get("type"), exc)
            return True  # never retry a message that can never be sent
        while True:
            if self._transport.connected():
                try:
                    self._transport.publish(self._topic(), payload)
                    self.published += 1
                    return True
                except TransportError as exc:
                    log.warning("publish failed, will retry: %s", exc)
            if not retry:
                return False
            with self._cond:
                if self._closing:
                    return False
                self._cond.wait(RETRY_INTERVAL_S)
