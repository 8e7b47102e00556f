"""`cameras`, `batch_size`, `batch_timeout_ms`: the configuration of several cameras, and every bad value
named by camera and key."""

from __future__ import annotations

import pytest

from yolo_edge.config import DEFAULT_CAMERA, CameraSpec, Config, ConfigError

pytestmark = pytest.mark.runtime


def test_camera_id_is_the_one_camera_shorthand():
    config = Config.from_mapping({"camera_id": "video.mp4", "loop_source": "true"})
    assert config.camera_specs() == {DEFAULT_CAMERA: CameraSpec(DEFAULT_CAMERA, "video.mp4", True)}


def test_cameras_by_name_with_overrides_and_inherited_loop_source():
    config = Config.from_mapping({"loop_source": True, "cameras": {
        "dock-1": "rtsp://10.0.0.5/live", "dock-2": {"source": "csi://0", "max_fps": "12.5"},
        "yard": {"source": 0, "loop_source": "false"}}})
    assert config.camera_specs() == {
        "dock-1": CameraSpec("dock-1", "rtsp://10.0.0.5/live", True),
        "dock-2": CameraSpec("dock-2", "csi://0", True, 12.5),
        "yard": CameraSpec("yard", "0", False)}
    assert config.to_mapping()["cameras"] == {"dock-1": {"source": "rtsp://10.0.0.5/live"},
                                              "dock-2": {"source": "csi://0", "max_fps": 12.5},
                                              "yard": {"source": "0", "loop_source": False}}
    assert Config.from_mapping(config.to_mapping()) == config, "the mapping round-trips"


def test_cameras_as_json_text_from_the_command_line_or_a_deployment():
    config = Config.from_mapping({"cameras": '{"a": "1.mp4", "b": {"source": "2.mp4"}}'})
    assert list(config.camera_specs()) == ["a", "b"]
    assert Config.from_mapping({"cameras": "  "}).camera_specs() == {DEFAULT_CAMERA: CameraSpec(DEFAULT_CAMERA, "0",
                                                                                             False)}


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
