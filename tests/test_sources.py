"""Sources: a real MJPEG-over-HTTP stream on 127.0.0.1 that drops and comes back, latest-frame
semantics for live sources, and no lost frame for files and folders."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import pytest
from conftest import asset_images, make_video
from harness import (
    MessageLog,
    base_config,
    is_state,
    is_status,
    is_type,
    running_component,
    running_controller,
    wait_until,
)
from mjpeg_server import MjpegServer, frame_index

from yolo_edge.config import Config
from yolo_edge.sources import (
    RECONNECT_INITIAL_S,
    RECONNECT_MAX_S,
    ImageFolderSource,
    LiveSource,
    SourceError,
    SourceEvent,
    backoff_delay,
    open_source,
)
from yolo_edge_tools.local_broker import free_port


@pytest.fixture
def stream() -> Iterator[MjpegServer]:
    server = MjpegServer(fps=30).start()
    yield server
    server.stop()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "live-source-reader"]


# ---------------------------------------------------------------------------------------------
# Backoff and the live source on its own
# ---------------------------------------------------------------------------------------------

def test_backoff_doubles_from_half_a_second_to_a_30_second_cap():
    assert (RECONNECT_INITIAL_S, RECONNECT_MAX_S) == (0.5, 30.0)
    assert [backoff_delay(n) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_delay(10_000) == 30.0  # no overflow however long the outage
    assert [backoff_delay(n, 0.1, 0.3) for n in range(4)] == [0.1, 0.2, 0.3, 0.3]


def test_opencv_reads_the_test_stream(stream):
    capture = cv2.VideoCapture(stream.url, cv2.CAP_FFMPEG)
    try:
        assert capture.isOpened()
        numbers = []
        for _ in range(3):
            ok, frame = capture.read()
            assert ok and frame.shape == (240, 320, 3)
            numbers.append(frame_index(frame))
        assert numbers == [0, 1, 2]
    finally:
        capture.release()


def test_live_source_hands_out_the_newest_frame_to_a_slow_consumer(stream):
    """A consumer slower than the camera must get current frames, not the next ones in a backlog."""
    source = open_source(stream.url)
    assert isinstance(source, LiveSource) and source.live
    try:
        lags = []
        for _ in range(12):
            frame = source.read()
            assert frame is not None
            age = time.monotonic() - source.last_captured_at
            lags.append(stream.last_index - frame_index(frame))
            assert age < 0.5, f"handed out a frame {age:.3f} s old"
            time.sleep(0.12)  # "inference": slower than the 30 FPS stream
        # A backlog would grow by ~3 frames per read; the newest frame stays within a frame or two.
        assert max(lags[2:]) <= 3, lags
        assert source.frames_skipped >= 12 * 2, "frames the consumer never saw must be counted"
        assert source.frames_captured >= stream.frames_sent - 3
    finally:
        source.close()
    wait_until(lambda: not reader_threads(), 2, "the reader thread to end")


def test_live_source_reconnects_with_backoff_and_reports_lost_then_restored(stream):
    events: list[SourceEvent] = []
    source = LiveSource(stream.url, "stream under test", reconnect_initial_s=0.1, reconnect_max_s=0.4)
    source.on_event = events.append
    try:
        assert source.read() is not None
        stream.stop()
        wait_until(lambda: [e.kind for e in events] == ["lost"], 10, "source lost")
        assert events[0].details["retry_in_s"] == 0.1 and not source.connected
        time.sleep(1.0)  # several failed attempts: 0.1, 0.2, 0.4, 0.4 …
        assert 3 <= source.reconnect_attempts <= 8, source.reconnect_attempts
        assert [e.kind for e in events] == ["lost"], "lost must be announced once per outage"
        stream.start()
        wait_until(lambda: len(events) == 2, 10, "source restored")
        assert events[1].kind == "restored" and events[1].details["attempts"] >= 3
        frame = source.read()
        assert frame is not None and frame_index(frame) < 60, "frames must come from the new connection"
        assert source.outages == 1 and source.connected
    finally:
        source.close()


def test_a_paused_live_source_lets_go_of_the_stream_and_resumes_on_a_new_connection(stream):
    source = LiveSource(stream.url, "stream under test")
    events: list[SourceEvent] = []
    source.on_event = events.append
    try:
        assert source.read() is not None
        source.pause()
        wait_until(lambda: stream.open_clients() == 0, 5, "the paused source to close the stream")
        captured, sent = source.frames_captured, stream.frames_sent
        handed_out: list[Any] = []
        consumer = threading.Thread(target=lambda: handed_out.append(source.read()))
        consumer.start()
        time.sleep(0.5)
        assert not handed_out, "a paused source hands out no frame"
        assert (source.frames_captured, stream.frames_sent) == (captured, sent), "nothing read while paused"

        source.resume()
        consumer.join(5)
        assert handed_out and handed_out[0] is not None
        assert frame_index(handed_out[0]) < 30, "the first frame after a pause comes from a new connection"
        assert stream.connections == 2 and (source.pauses, source.opens) == (1, 2)
        assert events == [], "a pause is not an outage"
    finally:
        source.close()
    wait_until(lambda: not reader_threads(), 2, "the reader thread to end")


def test_a_live_source_paused_before_its_first_read_releases_the_stream(stream):
    """The controller pauses a source it reopens while paused (a configuration change)."""
    source = open_source(stream.url)
    try:
        assert stream.connections == 1
        source.pause()
        wait_until(lambda: stream.open_clients() == 0, 5, "the paused source to close the stream")
        source.resume()
        assert source.read() is not None and stream.connections == 2
    finally:
        source.close()


def test_a_live_source_paused_during_an_outage_makes_no_attempt_until_resumed(stream):
    events: list[SourceEvent] = []
    source = LiveSource(stream.url, "stream under test", reconnect_initial_s=0.1, reconnect_max_s=0.2)
    source.on_event = events.append
    try:
        assert source.read() is not None
        stream.stop()
        wait_until(lambda: [e.kind for e in events] == ["lost"], 10, "source lost")
        source.pause()
        time.sleep(0.3)  # an attempt under way when the pause came ends
        attempts = source.reconnect_attempts
        stream.start()
        time.sleep(1.0)  # unpaused, 0.2 s backoff: about five attempts, the first one a success
        assert source.reconnect_attempts == attempts and stream.connections == 1, "reconnected while paused"
        source.resume()
        assert source.read() is not None
        assert [e.kind for e in events] == ["lost", "restored"] and stream.connections == 2
    finally:
        source.close()


def test_closing_a_live_source_during_an_outage_returns_at_once(stream):
    source = LiveSource(stream.url, "stream under test")
    assert source.read() is not None
    stream.stop()
    wait_until(lambda: not source.connected, 10, "source lost")
    blocked: list[Any] = []
    reader = threading.Thread(target=lambda: blocked.append(source.read()))
    reader.start()
    time.sleep(0.2)
    started = time.monotonic()
    source.close()
    reader.join(2)
    assert not reader.is_alive() and blocked == [None], "a read blocked by the outage must return on close"
    assert time.monotonic() - started < 1.5
    wait_until(lambda: not reader_threads(), 2, "the reader thread to end")


def test_sources_that_cannot_be_opened_say_why():
    with pytest.raises(SourceError, match=r"cannot open stream http://127\.0\.0\.1"):
        open_source(f"http://127.0.0.1:{free_port()}/stream.mjpg")
    with pytest.raises(SourceError, match="cannot open camera index 9.*video"):
        open_source("9")
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source("/nonexistent/video.mp4")


# ---------------------------------------------------------------------------------------------
# The component with a network stream that drops
# ---------------------------------------------------------------------------------------------

def test_stream_outage_keeps_the_component_running_and_controllable(broker, model):
    server = MjpegServer(fps=200).start()  # faster than inference here: the newest frame must win
    config = base_config(model, server.url, max_publish_rate=0)
    try:
        with running_component(broker, config) as (component, listener):
            listener.send({"status": "start", "request_id": "go"})
            assert listener.wait_for(is_state("running", request_id="go"))["source"] == f"stream {server.url}"
            frames = [listener.wait_for(is_type("frame"), count=n) for n in range(1, 9)]
            ages = [f["frame_age_ms"] for f in frames]
            assert all(0 <= age < 1500 for age in ages), ages

            mark = listener.mark()
            server.stop()
            lost = listener.wait_for(is_status("source_lost"), since=mark, timeout=15)
            assert lost["camera_id"] == server.url and lost["state"] == "running"
            assert component.controller.state.value == "running"

            # Commands still work during the outage.
            listener.send({"status": "pause", "request_id": "p"})
            listener.wait_for(is_state("paused", request_id="p"), since=mark, timeout=5)
            listener.send({"status": "start", "request_id": "r"})
            listener.wait_for(is_state("running", request_id="r"), since=mark, timeout=5)
            during = listener.mark()

            server.start()
            restored = listener.wait_for(is_status("source_restored"), since=mark, timeout=20)
            assert restored["attempts"] >= 1 and restored["outage_s"] > 0
            restored_at = next(i for i in range(mark, listener.mark()) if listener.messages[i] is restored)
            outage_frames = [m for m in listener.messages[during:restored_at] if m.get("type") == "frame"]
            assert not outage_frames, "frames published while the stream was down"
            after = listener.wait_for(is_type("frame"), since=restored_at + 1, count=3)
            assert after["frame_age_ms"] < 1500
            assert server.connections == 2, "the component must reconnect by itself"

            listener.send({"status": "stop"})
            summary = listener.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
            assert summary["source_outages"] == 1 and summary["source_connected"] is True
            assert summary["frames_dropped_stale"] > 0, "a 200 FPS stream outpaces inference here"
            assert summary["frames_read"] - summary["frames"] in (0, 1)  # at most the one waiting at the stop
            listener.wait_for(is_state("idle"), since=mark)
            wait_until(lambda: server.open_clients() == 0, 5, "the component to close the stream")
    finally:
        server.stop()


def test_stop_during_an_outage_returns_to_idle_quickly(broker, model):
    server = MjpegServer(fps=30).start()
    config = base_config(model, server.url)
    try:
        with running_component(broker, config) as (component, listener):
            listener.send({"status": "start"})
            listener.wait_for(is_type("frame"))
            server.stop()
            listener.wait_for(is_status("source_lost"), timeout=15)
            mark = listener.mark()
            sent = time.monotonic()
            listener.send({"status": "stop", "request_id": "s"})
            listener.wait_for(is_state("idle", request_id="s"), since=mark, timeout=5)
            assert time.monotonic() - sent < 3.0
            wait_until(lambda: not reader_threads(), 3, "the reader thread to end")
    finally:
        server.stop()


def test_unreachable_stream_at_start_is_an_error_and_the_component_stays_idle(broker, model):
    url = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    with running_component(broker, base_config(model, url)) as (component, listener):
        listener.send({"status": "start", "request_id": "s"})
        error = listener.wait_for(is_type("error", code="source_open_failed"))
        assert error["request_id"] == "s" and url in error["message"] and error["camera_id"] == url
        assert component.controller.state.value == "idle"
        listener.send({"status": "stop", "request_id": "ping"})
        listener.wait_for(is_state("idle", request_id="ping"))


# ---------------------------------------------------------------------------------------------
# Files and folders lose no frame
# ---------------------------------------------------------------------------------------------

def run_to_end(config: Config, slow_ms: float = 0.0) -> MessageLog:
    """Run the controller on `config` until the source ends; inference slowed by `slow_ms`."""
    from yolo_edge.predictor import load_predictor

    def loader(cfg: Config):
        predictor = load_predictor(cfg)
        real = predictor.infer_and_decode

        def slow(prepared):
            time.sleep(slow_ms / 1000)
            return real(prepared)

        predictor.infer_and_decode = slow
        return predictor

    with running_controller(config, predictor_factory=loader) as (controller, out):
        controller.submit_command(b'{"status": "start"}')
        out.wait_for(lambda m: m.get("type") == "state" and m.get("reason") == "source ended", timeout=60)
    return out


def test_a_video_file_loses_no_frame_when_inference_is_slow(model, tmp_path):
    video = make_video(tmp_path / "twelve.avi", frames=12)
    config = base_config(model, video, loop_source=False, max_publish_rate=0)
    out = run_to_end(config, slow_ms=30)
    frames = [m for m in out.messages if m["type"] == "frame"]
    assert [f["seq"] for f in frames] == list(range(1, 13))
    assert all("frame_age_ms" not in f for f in frames), "frame age is for live sources"
    summary = next(m for m in out.messages if m["type"] == "summary" and m["final"])
    assert summary["frames"] == summary["frames_read"] == 12 and summary["frames_dropped_stale"] == 0


def test_an_image_folder_loses_no_frame_and_skips_unreadable_files(model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    images = asset_images()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), cv2.imread(str(images[i % len(images)])))
    (folder / "02b.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    out = run_to_end(base_config(model, folder, loop_source=False, max_publish_rate=0), slow_ms=30)
    assert len([m for m in out.messages if m["type"] == "frame"]) == 5


def test_an_image_folder_of_only_unreadable_files_fails_instead_of_spinning(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"broken")
    source = ImageFolderSource(tmp_path, loop=True)
    with pytest.raises(SourceError, match="none of the images can be read"):
        source.read()
