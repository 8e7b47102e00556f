"""Encodes and publishes messages on its own thread, off the inference path.

Messages are encoded as soon as they arrive and wait, as bytes, in a buffer bounded both in count
and in bytes while the transport is disconnected (or refuses more). When the buffer is full the
oldest frame message is dropped (the oldest message of any kind only when no frame message is
left), so state, error and summary messages survive an outage. Drops are counted and reported in
a `messages_dropped` status message once messages flow again. Memory stays bounded however long
the outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import messages
from .codes import StatusEvent
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 0.5  # how often a disconnected publisher looks at the connection again
CAPACITY_MESSAGES = 1000
CAPACITY_BYTES = 16 * 1024 * 1024
_FRAME_TYPES = ("frame", "frames")
_Item = TypeVar("_Item")


@dataclass(frozen=True)
class _Encoded:
    kind: str
    payload: bytes


class Publisher:
    def __init__(self, transport: Transport, topic: Callable[[str], str], capacity: int = CAPACITY_MESSAGES,
                 capacity_bytes: int = CAPACITY_BYTES, retry_interval_s: float = RETRY_INTERVAL_S,
                 max_bytes: Callable[[], int] | None = None) -> None:
        self._transport = transport
        self._topic = topic
        self._max_bytes = max_bytes or (lambda: transport.max_payload_bytes)
        self._capacity = max(1, capacity)
        self._capacity_bytes = capacity_bytes
        self._retry_interval_s = retry_interval_s
        self._cond = threading.Condition()
        self._incoming: deque[dict[str, Any]] = deque()  # submitted, not encoded yet
        self._ready: deque[_Encoded] = deque()  # encoded, waiting for the transport
        self._ready_bytes = 0
        self._closing = False
        self._sending = False
        self._blocked = False  # last publish attempt failed (logged once per episode)
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self._unreported_drops = 0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def submit(self, message: dict[str, Any]) -> None:
        """Queue `message`; never blocks and never raises (called from the controller thread)."""
        with self._cond:
            self._incoming.append(message)
            if len(self._incoming) > self._capacity:
                # Only when the publisher thread itself is stuck (a transport call that blocks).
                self._incoming.remove(_oldest(self._incoming, lambda m: m.get("type")))
                self._count_drop()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._incoming) + len(self._ready) + int(self._sending)

    def close(self, flush_timeout: float = 2.0) -> None:
        """Publish what is buffered (for up to `flush_timeout` seconds), then stop. With the
        connection down, wait only a moment for it: a shutdown must not hang on an outage."""
        if not self._transport.connected():
            flush_timeout = min(flush_timeout, self._retry_interval_s)
        deadline = time.monotonic() + flush_timeout
        with self._cond:
            self._cond.notify_all()
            self._cond.wait_for(lambda: not (self._incoming or self._ready or self._sending),
                                max(0.0, deadline - time.monotonic()))
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.1, deadline - time.monotonic()))
        left = self.pending()
        if left:
            log.warning("%d messages were not published before shutdown", left)

    # ---- the publisher thread ----
    def _run(self) -> None:
        retry_at = 0.0
        while True:
            with self._cond:
                while not self._closing:
                    if self._incoming:
                        break
                    if self._ready:
                        wait = retry_at - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._closing:
                    return
                batch = list(self._incoming)
                self._incoming.clear()
                self._sending = bool(batch)  # being encoded: still pending for close()
            self._store([encoded for encoded in map(self._encode, batch) if encoded is not None])
            if not self._send_ready():
                retry_at = time.monotonic() + self._retry_interval_s

    def _encode(self, message: dict[str, Any]) -> _Encoded | None:
        try:
            return _Encoded(str(message.get("type", "")), messages.encode(message, limit=self._max_bytes()))
        except (TypeError, ValueError) as exc:
            self.failed += 1
            log.error("dropping unencodable %s message: %s", message.get("type"), exc)
            return None

    def _store(self, batch: list[_Encoded]) -> None:
        with self._cond:
            for item in batch:
                self._ready.append(item)
                self._ready_bytes += len(item.payload)
                while len(self._ready) > self._capacity or (
                        self._ready_bytes > self._capacity_bytes and len(self._ready) > 1):
                    self._drop_one()

    def _drop_one(self) -> None:
        victim = _oldest(self._ready, lambda item: item.kind)
        self._ready.remove(victim)
        self._ready_bytes -= len(victim.payload)
        self._count_drop()

    def _count_drop(self) -> None:
        self.dropped += 1
        self._unreported_drops += 1

    def _send_ready(self) -> bool:
        """Publish buffered messages in order; False when the transport cannot take more now."""
        while True:
            with self._cond:
                if not self._ready:
                    self._sending = False
                    self._cond.notify_all()
                    return True
                head = self._ready[0]
                drops, self._unreported_drops = self._unreported_drops, 0
                self._sending = True
            try:
                if not self._transport.connected():
                    raise TransportError("not connected")
                if drops:
                    self._publish(messages.encode(messages.status_message(
                        StatusEvent.MESSAGES_DROPPED,
                        f"{drops} messages were dropped while they could not be published "
                        f"(buffer of {self._capacity} messages / {self._capacity_bytes // 1024} KiB)",
                        dropped=drops, dropped_total=self.dropped)), "status")
                    drops = 0
                self._publish(head.payload, head.kind)
            except TransportError as exc:
                if not exc.retryable:
                    # Refused for good (not authorized, too large): retrying would block every later message.
                    log.error("dropping a %s message the transport refused: %s", head.kind, exc)
                    self.failed += 1
                    self._pop_head(head)
                    continue
                with self._cond:
                    self._unreported_drops += drops
                    self._sending = False
                    self._cond.notify_all()
                if not self._blocked:
                    self._blocked = True
                    # Before the first publish this is only the connection still being set up.
                    level = logging.WARNING if self.published else logging.INFO
                    log.log(level, "cannot publish (%s); buffering up to %d messages", exc, self._capacity)
                return False
            except Exception:  # noqa: BLE001 - a message the transport rejects outright must not stop publishing
                log.exception("dropping a %s message the transport rejected", head.kind)
                self.failed += 1
                drops = 0
            self._pop_head(head)
            if self._blocked:
                self._blocked = False
                log.info("publishing again")

    def _pop_head(self, head: _Encoded) -> None:
        with self._cond:
            self._sending = False
            self._ready.popleft()
            self._ready_bytes -= len(head.payload)
            self._cond.notify_all()

    def _publish(self, payload: bytes, kind: str) -> None:
        self._transport.publish(self._topic(kind), payload)
        self.published += 1


def _oldest(items: deque[_Item], kind_of: Callable[[_Item], object]) -> _Item:
    """The item to drop from a full buffer: the oldest frame message, else the oldest message."""
    return next((item for item in items if kind_of(item) in _FRAME_TYPES), items[0])
