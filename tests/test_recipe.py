"""recipe.yaml and gdk-config.json: structure Greengrass and GDK accept, defaults equal to Config's,
least-privilege access control, a lifecycle that installs into a venv and runs without a timeout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolo_edge.config import Config

REPO = Path(__file__).resolve().parent.parent
RECIPE_PATH = REPO / "recipe.yaml"
COMPONENT = "com.yoloedge.inference"
TOP_LEVEL = {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "ComponentDescription",
             "ComponentPublisher", "ComponentConfiguration", "ComponentDependencies", "Manifests"}
INSTALL_ONLY_KEYS = {"install_extras"}


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    return yaml.safe_load(RECIPE_PATH.read_text())


def as_greengrass_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) in a nested structure, keys included as paths."""
    items = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            items += walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            items += walk(value, f"{path}[{index}]")
    return items


def test_top_level_keys_and_quoted_format_version(recipe) -> None:
    assert set(recipe) <= TOP_LEVEL
    assert {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"} <= set(recipe)
    assert re.search(r'^RecipeFormatVersion: "2020-01-25"$', RECIPE_PATH.read_text(), re.MULTILINE)
    assert recipe["RecipeFormatVersion"] == "2020-01-25"  # a string, not a date
    assert recipe["ComponentName"] == COMPONENT
    assert re.fullmatch(r"^[a-zA-Z0-9-_.]+$", recipe["ComponentName"]) and len(recipe["ComponentName"]) <= 128
    assert re.fullmatch(r"\d+\.\d+\.\d+", recipe["ComponentVersion"])


def test_recipe_is_under_the_size_limit() -> None:
    assert len(RECIPE_PATH.read_bytes()) < 16000


def test_default_configuration_is_configs_defaults_as_strings(recipe) -> None:
    defaults = dict(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    defaults.pop("accessControl")
    expected = {key: as_greengrass_string(value) for key, value in Config().to_mapping().items()}
    assert {k: v for k, v in defaults.items() if k not in INSTALL_ONLY_KEYS} == expected
    assert all(isinstance(value, str) for value in defaults.values())
    # The component reads exactly this mapping over IPC at start.
    assert Config.from_mapping(recipe["ComponentConfiguration"]["DefaultConfiguration"]) == Config()


def test_access_control_grants_exactly_the_configured_topics(recipe) -> None:
    configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    access = configuration["accessControl"]
    assert set(access) == {"aws.greengrass.ipc.mqttproxy"}
    policies = access["aws.greengrass.ipc.mqttproxy"]
    assert set(policies) == {f"{COMPONENT}:mqttproxy:1", f"{COMPONENT}:mqttproxy:2"}
    subscribe, publish = policies[f"{COMPONENT}:mqttproxy:1"], policies[f"{COMPONENT}:mqttproxy:2"]
    assert subscribe["operations"] == ["aws.greengrass#SubscribeToIoTCore"]
    assert subscribe["resources"] == [configuration["event_topic"]]
    assert publish["operations"] == ["aws.greengrass#PublishToIoTCore"]
    assert publish["resources"] == [configuration["output_topic"]]
    for policy in policies.values():
        assert set(policy) == {"policyDescription", "operations", "resources"}
        assert policy["policyDescription"]
    values = [v for _path, v in walk(access) if isinstance(v, str)]
    assert not any(v == "*" or "#" in v.split("aws.greengrass#")[-1] or "+" in v for v in values)


def test_manifests_strictest_first_for_jetson_and_amd64(recipe) -> None:
    platforms = [m["Platform"] for m in recipe["Manifests"]]
    assert platforms == [{"os": "linux", "architecture": "aarch64"}, {"os": "linux", "architecture": "amd64"}]
    for manifest in recipe["Manifests"]:
        (artifact,) = manifest["Artifacts"]
        assert re.fullmatch(r"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/yolo_edge-[^/]+\.whl", artifact["URI"])
        assert set(manifest) == {"Platform", "Artifacts", "Lifecycle"}


def test_lifecycle_installs_into_a_venv_and_runs_over_ipc(recipe) -> None:
    for manifest in recipe["Manifests"]:
        lifecycle = manifest["Lifecycle"]
        assert set(lifecycle) == {"Setenv", "Install", "Run"}
        assert lifecycle["Setenv"]["PYTHONUNBUFFERED"] == "1"
        install = lifecycle["Install"]
        assert install["Timeout"] >= 900
        script = install["Script"]
        assert 'python3 -m venv --system-site-packages "$venv"' in script
        assert 'venv="{work:path}/venv"' in script
        assert "{configuration:/install_extras}" in script
        assert "sha256sum" in script and "already installed" in script  # the fast path
        run = lifecycle["Run"]
        assert set(run) == {"Script"}  # no Timeout: a Run timeout kills the component
        assert run["Script"] == 'exec "{work:path}/venv/bin/yolo-edge" run --greengrass'
    jetson = recipe["Manifests"][0]["Lifecycle"]["Setenv"]
    assert jetson["CUDA_HOME"] == "/usr/local/cuda" and "/usr/local/cuda/lib64" in jetson["LD_LIBRARY_PATH"]


def test_nothing_runs_as_root(recipe) -> None:
    assert not [path for path, _ in walk(recipe) if path.lower().endswith("/requiresprivilege")]


def test_only_known_recipe_variables_are_used() -> None:
    variables = set(re.findall(r"\{([a-zA-Z.]+:[^}\s]+)\}", RECIPE_PATH.read_text()))
    assert variables == {"work:path", "artifacts:path", "configuration:/install_extras"}


def test_gdk_config_matches_the_recipe(recipe) -> None:
    config = json.loads((REPO / "gdk-config.json").read_text())
    assert set(config) == {"component", "gdk_version"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", config["gdk_version"])
    (name,) = config["component"]
    assert name == recipe["ComponentName"]
    settings = config["component"][name]
    assert set(settings) >= {"author", "version", "build", "publish"}
    assert settings["version"] == "NEXT_PATCH" or re.fullmatch(r"\d+\.\d+\.\d+", settings["version"])
    build = settings["build"]
    assert build["build_system"] == "custom"
    # GDK runs the command with subprocess without a shell: it must be a list.
    assert build["custom_build_command"] == ["python3", "utils/build_component.py"]
    assert {"bucket", "region"} <= set(settings["publish"])
    assert not (REPO / "recipe.json").exists()  # GDK wants exactly one recipe file


def test_model_component_template_is_a_valid_artifact_only_recipe() -> None:
    template = yaml.safe_load((REPO / "recipes" / "com.yoloedge.model.yaml").read_text())
    assert set(template) <= TOP_LEVEL
    assert template["RecipeFormatVersion"] == "2020-01-25"
    assert template["ComponentName"] == "com.yoloedge.model"
    (manifest,) = template["Manifests"]
    assert manifest["Platform"] == {"os": "linux"} and manifest["Lifecycle"] == {}


def test_deployment_template_is_valid_create_deployment_input() -> None:
    import boto3
    from botocore.stub import Stubber

    template = json.loads((REPO / "recipes" / "deployment-template.json").read_text())
    merge = template["components"][COMPONENT]["configurationUpdate"]["merge"]
    assert isinstance(merge, str)
    Config.from_mapping(json.loads(merge))
    gg = boto3.client("greengrassv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    template["targetArn"] = "arn:aws:iot:eu-west-1:123456789012:thinggroup/G"
    with Stubber(gg) as stub:  # Stubber validates the parameters against the API model
        stub.add_response("create_deployment", {"deploymentId": "d"}, template)
        assert gg.create_deployment(**template)["deploymentId"] == "d"
    local = json.loads((REPO / "recipes" / "local-update-config.json").read_text())
    Config.from_mapping(local[COMPONENT]["MERGE"])
