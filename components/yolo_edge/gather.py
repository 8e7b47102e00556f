"""Gathering one batch from several cameras' feeders, as nvstreammux does for DeepStream.

Wait (up to `wait_s`) for the first ready item of any camera. Then wait at most `timeout_s` more for
the other cameras' frames, never longer (a batch must not hold a fast camera's frame for a slow one).
A batch has at most one frame per camera and at most `max_batch` frames. The camera polled first
rotates from batch to batch, so when the batch is smaller than the number of cameras every camera
still gets its turn: a fast camera cannot starve a slow one. A source's end or failure is handed back
at once, with whatever frames are already in the batch.

Feeders call `notify()` (their `on_ready`) after queueing an item; the controller calls `wake()` when
an event arrives, so `gather` returns at once and the event is handled before the next frame.
Called only on the controller thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .pipeline import FeedFrame, FeedItem, FrameFeeder


@dataclass(frozen=True)
class Gathered:
    camera: str
    item: FeedItem
    waiting_since: float  # when the gather began to wait on it: when it was queued, or the gather's start


class FrameGatherer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._woken = False
        self._first = 0  # rotates: the camera polled first in the next batch
        self._clock = clock

    def notify(self) -> None:
        """A feeder queued an item."""
        with self._cond:
            self._cond.notify_all()

    def wake(self) -> None:
        """Make a waiting (or the next) `gather` return at once."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def gather(self, feeds: Sequence[tuple[str, FrameFeeder]], max_batch: int, wait_s: float,
               timeout_s: float) -> list[Gathered]:
        """Up to `max_batch` items, one per camera; empty when nothing arrived within `wait_s` or on `wake()`."""
        if not feeds:
            return []
        order = [feeds[(self._first + i) % len(feeds)] for i in range(len(feeds))]
        self._first = (self._first + 1) % len(feeds)
        batch: list[Gathered] = []
        taken: set[str] = set()
        started = self._clock()
        deadline = started + wait_s
        first_at = None
        with self._cond:
            while True:
                if self._woken:
                    self._woken = False
                    return batch
                frames = self._take(order, taken, batch, max_batch, started)
                if any(not isinstance(g.item, FeedFrame) for g in batch):
                    return batch  # a source ended or failed: hand it over now
                if frames >= max_batch or len(taken) == len(order):
                    return batch
                if batch and first_at is None:
                    first_at = self._clock()
                    deadline = first_at + timeout_s
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    @staticmethod
    def _take(order: Sequence[tuple[str, FrameFeeder]], taken: set[str], batch: list[Gathered],
              max_batch: int, started: float) -> int:
        """Poll each camera not in the batch yet; returns the batch's frame count."""
        frames = sum(isinstance(g.item, FeedFrame) for g in batch)
        for camera, feeder in order:
            if camera in taken or frames >= max_batch:
                continue
            item = feeder.poll()
            if item is None:
                continue
            taken.add(camera)
            ready_at = item.ready_at if isinstance(item, FeedFrame) else started
            batch.append(Gathered(camera, item, max(ready_at, started)))
            if isinstance(item, FeedFrame):
                frames += 1
        return frames
