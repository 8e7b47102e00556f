from __future__ import annotations

import json

import pytest

from yolo_edge.config import Config, ConfigError, load_config_file

pytestmark = pytest.mark.runtime


def test_defaults_keep_the_sample_names_and_values():
    values = Config().to_mapping()
    assert values["event_topic"] == "inference/input"
    assert values["output_topic"] == "inference/output"
    assert values["camera_id"] == "0"
    assert values["MODEL_HEIGHT"] == 640 and values["MODEL_WIDTH"] == 640


def test_strings_from_greengrass_are_accepted():
    config = Config.from_mapping({"MODEL_HEIGHT": "480", "MODEL_WIDTH": 640.0, "conf_threshold": "0.4",
                                  "max_det": "100", "loop_source": "true", "camera_id": 0.0, "half": "no"})
    assert (config.model_height, config.model_width) == (480, 640)
    assert config.conf_threshold == pytest.approx(0.4)
    assert config.max_det == 100 and config.loop_source is True and config.half is False
    assert config.camera_id == "0"


def test_key_names_are_case_insensitive_and_access_control_is_ignored():
    config = Config.from_mapping({"model_height": 320, "Event_Topic": "a/b", "accessControl": {"x": 1}})
    assert config.model_height == 320 and config.event_topic == "a/b"


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("MODEL_HEIGHT", "abc", "a number"),
    ("MODEL_HEIGHT", 500, "multiple of 32"),
    ("MODEL_WIDTH", 0, "from 32"),
    ("conf_threshold", 1.5, "from 0 to 1"),
    ("conf_threshold", "nan", "finite"),
    ("iou_threshold", True, "a number"),
    ("max_det", 2.5, "whole number"),
    ("event_topic", "", "non-empty MQTT topic"),
    ("output_topic", "a/#", "without wildcards"),
    ("device", "tpu", "'auto', 'cpu'"),
    ("task", "pose", "auto | detect"),
    ("loop_source", "maybe", "true or false"),
    ("model_loc", "", "a path"),
    ("camera_id", ["x"], "a string"),
    ("no_such_key", 1, "one of"),
    ("max_message_bytes", 500, "0 (the transport's own limit) or a number of bytes from 1024 to 131072"),
    ("max_message_bytes", "200000", "from 1024 to 131072"),
    ("max_message_bytes", -1, "from 1024"),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, fragment):
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({key: value})
    message = str(caught.value)
    assert repr(key) in message and repr(value) in message and fragment in message


def test_from_mapping_over_a_base_keeps_other_values():
    base = Config.from_mapping({"conf_threshold": 0.5})
    assert Config.from_mapping({"max_det": 10}, base).conf_threshold == 0.5


def test_config_file_json_yaml_and_recipe_wrapper(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"model_loc": "m.onnx", "MODEL_HEIGHT": "320"}))
    (tmp_path / "c.yaml").write_text("DefaultConfiguration:\n  model_loc: x.pt\n  max_det: '5'\n")
    assert load_config_file(tmp_path / "c.json")["MODEL_HEIGHT"] == "320"
    assert Config.from_mapping(load_config_file(tmp_path / "c.yaml")).max_det == 5
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="a mapping"):
        load_config_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="readable"):
        load_config_file(tmp_path / "missing.yaml")


def test_model_dir_variable_resolves_relative_model_paths(tmp_path):
    from yolo_edge.predictor import resolve_model_path

    assert resolve_model_path("m.onnx", {"YOLO_EDGE_MODEL_DIR": str(tmp_path)}) == tmp_path / "m.onnx"
    assert resolve_model_path("/abs/m.onnx", {"YOLO_EDGE_MODEL_DIR": str(tmp_path)}).as_posix() == "/abs/m.onnx"
    assert resolve_model_path("m.onnx", {}).as_posix() == "m.onnx"
    unresolved = {"YOLO_EDGE_MODEL_DIR": "{com.yoloedge.model:artifacts:path}"}
    assert resolve_model_path("models/m.onnx", unresolved).as_posix() == "models/m.onnx"
