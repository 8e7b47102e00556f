"""Gathering a batch from several cameras' feeders: real feeders on real video files, no model (frames are
prepared by a trivial function)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_video
from harness import wait_until

from yolo_edge.gather import FrameGatherer
from yolo_edge.pipeline import FeedEnded, FeedFrame, FrameFeeder
from yolo_edge.predictor import Prepared
from yolo_edge.processing import letterbox_geometry
from yolo_edge.sources import open_source

pytestmark = pytest.mark.runtime


def prepare(frame: np.ndarray, _buffers: dict) -> Prepared:
    return Prepared(frame, frame[None], letterbox_geometry(frame.shape[:2], (64, 64)), 0.0)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("gather") / "v.avi", frames=6, size=(48, 64))


@pytest.fixture
def feeders(video: Path) -> Iterator[tuple[FrameGatherer, dict[str, FrameFeeder]]]:
    gatherer = FrameGatherer()
    made = {name: FrameFeeder(open_source(str(video), loop=True), prepare, on_ready=gatherer.notify)
            for name in ("a", "b", "c")}
    yield gatherer, made
    for feeder in made.values():
        feeder.stop()


def test_a_batch_takes_one_frame_per_camera(feeders):
    gatherer, made = feeders
    for feeder in made.values():
        feeder.start()
    batch = gatherer.gather(list(made.items()), max_batch=8, wait_s=5.0, timeout_s=2.0)
    assert sorted(g.camera for g in batch) == ["a", "b", "c"]
    assert all(isinstance(g.item, FeedFrame) and g.item.ready_at > 0 for g in batch)


def test_a_small_batch_rotates_so_no_camera_starves(feeders):
    gatherer, made = feeders
    for feeder in made.values():
        feeder.start()
    # Every camera has frames ready before each batch (a file feeder keeps 2 queued and reads a third).
    wait_until(lambda: all(f.frames_read >= 3 for f in made.values()), timeout=20)
    firsts = []
    for _ in range(6):
        batch = gatherer.gather(list(made.items()), max_batch=1, wait_s=5.0, timeout_s=2.0)
        assert len(batch) == 1
        firsts.append(batch[0].camera)
        wait_until(lambda: all(f.frames_read >= 3 + firsts.count(name) for name, f in made.items()), timeout=20)
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_a_camera_without_frames_holds_the_batch_only_for_the_gather_timeout(feeders):
    gatherer, made = feeders
    made["a"].start()
    made["b"].pause()
    made["b"].start()  # paused: no frame will come
    started = time.monotonic()
    batch = gatherer.gather([("a", made["a"]), ("b", made["b"])], max_batch=2, wait_s=30.0, timeout_s=0.05)
    assert [g.camera for g in batch] == ["a"]
    assert time.monotonic() - started < 10.0, "the batch went out after the gather timeout, not the wait"


def test_nothing_ready_returns_empty_after_the_wait_and_wake_returns_at_once(feeders):
    gatherer, made = feeders
    made["a"].pause()
    made["a"].start()
    assert gatherer.gather([("a", made["a"])], max_batch=1, wait_s=0.05, timeout_s=0.05) == []
    threading.Timer(0.1, gatherer.wake).start()
    started = time.monotonic()
    assert gatherer.gather([("a", made["a"])], max_batch=1, wait_s=30.0, timeout_s=1.0) == []
    assert time.monotonic() - started < 10.0


def test_the_end_of_a_source_is_handed_over_at_once(video):
    gatherer = FrameGatherer()
    feeder = FrameFeeder(open_source(str(video)), prepare, on_ready=gatherer.notify).start()
    try:
        items = []
        while not items or not isinstance(items[-1], FeedEnded):
            batch = gatherer.gather([("a", feeder)], max_batch=4, wait_s=5.0, timeout_s=1.0)
            assert len(batch) == 1
            items.append(batch[0].item)
        assert [type(i) for i in items] == [FeedFrame] * 6 + [FeedEnded]
        assert [i.index for i in items[:-1]] == list(range(6)), "a file loses no frame"
    finally:
        feeder.stop()


def test_max_fps_paces_a_camera(video):
    feeder = FrameFeeder(open_source(str(video), loop=True), prepare, max_fps=20.0).start()
    try:
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 6 and time.monotonic() < deadline:
            item = feeder.get(1.0)
            if isinstance(item, FeedFrame):
                got.append(item.ready_at)
        assert len(got) == 6
        assert got[-1] - got[0] >= 5 / 20.0 * 0.9, "at most max_fps frames a second"
    finally:
        feeder.stop()
