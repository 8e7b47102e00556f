"""The frame feeder: reads and preprocesses frames on its own thread so that decoding and
letterboxing of frame N+1 overlap inference of frame N.

How frames may be dropped is the feed's `DropPolicy`: files and folders lose no frame (KEEP_ALL: the
feeder waits for room). Live sources keep their own newest frame (see `sources.LiveSource`); under
LATEST the feeder holds at most one prepared frame, taken from the source only when there is room for
it, so inference never works through a stale backlog. Frames
the source overwrote unread, and prepared frames that a pause made stale, count as
`frames_dropped`. While paused the feeder neither reads nor prepares a frame, and a live source
lets go of its device or stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Union

import numpy as np

from .predictor import Prepared
from .sources import FrameSource, SourceEvent

log = logging.getLogger(__name__)


class DropPolicy(Enum):
    """Which frames a feed may drop when inference is slower than the source."""

    KEEP_ALL = "keep_all"  # files and folders: every frame, in order; reading waits for room
    LATEST = "latest"  # live sources: only the newest frame, read as late as possible; older ones count as dropped

    @classmethod
    def for_source(cls, source: FrameSource) -> DropPolicy:
        return cls.LATEST if source.live else cls.KEEP_ALL

    @property
    def depth(self) -> int:
        """Prepared frames that may wait for inference."""
        return 1 if self is DropPolicy.LATEST else 2


@dataclass(frozen=True)
class FeedFrame:
    """A prepared frame."""

    prepared: Prepared
    index: int
    captured_at: float  # time.monotonic() when the frame was read from the device or file
    ready_at: float = 0.0  # time.monotonic() when it was queued for inference (set by the feeder)


@dataclass(frozen=True)
class FeedEnded:
    """The source has no more frames."""


@dataclass(frozen=True)
class FeedFailed:
    """Reading or preparing a frame failed; the feed ends here."""

    error: Exception


FeedItem = Union[FeedFrame, FeedEnded, FeedFailed]


class FrameFeeder:
    """Owns the source while running: only the feeder thread reads it; `stop()` closes it."""

    def __init__(self, source: FrameSource, prepare: Callable[[np.ndarray, dict], Prepared],
                 depth: int | None = None, on_source_event: Callable[[SourceEvent], None] | None = None,
                 policy: DropPolicy | None = None, on_ready: Callable[[], None] | None = None,
                 max_fps: float = 0.0) -> None:
        """`on_ready` is called (on the feeder thread, holding no lock) after each item is queued;
        `max_fps` > 0 takes at most that many frames a second from the source (a live source's
        frames in between are skipped and counted by the source)."""
        self.source = source
        self._on_ready = on_ready
        self._min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.policy = policy or DropPolicy.for_source(source)
        self._prepare = prepare
        self._depth = depth or self.policy.depth
        self._items: deque[FeedItem] = deque()
        self._cond = threading.Condition()
        self._running = True
        self._stopped = False
        self._paused = False
        self._resumed_at = 0.0
        self._stale = 0
        # Buffers for letterbox/tensor reuse: one per slot in flight (queued + being filled + in use).
        self._buffers: list[dict] = [{} for _ in range(self._depth + 2)]
        self.frames_read = 0
        if on_source_event is not None:
            source.on_event = on_source_event
        self._thread = threading.Thread(target=self._run, name="frame-feeder", daemon=True)

    @property
    def frames_dropped(self) -> int:
        """Live frames never inferred because newer ones replaced them."""
        return self._stale + self.source.frames_skipped

    def start(self) -> FrameFeeder:
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop reading and preparing frames; a live source also lets go of its device or stream."""
        with self._cond:
            self._paused = True
        self.source.pause()

    def resume(self) -> None:
        resumed_at = time.monotonic()  # before the source can capture its first frame after the pause
        self.source.resume()
        with self._cond:
            self._paused = False
            if self.policy is DropPolicy.LATEST:
                # A frame prepared before the pause is as old as the pause: drop it.
                self._resumed_at = resumed_at
                self._stale += sum(1 for item in self._items if isinstance(item, FeedFrame))
                self._items = deque(item for item in self._items if not isinstance(item, FeedFrame))
            self._cond.notify_all()

    def get(self, timeout: float) -> FeedItem | None:
        """The next item, or None when nothing arrived within `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def poll(self) -> FeedItem | None:
        """The next item if one is queued, else None at once."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the thread and close the source; later calls do nothing."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._running = False
            self._cond.notify_all()
        self.source.interrupt()  # a live read can block for as long as the source is down
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("frame feeder did not stop within %.1f s (source read blocked); closing anyway", timeout)
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing must never raise into stop()
            log.exception("closing source %s failed", self.source.description)

    def _push(self, item: FeedItem) -> bool:
        """Queue `item` once there is room (end items need none); False once stopped."""
        with self._cond:
            if isinstance(item, FeedFrame):
                self._cond.wait_for(lambda: len(self._items) < self._depth or not self._running)
            if not self._running:
                return False
            if (self.policy is DropPolicy.LATEST and isinstance(item, FeedFrame)
                    and item.captured_at < self._resumed_at):
                self._stale += 1  # read before a pause that has ended since
                return True
            if isinstance(item, FeedFrame):
                item = replace(item, ready_at=time.monotonic())  # queued now: ready for inference
            self._items.append(item)
            self._cond.notify_all()
        if self._on_ready is not None:
            self._on_ready()
        return True

    def _wait_unpaused(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or not self._running)
            return self._running

    def _wait_for_turn(self, last_read: float) -> bool:
        """`max_fps`: wait until a frame interval has passed since the last read; False once stopped."""
        due = last_read + self._min_interval
        with self._cond:
            while self._running and time.monotonic() < due:
                self._cond.wait(due - time.monotonic())  # stop() notifies
            return self._running

    def _wait_for_room(self) -> bool:
        """LATEST: read only when the frame can be queued at once, so it is as new as can be."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self._depth or not self._running)
            return self._running

    def _run(self) -> None:
        index = 0
        latest_only = self.policy is DropPolicy.LATEST
        last_read = float("-inf")
        while self._wait_unpaused() and (not latest_only or self._wait_for_room()):
            if self._min_interval:
                if not self._wait_for_turn(last_read):
                    return
                last_read = time.monotonic()
            try:
                frame = self.source.read()
            except Exception as exc:  # noqa: BLE001 - any source failure is reported, not raised
                self._push(FeedFailed(exc))
                return
            captured_at = self.source.last_captured_at or time.monotonic()
            if frame is None:
                self._push(FeedEnded())
                return
            self.frames_read += 1
            try:
                prepared = self._prepare(frame, self._buffers[index % len(self._buffers)])
            except Exception as exc:  # noqa: BLE001
                self._push(FeedFailed(exc))
                return
            if not self._push(FeedFrame(prepared, index, captured_at)):
                return
            index += 1
