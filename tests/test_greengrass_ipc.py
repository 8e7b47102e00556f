"""The component under a (test) Greengrass nucleus, through the real awsiotsdk IPC client.

`yolo-edge run --greengrass` runs as its own process with the variables the nucleus gives a
component (`AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`, `SVCUID`); the nucleus side is
greengrass_ipc_server, speaking eventstream RPC on a Unix socket. Real ONNX models, a real video."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from greengrass_ipc_server import GreengrassIpcServer, Published

from yolo_edge.app import Component
from yolo_edge.config import Config
from yolo_edge.transport.greengrass import GreengrassTransport

pytestmark = [pytest.mark.runtime, pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
IN, OUT = "inference/input", "inference/output"
GREENGRASS_GRACE_S = 5.0  # SIGTERM, then SIGKILL about 5 s later


def recipe_defaults() -> dict[str, Any]:
    recipe = yaml.safe_load((REPO / "recipe.yaml").read_text())
    return recipe["ComponentConfiguration"]["DefaultConfiguration"]


def component_configuration(model: Path, video: Path, **overrides: str) -> dict[str, Any]:
    """The component's configuration as the nucleus holds it after a deployment (string values)."""
    values = {**recipe_defaults(), "model_loc": str(model), "camera_id": str(video), "loop_source": "true",
              "MODEL_HEIGHT": "320", "MODEL_WIDTH": "320", "max_publish_rate": "0", "summary_interval_s": "0"}
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def models(model, segment_model) -> dict[str, Path]:
    return {"detect": model, "segment": segment_model}


@pytest.fixture
def nucleus(models, sample_video) -> Iterator[GreengrassIpcServer]:
    with GreengrassIpcServer(component_configuration(models["detect"], sample_video)) as server:
        yield server
    assert server.protocol_errors == [], "the client sent something that is not eventstream RPC"


