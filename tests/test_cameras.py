"""Several cameras in one component, over a real Mosquitto: two real video files and a live MJPEG stream
at once, per-camera commands and replies, per-camera faults, cameras added and removed by a
configuration update while the others keep running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_video
from harness import IN, MODEL_SIZE, OUT, Message, is_state, is_status, is_type, running_component
from mjpeg_server import MjpegServer

from yolo_edge.config import Config

pytestmark = [pytest.mark.runtime, pytest.mark.integration]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cameras")
    return (make_video(folder / "dock-1.avi", frames=20, size=(240, 320)),
            make_video(folder / "dock-2.avi", frames=12, size=(360, 480)))


@pytest.fixture
def stream() -> Iterator[MjpegServer]:
    server = MjpegServer(fps=15).start()
    yield server
    server.stop()


def cameras_config(model: Path, cameras: dict[str, Any], **extra: Any) -> Config:
    values: dict[str, Any] = {"model_loc": str(model), "cameras": cameras, "MODEL_HEIGHT": MODEL_SIZE,
                              "MODEL_WIDTH": MODEL_SIZE, "summary_interval_s": 0, "event_topic": IN,
                              "output_topic": OUT, "loop_source": True, "max_publish_rate": 0}
    values.update(extra)
    return Config.from_mapping(values)


def frame_of(camera: str) -> Any:
    return lambda m: m.get("type") == "frame" and m.get("camera") == camera


def frames_by_camera(messages: list[Message]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages:
        if message.get("type") == "frame":
            counts[message["camera"]] = counts.get(message["camera"], 0) + 1
    return counts


def test_three_cameras_run_together_and_each_frame_names_its_camera(broker, model, videos, stream):
    config = cameras_config(model, {"dock-1": str(videos[0]), "dock-2": {"source": str(videos[1])},
                                    "gate": stream.url})
    with running_component(broker, config) as (component, operator):
        mark = operator.mark()
        operator.send({"status": "start", "request_id": "all"})
        reply = operator.wait_for(is_state("running", request_id="all"), since=mark)
        assert set(reply["cameras"]) == {"dock-1", "dock-2", "gate"}
        assert all(c["state"] == "running" and c["changed"] for c in reply["cameras"].values())
        for camera in ("dock-1", "dock-2", "gate"):
            frame = operator.wait_for(frame_of(camera), since=mark, count=3)
            assert frame["batch_size"] >= 1 and frame["gather_wait_ms"] >= 0
        gate = operator.wait_for(frame_of("gate"), since=mark)
        assert "frame_age_ms" in gate and gate["source"] == f"stream {stream.url}"
        dock = operator.wait_for(frame_of("dock-2"), since=mark)
        assert dock["frame_shape"] == [360, 480] and "frame_age_ms" not in dock

        mark = operator.mark()
        operator.send({"status": "stop"})
        operator.wait_for(is_state("idle", reason="stop command"), since=mark)
        summary = operator.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
        assert set(summary["cameras"]) == {"dock-1", "dock-2", "gate"}
        assert summary["frames"] == sum(c["frames"] for c in summary["cameras"].values())
        assert all(c["frames"] > 0 and c["latency_ms"]["total"]["p50"] > 0 for c in summary["cameras"].values())
        assert summary["cameras"]["gate"]["source_connected"] is True
        assert "source_outages" not in summary["cameras"]["dock-1"]


def test_commands_for_one_camera_leave_the_others_alone(broker, model, videos):
    config = cameras_config(model, {"dock-1": str(videos[0]), "dock-2": str(videos[1])})
    with running_component(broker, config) as (component, operator):
        mark = operator.mark()
        operator.send({"status": "start", "camera": "dock-2", "request_id": "one"})
        reply = operator.wait_for(is_state("running", request_id="one"), since=mark)
        assert reply["camera"] == "dock-2" and reply["previous"] == "idle"
        assert reply["cameras"]["dock-2"] == {"state": "running", "previous": "idle", "changed": True,
                                             "reason": "start command"}
        assert reply["cameras"]["dock-1"] == {"state": "idle"}
        operator.wait_for(frame_of("dock-2"), since=mark, count=3)
        assert "dock-1" not in frames_by_camera(operator.since(mark))

        operator.send({"status": "start"})
        operator.wait_for(frame_of("dock-1"), since=mark, count=3)
        mark = operator.mark()
        operator.send({"status": "pause", "camera": "dock-1", "request_id": "p"})
        paused = operator.wait_for(is_state("running", request_id="p"), since=mark)  # dock-2 still runs
        assert paused["cameras"]["dock-1"]["state"] == "paused" and paused["cameras"]["dock-2"]["state"] == "running"
        after = operator.mark()
        operator.wait_for(frame_of("dock-2"), since=after, count=5)
        assert "dock-1" not in frames_by_camera(operator.since(after)), "a paused camera publishes no frame"

        operator.send({"status": "pause", "camera": "dock-1", "request_id": "again"})
        again = operator.wait_for(is_state("running", request_id="again"), since=after)
        assert again["changed"] is False and again["cameras"]["dock-1"]["reason"] == "already paused"

        operator.send({"status": "stop", "camera": "nope", "request_id": "bad"})
        error = operator.wait_for(is_type("error", request_id="bad"), since=after)
        assert error["code"] == "unknown_camera" and error["known_cameras"] == ["dock-1", "dock-2"]
        assert "dock-1, dock-2" in error["message"]

        mark = operator.mark()
        operator.send({"status": "stop", "camera": "dock-2"})
        stopped = operator.wait_for(is_type("state", camera="dock-2"), since=mark)
        assert stopped["state"] == "paused" and stopped["cameras"]["dock-2"]["state"] == "idle"
        summary = operator.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
        assert summary["camera"] == "dock-2" and set(summary["cameras"]) == {"dock-2"}
        assert component.controller.cameras["dock-1"].state.value == "paused"


def test_one_cameras_failure_ends_only_that_camera(broker, model, videos, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not an image")
    config = cameras_config(model, {"dock-1": str(videos[0]), "broken": str(broken),
                                    "missing": str(tmp_path / "nowhere.avi")})
    with running_component(broker, config) as (component, operator):
        mark = operator.mark()
        operator.send({"status": "start"})
        opened = operator.wait_for(is_type("error", code="source_open_failed"), since=mark)
        assert opened["camera"] == "missing"
        failed = operator.wait_for(is_type("error", code="source_failed"), since=mark)
        assert failed["camera"] == "broken"
        ended = operator.wait_for(is_type("state", camera="broken"), since=mark)
        assert ended["reason"] == "source failed" and ended["state"] == "running"
        assert ended["cameras"]["broken"]["state"] == "idle" and ended["cameras"]["dock-1"]["state"] == "running"
        after = operator.mark()
        operator.wait_for(frame_of("dock-1"), since=after, count=5)
        assert component.controller.cameras["missing"].state.value == "idle"


def test_a_configuration_update_adds_and_removes_cameras_without_disturbing_the_others(broker, model, videos,
                                                                                       stream):
    config = cameras_config(model, {"dock-1": str(videos[0])})
    with running_component(broker, config) as (component, operator):
        operator.send({"status": "start"})
        operator.wait_for(frame_of("dock-1"), count=2)
        feeder = component.controller.cameras["dock-1"].run.feeder

        mark = operator.mark()
        component.submit_config({**config.to_mapping(), "cameras": {"dock-1": str(videos[0]), "gate": stream.url}})
        applied = operator.wait_for(is_status("config_applied"), since=mark)
        assert applied["cameras_added"] == ["gate"] and "cameras_removed" not in applied
        added = operator.wait_for(is_type("state", camera="gate"), since=mark)
        assert added["reason"] == "camera added" and added["cameras"]["gate"]["state"] == "running"
        operator.wait_for(frame_of("gate"), since=mark, count=3)
        assert component.controller.cameras["dock-1"].run.feeder is feeder, "dock-1 was not touched"

        mark = operator.mark()
        component.submit_config({**config.to_mapping(), "cameras": {"gate": stream.url}})
        removed = operator.wait_for(is_type("state", camera="dock-1"), since=mark)
        assert removed["reason"] == "camera removed" and removed["cameras"]["dock-1"]["state"] == "idle"
        summary = operator.wait_for(lambda m: m.get("type") == "summary" and m["final"], since=mark)
        assert summary["camera"] == "dock-1" and summary["cameras"]["dock-1"]["frames"] > 0
        applied = operator.wait_for(is_status("config_applied"), since=mark)
        assert applied["cameras_removed"] == ["dock-1"]
        after = operator.mark()
        operator.wait_for(frame_of("gate"), since=after, count=3)
        assert "dock-1" not in frames_by_camera(operator.since(after))
        assert list(component.controller.cameras) == ["gate"]

        mark = operator.mark()
        component.submit_config({**config.to_mapping(), "cameras": {"gate": {"source": stream.url, "max_fps": 2}}})
        changed = operator.wait_for(is_status("config_applied"), since=mark)
        assert changed["cameras_changed"] == ["gate"]


def test_the_one_camera_shorthand_is_the_default_camera(broker, model, videos):
    from yolo_edge.cli import main

    config = cameras_config(model, {}, camera_id=str(videos[1]), loop_source=False)
    assert list(config.camera_specs()) == ["default"]
    with running_component(broker, config) as (component, operator):
        assert main(["send", "start", "--camera", "default", "--topic", IN, "--broker", broker.address]) == 0
        frame = operator.wait_for(frame_of("default"))
        assert frame["source"] == str(videos[1]) and frame["batch_size"] == 1
        ended = operator.wait_for(is_state("idle", reason="source ended"))
        assert ended["cameras"]["default"]["state"] == "idle"



def run_to_the_end(broker, config: Config) -> dict[str, list[Message]]:
    """Start every camera of `config` (files, not looping) and collect each camera's frame messages in order."""
    with running_component(broker, config) as (component, operator):
        operator.send({"status": "start"})
        operator.wait_for(lambda m: m.get("type") == "state" and m["state"] == "idle"
                          and m.get("reason") == "source ended" and all(
                              c["state"] == "idle" for c in m["cameras"].values()), timeout=120)
        frames: dict[str, list[Message]] = {}
        for message in operator.since(0, frame_of_any):
            frames.setdefault(message["camera"], []).append(message)
        return frames


