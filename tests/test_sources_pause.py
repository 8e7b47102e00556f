"""Pause means idle: a paused live stream is neither read, decoded nor pre-processed.

The component runs over a real Mosquitto against a real MJPEG-over-HTTP camera. The camera runs in
its own process (so its JPEG encoding is not counted here) and says how many frames it sent; the
component's CPU time is this process's CPU time (every thread: reader, feeder, controller, MQTT).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import base_config, is_state, is_type, running_component, wait_until

pytestmark = pytest.mark.runtime

TESTS = Path(__file__).resolve().parent
FRAME_SIZE = (1080, 1920)  # FFmpeg decodes 30 of these a second in ~0.1 s of CPU here
FPS = 30
WINDOW_S = 2.0
# A process that only waits uses a few milliseconds in WINDOW_S; decoding the stream alone would use
# several times this bound.
IDLE_CPU_BOUND_S = 0.05

# The camera process: MjpegServer on 127.0.0.1; prints its URL, then one line of counters per line read.
CAMERA = """
import sys
from mjpeg_server import MjpegServer
server = MjpegServer(fps={fps}, size={size}).start()
print(server.url, flush=True)
for _ in sys.stdin:
    print(server.frames_sent, server.open_clients(), server.connections, flush=True)
server.stop()
"""


@dataclass(frozen=True)
class CameraCounters:
    frames_sent: int
    open_clients: int
    connections: int


class CameraProcess:
    def __init__(self, size: tuple[int, int], fps: float) -> None:
        self._process = subprocess.Popen([sys.executable, "-c", CAMERA.format(fps=fps, size=size)], cwd=TESTS,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), f"the camera process did not start: {self.url!r}"

    def counters(self) -> CameraCounters:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("?\n")
        self._process.stdin.flush()
        sent, clients, connections = (int(n) for n in self._process.stdout.readline().split())
        return CameraCounters(sent, clients, connections)

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture
def camera() -> Iterator[CameraProcess]:
    process = CameraProcess(FRAME_SIZE, FPS)
    yield process
    process.stop()


@dataclass(frozen=True)
class Window:
    cpu_s: float
    frames_read: int  # by the feeder (each one pre-processed)
    frames_captured: int  # decoded by the source's reader
    frames_sent: int  # by the camera


def measure(component, camera: CameraProcess, seconds: float = WINDOW_S) -> Window:
    feeder = component.controller.feeder
    read, captured, sent = feeder.frames_read, feeder.source.frames_captured, camera.counters().frames_sent
    cpu = time.process_time()
    time.sleep(seconds)
    cpu = time.process_time() - cpu
    return Window(cpu, feeder.frames_read - read, feeder.source.frames_captured - captured,
                  camera.counters().frames_sent - sent)


def test_a_paused_live_stream_is_not_read_decoded_or_preprocessed(broker, model, camera):
    config = base_config(model, camera.url, max_publish_rate=0)
    with running_component(broker, config) as (component, listener):
        listener.send({"status": "start", "request_id": "go"})
        listener.wait_for(is_state("running", request_id="go"))
        listener.wait_for(is_type("frame"), count=5, timeout=30)
        running = measure(component, camera)

        mark = listener.mark()
        listener.send({"status": "pause", "request_id": "p"})
        listener.wait_for(is_state("paused", request_id="p"), since=mark)
        source = component.controller.feeder.source
        time.sleep(0.5)  # the frame in flight at the pause, and the release of the stream, are done
        paused = measure(component, camera)

        print(f"CPU in {WINDOW_S} s: running {running}, paused {paused}")
        assert running.frames_read > 0 and running.frames_captured > 0 and running.frames_sent > 0, running
        assert paused.cpu_s < IDLE_CPU_BOUND_S, f"paused used {paused.cpu_s:.3f} s of CPU in {WINDOW_S} s"
        assert paused.cpu_s < running.cpu_s / 10, (paused, running)
        assert paused.frames_read == 0, f"the feeder read {paused.frames_read} frames while paused"
        assert paused.frames_captured == 0, f"the source decoded {paused.frames_captured} frames while paused"
        assert paused.frames_sent == 0, f"the camera sent {paused.frames_sent} frames to a paused component"
        assert camera.counters().open_clients == 0 and source.pauses == 1, "a paused source lets go of the stream"

        # Resume: the stream is opened again and fresh frames flow.
        mark = listener.mark()
        listener.send({"status": "start", "request_id": "r"})
        listener.wait_for(is_state("running", request_id="r"), since=mark)
        fresh = listener.wait_for(is_type("frame"), since=mark, count=3, timeout=30)
        assert fresh["frame_age_ms"] < 1500
        assert camera.counters().connections == 2 and source.opens == 2
        assert not listener.since(mark, is_type("status", event="source_lost")), "a resume is not an outage"

        mark = listener.mark()
        listener.send({"status": "stop", "request_id": "s"})
        listener.wait_for(is_state("idle", request_id="s"), since=mark)
        wait_until(lambda: camera.counters().open_clients == 0, 5, "the stopped component to close the stream")
