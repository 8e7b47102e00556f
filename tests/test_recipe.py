"""recipe.yaml and gdk-config.json: structure Greengrass and GDK accept, defaults equal to Config's,
least-privilege access control, a lifecycle that installs into a venv and runs without a timeout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolo_edge.config import OBJECT_KEYS, Config

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
    for key in ("cameras", *OBJECT_KEYS):
        expected[key] = ""  # text, as nucleus lite reads any brace in a recipe as a variable
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


def test_manifests_strictest_first_for_jetson_and_amd64_on_both_nuclei(recipe) -> None:
    platforms = [m["Platform"] for m in recipe["Manifests"]]
    # runtime "*": the Java nucleus and nucleus lite (which skips a manifest without `runtime`).
    assert platforms == [{"os": "linux", "architecture": "aarch64", "runtime": "*"},
                         {"os": "linux", "architecture": "amd64", "runtime": "*"}]
    for manifest in recipe["Manifests"]:
        (artifact,) = manifest["Artifacts"]
        assert re.fullmatch(r"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/yolo_edge-[^/]+\.whl", artifact["URI"])
        assert set(manifest) == {"Platform", "Artifacts", "Lifecycle"}


def test_lifecycle_installs_into_a_venv_and_runs_over_ipc(recipe) -> None:
    for manifest in recipe["Manifests"]:
        lifecycle = manifest["Lifecycle"]
        # Lowercase step names, as the recipe reference writes them: nucleus lite does not see `Install`/`Run`.
        assert set(lifecycle) == {"Setenv", "install", "run"}
        assert lifecycle["Setenv"]["PYTHONUNBUFFERED"] == "1"
        # The component's user may have no writable home: caches go under its work folder.
        assert lifecycle["Setenv"]["YOLO_EDGE_CACHE_DIR"] == "{work:path}/cache"
        install = lifecycle["install"]
        assert install["Timeout"] >= 900
        script = install["Script"]
        assert 'python3 -m venv --system-site-packages "$venv"' in script
        assert 'venv="{work:path}/venv"' in script
        assert "{configuration:/install_extras}" in script
        assert "sha256sum" in script and "already installed" in script  # the fast path
        assert "-m yolo_edge.install_plan" in script and 'pip install -r "$plan/requirements.txt"' in script
        run = lifecycle["run"]
        assert set(run) == {"Script"}  # no Timeout: a run timeout kills the component
        assert run["Script"].splitlines()[-1] == 'exec "{work:path}/venv/bin/yolo-edge" run --greengrass'
    jetson = recipe["Manifests"][0]["Lifecycle"]["Setenv"]
    assert jetson["CUDA_HOME"] == "/usr/local/cuda"


def test_no_ld_variable_in_setenv(recipe) -> None:
    """Non-root steps run through `sudo -E`, which drops every LD_* variable: the scripts export them."""
    setenvs = [(path, value) for path, value in walk(recipe) if path.endswith("/Setenv")]
    assert setenvs
    assert [(path, key) for path, value in setenvs for key in value if key.startswith("LD_")] == []


def test_every_brace_in_the_lifecycle_is_a_recipe_variable(recipe) -> None:
    """Nucleus lite reads every `{` of a script or Setenv value as a recipe variable and fails on others
    (a shell `${VAR}` included)."""
    known = r"\{(work:path|artifacts:path|configuration:/[A-Za-z0-9_/]+)\}"
    for manifest in recipe["Manifests"]:
        for path, value in walk(manifest["Lifecycle"]):
            if isinstance(value, str):
                assert "{" not in re.sub(known, "", value) and "}" not in re.sub(known, "", value), path


def run_lifecycle_step(recipe: dict[str, Any], architecture: str, step: str, tmp_path: Path,
                       environment: dict[str, str]) -> subprocess.CompletedProcess:
    """A step's script with the variables filled in and its Setenv applied, as the nucleus runs it."""
    (manifest,) = [m for m in recipe["Manifests"] if m["Platform"]["architecture"] == architecture]
    work = tmp_path / "work"
    fill = {"{work:path}": str(work), "{artifacts:path}": str(tmp_path / "artifacts"),
            "{configuration:/install_extras}": "onnx,greengrass"}

    def interpolate(text: str) -> str:
        for variable, value in fill.items():
            text = text.replace(variable, value)
        return text

    setenv = {**manifest["Lifecycle"].get("Setenv", {}), **manifest["Lifecycle"][step].get("Setenv", {})}
    env = {key: interpolate(str(value)) for key, value in setenv.items()}
    script = interpolate(manifest["Lifecycle"][step]["Script"])
    # Only these variables: no LD_* unless `environment` has it, as after `sudo -E`.
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", **env, **environment},
                          capture_output=True, text=True, timeout=60, check=False)


def stub_yolo_edge(tmp_path: Path) -> Path:
    """A stand-in for the venv's yolo-edge that records its arguments and environment."""
    stub = tmp_path / "work" / "venv" / "bin" / "yolo-edge"
    stub.parent.mkdir(parents=True)
    record = tmp_path / "record.json"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"open({str(record)!r}, 'w').write(json.dumps([sys.argv[1:], dict(os.environ)]))\n")
    stub.chmod(0o755)
    return record


@pytest.mark.parametrize(("before", "expected"), [
    (None, "/usr/local/cuda/lib64"),
    ("/opt/vendor/lib", "/usr/local/cuda/lib64:/opt/vendor/lib"),
])
def test_jetson_run_script_exports_ld_library_path(recipe, tmp_path: Path, before: str | None,
                                                   expected: str) -> None:
    record = stub_yolo_edge(tmp_path)
    done = run_lifecycle_step(recipe, "aarch64", "run", tmp_path, {} if before is None else {"LD_LIBRARY_PATH": before})
    assert done.returncode == 0, done.stderr
    argv, env = json.loads(record.read_text())
    assert argv == ["run", "--greengrass"]
    assert env["LD_LIBRARY_PATH"] == expected
    assert env["CUDA_HOME"] == "/usr/local/cuda" and env["OPENBLAS_CORETYPE"] == "ARMV8"


def test_amd64_run_script_leaves_ld_library_path_alone(recipe, tmp_path: Path) -> None:
    record = stub_yolo_edge(tmp_path)
    done = run_lifecycle_step(recipe, "amd64", "run", tmp_path, {})
    assert done.returncode == 0, done.stderr
    argv, env = json.loads(record.read_text())
    assert argv == ["run", "--greengrass"] and "LD_LIBRARY_PATH" not in env


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
    assert manifest["Platform"] == {"os": "linux", "runtime": "*"} and manifest["Lifecycle"] == {}


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
