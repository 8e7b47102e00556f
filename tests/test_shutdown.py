"""SIGTERM, as Greengrass sends it (then SIGKILL about 5 s later), to `yolo-edge run` as a real
process: it must end the run with a final summary, release the source and exit 0 well in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness import IN, OUT, is_final_summary, is_state, is_status, is_type
from mjpeg_server import MjpegServer

pytestmark = [pytest.mark.runtime, pytest.mark.integration]

GREENGRASS_GRACE_S = 5.0
EXIT_BUDGET_S = 4.5  # what we allow ourselves of Greengrass' grace, leaving room for a loaded machine


@contextmanager
def component_process(broker, model: Path, source: str, log_path: Path) -> Iterator[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_GG_", "SVCUID"))}
    env.update(YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "yolo_edge.cli", "--log-level", "INFO", "run", "--mqtt",
               "--broker", broker.address, "--model", str(model), "--source", source,
               "--event-topic", IN, "--output-topic", OUT, "--set", "MODEL_HEIGHT=320", "--set", "MODEL_WIDTH=320",
               "--set", "loop_source=true", "--set", "summary_interval_s=0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def sigterm_and_time(process: subprocess.Popen) -> float:
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(GREENGRASS_GRACE_S + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {GREENGRASS_GRACE_S + 5:.0f} s after SIGTERM: Greengrass would SIGKILL it")
    return time.monotonic() - sent


@pytest.mark.parametrize("kind", ["stream", "video"])
def test_sigterm_during_inference_publishes_a_final_summary_releases_the_source_and_exits_0(
        kind, broker, operator, model, sample_video, tmp_path):
    server = MjpegServer(fps=30).start() if kind == "stream" else None
    source = server.url if server else str(sample_video)
    log = tmp_path / "component.log"
    try:
        with component_process(broker, model, source, log) as process:
            operator.wait_for(is_status("model_loaded"), timeout=60)
            operator.send({"status": "start", "request_id": "go"})
            operator.wait_for(is_state("running", request_id="go"), timeout=20)
            frames = operator.wait_for(is_type("frame"), count=5, timeout=30)
            mark = operator.mark()

            elapsed = sigterm_and_time(process)
            output = log.read_text(errors="replace")
            assert process.returncode == 0, output[-3000:]
            assert elapsed < EXIT_BUDGET_S, f"took {elapsed:.2f} s to exit after SIGTERM"

            summary = operator.wait_for(is_final_summary, since=mark, timeout=5)
            assert summary["frames"] >= frames["seq"] and summary["state"] == "running"
            idle = operator.wait_for(is_state("idle"), since=mark, timeout=5)
            assert idle["reason"] == "signal SIGTERM" and idle["previous"] == "running"
            if server is not None:
                assert f"closed stream {server.url}" in output, "the stream was not released"
                # The process has exited, so its socket is closed; the server notices at its next write.
                deadline = time.monotonic() + 3
                while server.open_clients() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert server.open_clients() == 0
            assert "stopped in" in output
            print(f"\n{kind}: exited {elapsed:.2f} s after SIGTERM")  # shown with -s: the measured time
    finally:
        if server is not None:
            server.stop()


def test_sigterm_while_the_broker_is_down_still_exits_in_time(broker, operator, model, sample_video, tmp_path):
    log = tmp_path / "component.log"
    with component_process(broker, model, str(sample_video), log) as process:
        operator.wait_for(is_status("model_loaded"), timeout=60)
        operator.send({"status": "start"})
        operator.wait_for(is_type("frame"), count=3, timeout=30)
        broker.stop()
        time.sleep(0.5)  # the component notices and buffers
        elapsed = sigterm_and_time(process)
        assert process.returncode == 0, log.read_text(errors="replace")[-3000:]
        assert elapsed < EXIT_BUDGET_S, f"took {elapsed:.2f} s to exit after SIGTERM with no broker"
        print(f"\nbroker down: exited {elapsed:.2f} s after SIGTERM")


def test_sigterm_while_idle_exits_at_once(broker, operator, model, sample_video, tmp_path):
    with component_process(broker, model, str(sample_video), tmp_path / "component.log") as process:
        operator.wait_for(is_status("model_loaded"), timeout=60)
        elapsed = sigterm_and_time(process)
        assert process.returncode == 0
        assert elapsed < 2.0, f"took {elapsed:.2f} s to exit when idle"
        print(f"\nidle: exited {elapsed:.2f} s after SIGTERM")
