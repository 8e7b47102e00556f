"""The frame feeder: reads and preprocesses frames on its own thread so that decoding and
letterboxing of frame N+1 overlap inference of frame N.

Files and folders lose no frame (the feeder waits for room). Live sources keep only the newest
frames: when inference falls behind, the oldest prepared frame is dropped and counted, so results
are never computed on a stale backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .predictor import Prepared
from .sources import FrameSource

log = logging.getLogger(__name__)


@dataclass
class FeedItem:
    """One prepared frame, the end of a source, or a source failure."""

    prepared: Prepared | None = None
    index: int = 0
    captured_at: float = 0.0  # time.monotonic() when the frame was read
    end: bool = False
    error: Exception | None = None


class FrameFeeder:
    """Owns the source while running: only the feeder thread reads it; `stop()` closes it."""

    def __init__(self, source: FrameSource, prepare: Callable[[np.ndarray, dict], Prepared],
                 depth: int = 2) -> None:
        self.source = source
        self._prepare = prepare
        self._depth = depth
        self._items: deque[FeedItem] = deque()
        self._cond = threading.Condition()
        self._running = True
        self._paused = False
        # Buffers for letterbox/tensor reuse: one per slot in flight (queued + being filled + in use).
        self._buffers = [dict() for _ in range(depth + 2)]
        self.frames_read = 0
        self.frames_dropped = 0
        self._thread = threading.Thread(target=self._run, name="frame-feeder", daemon=True)

    def start(self) -> FrameFeeder:
        self._thread.start()
        return self

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def get(self, timeout: float) -> FeedItem | None:
        """The next item, or None when nothing arrived within `timeout` seconds."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def stop(self, timeout: float = 3.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("frame feeder did not stop within %.1f s (source read blocked); closing anyway", timeout)
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing must never raise into stop()
            log.exception("closing source %s failed", self.source.description)

    def _push(self, item: FeedItem) -> bool:
        """Queue `item`; False once stopped. Live frames replace the oldest when full."""
        with self._cond:
            if self.source.live and item.prepared is not None:
                while len(self._items) >= self._depth and self._running:
                    self._items.popleft()
                    self.frames_dropped += 1
            else:
                self._cond.wait_for(lambda: len(self._items) < self._depth or not self._running)
            if not self._running:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def _wait_unpaused(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or not self._running)
            return self._running

    def _run(self) -> None:
        index = 0
        while self._wait_unpaused():
            try:
                frame = self.source.read()
            except Exception as exc:  # noqa: BLE001 - any source failure is reported, not raised
                self._push(FeedItem(error=exc, end=True))
                return
            captured_at = time.monotonic()
            if frame is None:
                self._push(FeedItem(end=True))
                return
            self.frames_read += 1
            try:
                prepared = self._prepare(frame, self._buffers[index % len(self._buffers)])
            except Exception as exc:  # noqa: BLE001
                self._push(FeedItem(error=exc, end=True))
                return
            if not self._push(FeedItem(prepared, index, captured_at)):
                return
            index += 1
