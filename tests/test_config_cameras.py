"""`cameras`, `batch_size`, `batch_timeout_ms`: the configuration of several cameras, and every bad value
named by camera and key."""

from __future__ import annotations

import pytest

from yolo_edge.config import DEFAULT_CAMERA, CameraSpec, Config, ConfigError
from yolo_edge.scene.filters import DetectionFilter

pytestmark = pytest.mark.runtime


def resolved(name: str, source: str, loop_source: bool, max_fps: float = 0.0) -> CameraSpec:
    """A camera as camera_specs() gives it: with the component's (default) filters, zones and lines."""
    return CameraSpec(name, source, loop_source, max_fps, DetectionFilter(), (), ())


def test_camera_id_is_the_one_camera_shorthand():
    config = Config.from_mapping({"camera_id": "video.mp4", "loop_source": "true"})
    assert config.camera_specs() == {DEFAULT_CAMERA: resolved(DEFAULT_CAMERA, "video.mp4", True)}


def test_cameras_by_name_with_overrides_and_inherited_loop_source():
    config = Config.from_mapping({"loop_source": True, "cameras": {
        "dock-1": "rtsp://10.0.0.5/live", "dock-2": {"source": "csi://0", "max_fps": "12.5"},
        "yard": {"source": 0, "loop_source": "false"}}})
    assert config.camera_specs() == {
        "dock-1": resolved("dock-1", "rtsp://10.0.0.5/live", True),
        "dock-2": resolved("dock-2", "csi://0", True, 12.5),
        "yard": resolved("yard", "0", False)}
    assert config.to_mapping()["cameras"] == {"dock-1": {"source": "rtsp://10.0.0.5/live"},
                                              "dock-2": {"source": "csi://0", "max_fps": 12.5},
                                              "yard": {"source": "0", "loop_source": False}}
    assert Config.from_mapping(config.to_mapping()) == config, "the mapping round-trips"


def test_cameras_as_json_text_from_the_command_line_or_a_deployment():
    config = Config.from_mapping({"cameras": '{"a": "1.mp4", "b": {"source": "2.mp4"}}'})
    assert list(config.camera_specs()) == ["a", "b"]
    no_cameras = Config.from_mapping({"cameras": "  "})
    assert no_cameras.camera_specs() == {DEFAULT_CAMERA: resolved(DEFAULT_CAMERA, "0", False)}


@pytest.mark.parametrize(("cameras", "key", "allowed"), [
    ({"dock 1": "x.mp4"}, "cameras", "camera names of 1 to 64"),
    ({"": "x.mp4"}, "cameras", "camera names"),
    ({"a": ""}, "cameras.a", "a camera index, a video file"),
    ({"a": True}, "cameras.a", "a source"),
    ({"a": {"src": "x"}}, "cameras.a.src", "one of source, loop_source, max_fps"),
    ({"a": {"loop_source": True}}, "cameras.a.source", "a camera index"),
    ({"a": {"source": "x", "loop_source": "maybe"}}, "cameras.a.loop_source", "true or false"),
    ({"a": {"source": "x", "max_fps": -1}}, "cameras.a.max_fps", "a number from 0 to 1000"),
    ("[1, 2]", "cameras", "an object of camera name -> source"),
    ("{not json", "cameras", "a JSON object"),
    ({f"c{i}": "x" for i in range(65)}, "cameras", "at most 64 cameras"),
])
def test_bad_cameras_name_the_camera_and_the_key(cameras, key, allowed):
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"cameras": cameras})
    assert caught.value.key == key and allowed in str(caught.value)


@pytest.mark.parametrize(("values", "key"), [({"batch_size": 65}, "batch_size"), ({"batch_size": -1}, "batch_size"),
                                             ({"batch_timeout_ms": 1001}, "batch_timeout_ms")])
def test_batch_limits(values, key):
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping(values)
    assert caught.value.key == key
    assert Config.from_mapping({"batch_size": "4", "batch_timeout_ms": "12.5"}).batch_size == 4


def test_a_cameras_own_zones_lines_and_filters_win_over_the_components():
    config = Config.from_mapping({
        "zones": {"all": [[0, 0], [1, 0], [1, 1]]}, "lines": '{"door": {"points": [[0.5, 0], [0.5, 1]]}}',
        "filters": {"min_score": 0.4},
        "cameras": {"a": "1.mp4", "b": {"source": "2.mp4", "zones": {"press": {"points": [[0, 0], [10, 0], [10, 10]],
                                                                                "inertia": 5}},
                                        "lines": {}, "filters": '{"classes": "person, car"}'}}})
    specs = config.camera_specs()
    assert [zone.name for zone in specs["a"].zones or ()] == ["all"]
    assert [line.name for line in specs["a"].lines or ()] == ["door"]
    assert specs["a"].filters is not None and specs["a"].filters.min_score == 0.4
    assert [(zone.name, zone.inertia) for zone in specs["b"].zones or ()] == [("press", 5)]
    assert specs["b"].lines == ()
    assert specs["b"].filters is not None and specs["b"].filters.classes == ("person", "car")


@pytest.mark.parametrize(("values", "key"), [
    ({"cameras": {"b": {"source": "2.mp4", "zones": {"press": {"points": [[0, 0], [1, 0], [1, 1]],
                                                               "inertia": -1}}}}}, "cameras.b.zones.press.inertia"),
    ({"cameras": {"b": {"source": "2.mp4", "lines": {"door": {"points": [[0, 0]]}}}}}, "cameras.b.lines.door.points"),
    ({"filters": {"min_score": 2}}, "filters.min_score"),
    ({"tracking": {"track_buffer": "soon"}}, "tracking.track_buffer"),
    ({"snapshots": {"events": ["start"]}}, "snapshots.events"),
    ({"publish_frames": "some"}, "publish_frames"),
    ({"zones": "{not json"}, "zones"),
])
def test_scene_keys_name_the_bad_key(values, key):
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping(values)
    assert caught.value.key == key