def frame_of_any(message: Message) -> bool:
    return message.get("type") == "frame"


def test_batched_results_are_those_of_the_same_frames_run_one_by_one(broker, random_model, videos):
    model = random_model("detect", MODEL_SIZE, "onnx", dynamic=True)
    cameras = {"dock-1": str(videos[0]), "dock-2": str(videos[1]), "dock-3": str(videos[0])}
    batched = run_to_the_end(broker, cameras_config(model, cameras, loop_source=False))
    single = run_to_the_end(broker, cameras_config(model, cameras, loop_source=False, batch_size=1))
    assert {name: len(frames) for name, frames in batched.items()} == {"dock-1": 20, "dock-2": 12, "dock-3": 20}
    assert {name: len(frames) for name, frames in single.items()} == {"dock-1": 20, "dock-2": 12, "dock-3": 20}
    assert max(f["batch_size"] for frames in batched.values() for f in frames) > 1, "the frames were batched"
    assert all(f["batch_size"] == 1 for frames in single.values() for f in frames)
    compared = 0
    for name in cameras:
        for ours, alone in zip(batched[name], single[name]):
            assert ours["detection_count"] == alone["detection_count"]
            for a, b in zip(ours["detections"], alone["detections"]):
                assert a["class_id"] == b["class_id"]
                assert a["box"] == pytest.approx(b["box"], abs=0.2)  # boxes are rounded to 0.1 px in messages
                assert a["score"] == pytest.approx(b["score"], abs=2e-4)
                compared += 1
    assert compared > 50, "too few detections for a meaningful comparison"


def test_starting_a_camera_while_another_runs_an_older_model_keeps_that_model(broker, model, videos, tmp_path):
    config = cameras_config(model, {"dock-1": str(videos[0]), "dock-2": str(videos[1])})
    with running_component(broker, config) as (component, operator):
        operator.send({"status": "start", "camera": "dock-1"})
        operator.wait_for(frame_of("dock-1"), count=2)
        mark = operator.mark()
        component.submit_config({**config.to_mapping(), "model_loc": str(tmp_path / "missing.onnx")})
        operator.wait_for(is_status("model_kept"), since=mark)
        operator.send({"status": "start", "camera": "dock-2", "request_id": "b"})
        refused = operator.wait_for(is_type("error", request_id="b"), since=mark)
        assert refused["code"] == "model_load_failed" and refused["running_model"] == model.name
        after = operator.mark()
        operator.wait_for(frame_of("dock-1"), since=after, count=3)  # dock-1 runs on with the model it had
        assert component.controller.cameras["dock-2"].state.value == "idle"
        assert not operator.since(mark, is_type("error", code="internal_error"))