@contextmanager
def component_process(nucleus: GreengrassIpcServer, logs: Path, token: str | None = None
                      ) -> Iterator[subprocess.Popen]:
    """`yolo-edge run --greengrass` as the nucleus starts it: its IPC variables, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_GG_", "SVCUID"))}
    env.update(nucleus.environment(token), YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "yolo_edge.cli", "--log-level", "INFO", "run", "--greengrass"]
    with (logs / "stdout.log").open("wb") as out, (logs / "stderr.log").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def output(kind: str, check: Callable[[dict], bool] = lambda m: True) -> Callable[[Published], bool]:
    return lambda p: p.topic == OUT and p.json().get("type") == kind and check(p.json())


def status(event: str) -> Callable[[Published], bool]:
    return output("status", lambda m: m["event"] == event)


def state(name: str, request_id: str) -> Callable[[Published], bool]:
    return output("state", lambda m: m["state"] == name and m.get("request_id") == request_id)


def send(nucleus: GreengrassIpcServer, command: dict) -> None:
    assert nucleus.send_iot_message(IN, json.dumps(command).encode()) == 1, "nobody subscribed to the input topic"


def state_replies(nucleus: GreengrassIpcServer, request_ids: set[str]) -> list[tuple[str, str]]:
    replies = (p.json() for p in list(nucleus.published) if p.topic == OUT)
    return [(m["request_id"], m["state"]) for m in replies
            if m.get("type") == "state" and m.get("request_id") in request_ids]


def back_to_back_start_stop(nucleus: GreengrassIpcServer, pairs: int, tag: str) -> list[tuple[str, str]]:
    """Send start/stop pairs without waiting; returns the state replies expected, in order."""
    expected = []
    for i in range(pairs):
        send(nucleus, {"status": "start", "request_id": f"{tag}-start-{i}"})
        send(nucleus, {"status": "stop", "request_id": f"{tag}-stop-{i}"})
        expected += [(f"{tag}-start-{i}", "running"), (f"{tag}-stop-{i}", "idle")]
    return expected


def test_the_component_runs_under_the_nucleus_from_connect_to_sigterm(nucleus, models, tmp_path) -> None:
    with component_process(nucleus, tmp_path) as process:
        index, loaded = nucleus.wait_published(status("model_loaded"), timeout=90)
        # Connected with the nucleus' token, read its whole configuration, subscribed, reported RUNNING.
        assert nucleus.connect_tokens == [nucleus.token]
        assert nucleus.requests[0].operation == "GetConfiguration" and nucleus.requests[0].body == {"keyPath": []}
        assert [r.body for r in nucleus.calls("SubscribeToIoTCore")] == [{"topicName": IN, "qos": "1"}]
        assert [r.body for r in nucleus.calls("SubscribeToConfigurationUpdate")] == [{"keyPath": []}]
        nucleus.wait_until(lambda: nucleus.states == ["RUNNING"], what="UpdateState(RUNNING)")
        assert loaded.json()["model_loc"] == str(models["detect"])

        send(nucleus, {"status": "start", "request_id": "go"})
        index, _ = nucleus.wait_published(state("running", "go"), index)
        index, frame = nucleus.wait_published(output("frame"), index)
        assert frame.json()["model"]["task"] == "detect" and frame.json()["detection_count"] >= 0

        # A deployment merges a new model_loc: the running component swaps to the segmentation model.
        nucleus.merge_configuration({"model_loc": str(models["segment"])})
        index, applied = nucleus.wait_published(status("config_applied"), index)
        assert "model_loc" in applied.json()["changed"]
        swapped = [p.json() for p in nucleus.published[:index] if status("model_loaded")(p)]
        assert swapped[-1]["model_loc"] == str(models["segment"])
        index, first_new = nucleus.wait_published(output("frame"), index)
        for _ in range(3):
            index, later = nucleus.wait_published(output("frame"), index + 1)
            assert later.json()["model"]["task"] == "segment", "frames after the swap must use the new model"
        assert first_new.json()["model"]["name"] != frame.json()["model"]["name"]

        send(nucleus, {"status": "pause", "request_id": "hold"})
        index, _ = nucleus.wait_published(state("paused", "hold"), index)
        send(nucleus, {"status": "stop", "request_id": "end"})
        index, summary = nucleus.wait_published(output("summary", lambda m: m["final"]), index)
        assert summary.json()["frames"] >= 4
        nucleus.wait_published(state("idle", "end"), index)

        # Commands sent back to back are carried out in the order sent.
        expected = back_to_back_start_stop(nucleus, 15, "burst")
        wanted = {request_id for request_id, _ in expected}
        nucleus.wait_until(lambda: len(state_replies(nucleus, wanted)) == len(expected), timeout=60,
                           what="a reply to every command")
        assert state_replies(nucleus, wanted) == expected

        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(GREENGRASS_GRACE_S + 5) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("still running long after SIGTERM: Greengrass would SIGKILL it")

    stderr = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "Traceback" not in stderr and "cannot schedule new futures" not in stderr, stderr
    # Every publish went to IoT Core's output topic at QoS 1, as JSON.
    assert {(p.topic, p.qos) for p in nucleus.published} == {(OUT, "1")}
    assert all(isinstance(p.json(), dict) for p in nucleus.published)
    # The streams were ended by the component before it closed the connection.
    streams = nucleus.all_streams("SubscribeToIoTCore") + nucleus.all_streams("SubscribeToConfigurationUpdate")
    assert len(streams) == 2 and all(stream.closed_by_client for stream in streams)
    assert len(nucleus.connect_tokens) == 1


def test_commands_keep_their_order_on_a_loaded_device(nucleus, monkeypatch) -> None:
    """In process, so that the command callback can be slowed as a busy CPU slows it: with
    awsiotsdk's default thread pool, a later command then overtakes an earlier one."""
    for name, value in nucleus.environment().items():
        monkeypatch.setenv(name, value)
    transport = GreengrassTransport()
    component = Component(Config.from_mapping(transport.read_configuration()), transport)
    transport.watch_configuration(component.submit_config)
    jitter = random.Random(3)
    enqueue = component.controller.submit_command

    def preempted_then_enqueue(payload: bytes) -> None:
        time.sleep(jitter.uniform(0, 0.003))
        enqueue(payload)

    component.controller.submit_command = preempted_then_enqueue  # type: ignore[method-assign]
    component.start()
    try:
        nucleus.wait_published(status("model_loaded"), timeout=60)
        expected = back_to_back_start_stop(nucleus, 25, "loaded")
        wanted = {request_id for request_id, _ in expected}
        nucleus.wait_until(lambda: len(state_replies(nucleus, wanted)) == len(expected), timeout=60,
                           what="a reply to every command")
        assert state_replies(nucleus, wanted) == expected
    finally:
        component.stop()


def test_a_wrong_svcuid_is_refused_and_reported(nucleus, tmp_path) -> None:
    with component_process(nucleus, tmp_path, token="a-token-of-another-component") as process:
        assert process.wait(30) == 1
    stderr = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "cannot reach the Greengrass nucleus over IPC" in stderr and "AccessDeniedError" in stderr, stderr
    assert nucleus.connect_tokens == ["a-token-of-another-component"]
    assert nucleus.requests == []


def test_an_invalid_configuration_reports_errored_to_the_nucleus(nucleus, tmp_path) -> None:
    nucleus.configuration["conf_threshold"] = "very"
    with component_process(nucleus, tmp_path) as process:
        assert process.wait(30) == 2
    stderr = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "conf_threshold" in stderr and "very" in stderr, stderr
    assert nucleus.states == ["ERRORED"]
    assert "Traceback" not in stderr, stderr


def test_the_component_exits_1_when_the_nucleus_does_not_take_it_back(nucleus, monkeypatch) -> None:
    """Nucleus lite forgets a component's token when its IPC daemon restarts: only a restart of the
    component (exit status 1: the nucleus or systemd starts it again) gets it a new one."""
    from yolo_edge import cli_run
    from yolo_edge.cli import build_parser
    from yolo_edge.transport import greengrass

    for name, value in nucleus.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(greengrass, "RECONNECT_FIRST_DELAY_S", 0.05)
    monkeypatch.setattr(greengrass, "RECONNECT_GIVE_UP_S", 0.5)
    args = build_parser().parse_args(["run", "--greengrass", "--model", "missing.onnx"])
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.0, nucleus.stop)
    timer.start()
    started = time.monotonic()
    try:
        assert cli_run.run(args) == 1
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert time.monotonic() - started < 30
