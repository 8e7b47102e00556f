"""Events end to end: the real component over a real Mosquitto, on a video of coloured squares drawn with
OpenCV (the ground truth is known) and a hand-built ONNX shape detector run by ONNX Runtime.

`crossing_scene()`: three squares cross the line x = 160 once each ("a" red and "c" red left to right,
"b" green right to left, in lanes that never overlap); "a" first stops for 2.6 s in the top-left quadrant.
With `publish_frames: none` and events on, the operator must see exactly one `new` and one `end` per
square, one `line_crossed` per square in its direction, "a" entering the quadrant zone and loitering
there once, snapshots written for every `new` and `end`, and no frame messages.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import IN, OUT, is_state, running_component

from yolo_edge.config import Config

onnx = pytest.importorskip("onnx")
shapes = pytest.importorskip("yolo_edge_tools.shapes")

pytestmark = pytest.mark.integration

LINE = {"mid": {"points": [[160, 0], [160, 320]]}}  # walking down it, the left side is x > 160: "in"
ZONE = {"corner": {"points": [[0, 0], [160, 0], [160, 160], [0, 160]], "inertia": 3, "loitering_s": 1.5}}


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    paths, frames = shapes.crossing_scene()
    video = shapes.write_shapes_video(folder / "crossing.avi", paths, frames, shapes.SHAPES_SIZE, shapes.SHAPES_FPS)
    return shapes.build_shape_detector(folder / "shapes.onnx", shapes.SHAPES_SIZE), video


def events_config(model: Path, video: Path, snapshots: Path, **extra: Any) -> Config:
    height, width = shapes.SHAPES_SIZE
    values: dict[str, Any] = {
        "model_loc": str(model), "MODEL_HEIGHT": height, "MODEL_WIDTH": width, "event_topic": IN,
        "output_topic": OUT, "summary_interval_s": 0, "conf_threshold": shapes.SHAPES_CONF,
        # Played at the video's own rate, so 2.6 s of standing still is 2.6 s of loitering.
        "cameras": {"yard": {"source": str(video), "max_fps": shapes.SHAPES_FPS, "zones": ZONE, "lines": LINE}},
        "publish_frames": "none", "publish_events": True, "counts_interval_s": 0,
        "snapshots": {"events": ["new", "end"], "folder": str(snapshots)}}
    values.update(extra)
    return Config.from_mapping(values)


def run_scene(broker, config: Config) -> list[dict[str, Any]]:
    """Start, wait for the video to end, and return every message the operator saw after the start."""
    with running_component(broker, config) as (_component, operator):
        mark = operator.mark()
        operator.send({"status": "start"})
        operator.wait_for(is_state("idle", reason="source ended"), since=mark, timeout=60.0)
        operator.wait_for(lambda m: m.get("type") == "summary" and m.get("final"), since=mark, timeout=10.0)
        return operator.since(mark)


def test_every_square_gives_one_new_one_end_and_one_crossing(broker, scene_files, tmp_path):
    model, video = scene_files
    messages = run_scene(broker, events_config(model, video, tmp_path / "snapshots"))
    kinds = Counter(m["type"] for m in messages)
    assert kinds["frame"] == 0 and kinds["frames"] == 0  # publish_frames: none
    events = [m for m in messages if m["type"] == "event"]
    new = [m for m in events if m["event"] == "new"]
    end = [m for m in events if m["event"] == "end"]
    assert sorted(m["label"] for m in new) == ["green", "red", "red"]
    assert sorted(m["track_id"] for m in new) == sorted(m["track_id"] for m in end)  # no ID switches
    assert len({m["track_id"] for m in new}) == 3
    assert all(m["camera"] == "yard" for m in events)

    crossings = [m for m in messages if m["type"] == "line_crossed"]
    assert sorted((m["label"], m["direction"]) for m in crossings) == [("green", "out"), ("red", "in"), ("red", "in")]
    assert len({m["track_id"] for m in crossings}) == 3  # each square counted once
    final_counts = [m for m in messages if m["type"] == "counts"]
    assert len(final_counts) == 1 and final_counts[0]["final"] is True
    assert final_counts[0]["lines"] == {"mid": {"red": {"in": 2, "out": 0}, "green": {"in": 0, "out": 1}}}
    assert final_counts[0]["zones"]["corner"]["entries"] == {"red": 1}

    # "a" (red, the first to appear) entered the corner zone and loitered there, once each.
    first = min(new, key=lambda m: m["start_time"])
    updates = [m for m in events if m["event"] == "update" and m["track_id"] == first["track_id"]]
    assert sum("zone_entered" in m["reasons"] for m in updates) + ("corner" in first["entered_zones"]) == 1
    assert sum("loitering" in m["reasons"] for m in updates) == 1
    last = next(m for m in end if m["track_id"] == first["track_id"])
    assert last["entered_zones"] == ["corner"] and last["loitering_zones"] == ["corner"] and last["zones"] == []
    assert all(m["end_time"] is None for m in new) and all(m["end_time"] >= m["start_time"] for m in end)

    # A snapshot for every new and end event, written where the event says.
    for message in new + end:
        assert Path(message["snapshot"]).is_file(), message
    assert len({m["snapshot"] for m in new + end}) == 6
    summary = next(m for m in messages if m["type"] == "summary" and m.get("final"))
    assert summary["snapshots_written"] == 6 and summary["snapshots_dropped"] == 0
    # 3 objects passing: 3 new + 3 end + 3 crossings + 1 counts + a few zone/score updates.
    assert kinds["event"] + kinds["line_crossed"] + kinds["counts"] <= 20, kinds
    print(f"\n[events] messages after start: {dict(kinds)}")


def test_frames_with_detections_only(broker, scene_files, tmp_path):
    """publish_frames: detections sends no frame message for the empty frames at the end of the video."""
    model, video = scene_files
    paths, frames = shapes.crossing_scene()
    config = events_config(model, video, tmp_path / "snapshots", publish_frames="detections", publish_events=False)
    config = Config.from_mapping({**config.to_mapping(), "max_publish_rate": 0,
                                  "cameras": {"yard": {"source": str(video), "max_fps": 0}}})
    messages = run_scene(broker, config)
    published = [m for m in messages if m["type"] == "frame"]
    with_squares = sum(1 for index in range(frames) if shapes.shape_boxes(paths, index))
    # A square is always detected when whole, and may be when cut by the frame's edge.
    with_whole = sum(1 for index in range(frames)
                     if any(shapes.fully_visible(box) for _label, box in shapes.shape_boxes(paths, index)))
    assert published and all(m["detection_count"] > 0 for m in published)
    assert with_whole <= len(published) <= with_squares < frames
    assert not [m for m in messages if m["type"] in ("event", "line_crossed", "counts")]


def test_event_topic_out_takes_the_events(broker, scene_files, tmp_path):
    from harness import Operator

    model, video = scene_files
    config = Config.from_mapping({**events_config(model, video, tmp_path / "snapshots").to_mapping(),
                                  "event_topic_out": "yard/events", "snapshots": ""})
    events = Operator(broker.port, "yard/events")
    try:
        messages = run_scene(broker, config)
        assert not [m for m in messages if m["type"] in ("event", "line_crossed", "counts")]
        events.wait_for(lambda m: m.get("type") == "counts" and m.get("final"), timeout=10.0)
        kinds = Counter(m["type"] for m in events.since(0))
        assert kinds["event"] >= 6 and kinds["line_crossed"] == 3 and kinds["counts"] == 1
        assert all("snapshot" not in m for m in events.since(0) if m["type"] == "event")
    finally:
        events.close()


def test_snapshot_command_draws_zones_lines_and_detections(scene_files, tmp_path, capsys):
    import json

    import cv2

    from yolo_edge.cli import main

    model, _video = scene_files
    paths, _frames = shapes.crossing_scene()
    folder = tmp_path / "frames"
    folder.mkdir()
    frame = shapes.draw_frame(paths, 25)  # three whole squares
    cv2.imwrite(str(folder / "frame.png"), frame)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_loc": str(model), "MODEL_HEIGHT": 320, "MODEL_WIDTH": 320,
                                  "conf_threshold": shapes.SHAPES_CONF,
                                  "cameras": {"yard": {"source": str(folder), "zones": ZONE, "lines": LINE}}}))
    out = tmp_path / "yard.jpg"
    assert main(["snapshot", "--config", str(config), "--camera", "yard", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    whole = sum(shapes.fully_visible(box) for _label, box in shapes.shape_boxes(paths, 25))
    assert whole == 3
    assert "frame 320x320" in printed and f"1 zones, 1 lines, {whole} detections" in printed
    drawn = cv2.imread(str(out))
    assert drawn.shape == frame.shape
    assert (abs(drawn.astype(int) - frame.astype(int)).sum(axis=2) > 30).sum() > 500  # zone, line and boxes drawn
    assert main(["snapshot", "--config", str(config), "--camera", "gate", "--out", str(out)]) == 2
    assert "'--camera': invalid value 'gate'; allowed: one of yard" in capsys.readouterr().err


def test_a_class_the_model_lacks_is_refused_at_start(broker, scene_files, tmp_path):
    model, video = scene_files
    config = Config.from_mapping({**events_config(model, video, tmp_path / "snapshots").to_mapping(),
                                  "cameras": {"yard": {"source": str(video), "filters": {"classes": ["blue"]}}}})
    with running_component(broker, config) as (_component, operator):
        mark = operator.mark()
        operator.send({"status": "start"})
        error = operator.wait_for(lambda m: m.get("type") == "error", since=mark, timeout=20.0)
        assert error["code"] == "invalid_config" and error["key"] == "cameras.yard.filters.classes"
        assert "blue" in error["message"] and error["camera"] == "yard"
        assert not [m for m in operator.since(mark) if m.get("type") == "state" and m.get("state") == "running"]


def test_frame_detections_carry_their_track_ids(broker, scene_files, tmp_path):
    """With events and every frame published, a detection of a confirmed track names its track_id, the
    same id its events carry; and each square keeps one id from frame to frame."""
    model, video = scene_files
    config = Config.from_mapping({**events_config(model, video, tmp_path / "snapshots").to_mapping(),
                                  "publish_frames": "all", "max_publish_rate": 0, "snapshots": ""})
    messages = run_scene(broker, config)
    new_ids = {m["track_id"] for m in messages if m["type"] == "event" and m["event"] == "new"}
    frames = [m for m in messages if m["type"] == "frame"]
    tracked = [d for m in frames for d in m["detections"] if "track_id" in d]
    assert len(new_ids) == 3 and {d["track_id"] for d in tracked} == new_ids
    assert len(tracked) >= 0.9 * sum(m["detection_count"] for m in frames)  # all but each track's first frame
    lanes: dict[int, set[int]] = {}
    for detection in tracked:  # the three squares move in separate lanes (top, middle, bottom)
        lanes.setdefault(detection["track_id"], set()).add(int(detection["box"][1]) // 110)
    assert all(len(lane) == 1 for lane in lanes.values()), lanes


def test_snapshot_grabs_a_live_streams_frame_and_names_a_stream_it_cannot_open():
    import socket

    from mjpeg_server import MjpegServer

    from yolo_edge.cli_snapshot import grab_frame

    server = MjpegServer(fps=15).start()
    try:
        frame = grab_frame(server.url, timeout_s=10)
        assert frame.ndim == 3 and frame.shape[2] == 3
    finally:
        server.stop()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"cannot open stream http://127.0.0.1:{port}/stream.mjpg"):
        grab_frame(f"http://127.0.0.1:{port}/stream.mjpg", timeout_s=1)
