"""The device and workstation shell scripts, run for real against stub executables.

Every external command a script runs (aws, gdk, sudo, apt-get, java, greengrass-cli, ...) is a stub
first on PATH that records its arguments (tests/stubs/stub); the tests assert the exact calls.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
UTILS = REPO / "utils"
STUB = REPO / "tests" / "stubs" / "stub"
SCRIPTS = sorted(UTILS.glob("*.sh"))
COMPONENT = "com.yoloedge.inference"


class Stubs:
    """A PATH folder of recording stubs and the rules they answer with."""

    def __init__(self, root: Path, commands: list[str]) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        self.rules_file = root / "rules.json"
        self.rules: dict[str, list[dict]] = {}
        self.home = root / "home"
        self.home.mkdir()
        for command in commands:
            self.add(command)

    def add(self, command: str) -> Path:
        wrapper = self.bin / command
        wrapper.write_text(f'#!/bin/sh\nSTUB_NAME={command} exec "{sys.executable}" "{STUB}" "$@"\n')
        wrapper.chmod(0o755)
        return wrapper

    def on(self, command: str, **rule: object) -> None:
        """Add a rule (see tests/stubs/stub): args/prefix/times match; stdout/stderr/exit/run answer."""
        self.rules.setdefault(command, []).append(rule)

    def run(self, script: Path | str, *args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        self.rules_file.write_text(json.dumps(self.rules))
        path = os.pathsep.join([str(self.bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
        full_env = {"PATH": path, "HOME": str(self.home), "LANG": "C.UTF-8", "STUB_LOG": str(self.log),
                    "STUB_RULES": str(self.rules_file), **(env or {})}
        return subprocess.run(["bash", str(script), *args], env=full_env, cwd=cwd, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)

    def calls(self, command: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if command is None or r["cmd"] == command]

    def argv(self, command: str) -> list[list[str]]:
        return [r["args"] for r in self.calls(command)]


def not_installed_by_default(stubs: Stubs) -> None:
    stubs.on("dpkg-query", exit=1, stderr="dpkg-query: no packages found\n")


# -- every script --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_exits_zero_and_explains_usage(script: Path, tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, [])
    done = stubs.run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: utils/" + script.name in done.stdout
    assert stubs.calls() == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_unknown_argument_is_an_error(script: Path, tmp_path: Path) -> None:
    done = Stubs(tmp_path, []).run(script, "--no-such-flag")
    assert done.returncode == 2
    assert "unknown argument '--no-such-flag'" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_and_executable(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    done = subprocess.run(["shellcheck", "--severity=style", *map(str, SCRIPTS)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- install_dependencies.sh -----------------------------------------------------------------------

INSTALL = UTILS / "install_dependencies.sh"
INSTALL_STUBS = ["dpkg-query", "apt-get", "apt-cache", "sudo", "id"]


def fake_jetson(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1\n")
    return root


def test_install_plain_linux_installs_only_missing_base_packages(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("dpkg-query", args=["-W", "-f=${Status}", "python3"], stdout="install ok installed")
    not_installed_by_default(stubs)
    done = stubs.run(INSTALL, env={"YOLO_EDGE_ROOT": str(tmp_path / "empty-root")})
    assert done.returncode == 0, done.stderr
    assert "not a Jetson" in done.stdout
    assert "already installed: python3" in done.stdout
    assert stubs.argv("sudo") == [
        ["apt-get", "update"],
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends",
         "python3-venv", "python3-pip", "libgl1", "libglib2.0-0"],
    ]
    assert stubs.argv("apt-get") == [
        ["update"], ["install", "-y", "--no-install-recommends", "python3-venv", "python3-pip", "libgl1",
                     "libglib2.0-0"]]


def test_install_on_a_jetson_adds_tensorrt_and_torch_packages(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    stubs.on("id", args=["-u"], stdout="0\n")
    stubs.on("dpkg-query", args=["-W", "-f=${Version}", "nvidia-jetpack"], stdout="5.1.2-b104")
    not_installed_by_default(stubs)
    stubs.on("apt-cache", args=["show", "python3-pycuda"], exit=100)
    done = stubs.run(INSTALL, "--backends", "onnx,tensorrt,torch",
                     env={"YOLO_EDGE_ROOT": str(fake_jetson(tmp_path / "root"))})
    assert done.returncode == 0, done.stderr
    assert "NVIDIA Jetson, L4T 35.4.1, JetPack 5.1.2-b104" in done.stdout
    assert stubs.calls("sudo") == []  # root: no sudo
    assert stubs.argv("apt-get")[-1] == [
        "install", "-y", "--no-install-recommends", "python3", "python3-venv", "python3-pip", "libgl1",
        "libglib2.0-0", "libopenblas-dev", "libjpeg-dev", "zlib1g-dev", "python3-libnvinfer"]
    assert "NVIDIA's PyTorch wheel" in done.stdout
    assert "python3-pycuda is not in your apt sources" in done.stdout


def test_install_is_idempotent_when_everything_is_present(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("dpkg-query", prefix=["-W", "-f=${Status}"], stdout="install ok installed")
    done = stubs.run(INSTALL, env={"YOLO_EDGE_ROOT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "nothing to install" in done.stdout
    assert stubs.calls("apt-get") == [] and stubs.calls("sudo") == []


def test_install_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    stubs.on("id", args=["-u"], stdout="1000\n")
    not_installed_by_default(stubs)
    done = stubs.run(INSTALL, "--dry-run", "--backends=torch", env={"YOLO_EDGE_ROOT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert ("would run: sudo apt-get install -y --no-install-recommends python3 python3-venv python3-pip "
            "libgl1 libglib2.0-0") in done.stdout
    assert "install_extras to onnx,greengrass,torch" in done.stdout
    assert stubs.calls("apt-get") == [] and stubs.calls("sudo") == []


@pytest.mark.parametrize("backends", ["onnx,cuda", ",", ""])
def test_install_rejects_unknown_backends(backends: str, tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    done = stubs.run(INSTALL, "--backends", backends)
    assert done.returncode == 2
    assert "--backends" in done.stderr
    assert stubs.calls("apt-get") == []


# -- provisioning.sh -------------------------------------------------------------------------------

PROVISION = UTILS / "provisioning.sh"
PROVISION_STUBS = ["sudo", "id", "java", "apt-get", "getent", "groupadd", "useradd", "usermod", "curl", "unzip"]
NUCLEUS_URL = "https://d2s8p88vqu9w66.cloudfront.net/releases/greengrass-nucleus-latest.zip"


def provisioning_stubs(tmp_path: Path, java_version: str = "1.8.0_392") -> Stubs:
    stubs = Stubs(tmp_path, PROVISION_STUBS)
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("id", args=["ggc_user"], exit=1, stderr="id: 'ggc_user': no such user\n")
    stubs.on("id", args=["-nG", "ggc_user"], stdout="ggc_group\n")
    stubs.on("java", args=["-version"], stderr=f'openjdk version "{java_version}" 2024-01-16\n')
    stubs.on("getent", args=["group", "video"], stdout="video:x:44:\n")
    stubs.on("getent", prefix=["group"], exit=2)
    stubs.on("curl", run='while [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo zip > "$2"; fi; shift; done')
    stubs.on("unzip", run='while [ $# -gt 0 ]; do if [ "$1" = -d ]; then mkdir -p "$2/lib"; '
                          'echo jar > "$2/lib/Greengrass.jar"; fi; shift; done')
    return stubs


def installer_args(root: str, installer: Path, region: str, thing: str, group: str) -> list[str]:
    return [f"-Droot={root}", "-Dlog.store=FILE", "-jar", str(installer / "lib" / "Greengrass.jar"),
            "--aws-region", region, "--thing-name", thing, "--thing-group-name", group,
            "--thing-policy-name", "GreengrassV2IoTThingPolicy",
            "--tes-role-name", "GreengrassV2TokenExchangeRole",
            "--tes-role-alias-name", "GreengrassCoreTokenExchangeRoleAlias",
            "--component-default-user", "ggc_user:ggc_group",
            "--provision", "true", "--setup-system-service", "true", "--deploy-dev-tools", "true"]


def test_provisioning_full_run_with_defaults(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path)
    installer = tmp_path / "inst"
    gg_root = tmp_path / "gg"
    done = stubs.run(PROVISION, "--yes", "--installer-dir", str(installer), "--gg-root", str(gg_root),
                     "--artifact-bucket", "my-artifacts",
                     env={"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    assert done.returncode == 0, done.stderr
    assert stubs.argv("sudo") == [
        ["-E", "apt-get", "update"],
        ["-E", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends",
         "default-jre-headless"],
        ["-E", "groupadd", "--system", "ggc_group"],
        ["-E", "useradd", "--system", "--create-home", "--gid", "ggc_group", "ggc_user"],
        ["-E", "usermod", "-a", "-G", "video", "ggc_user"],
        ["-E", "java", *installer_args(str(gg_root), installer, "eu-west-1", "GreengrassThing",
                                       "GreengrassThingGroup")],
    ]
    assert stubs.argv("curl") == [["-fsSL", "--retry", "3", "-o", f"{installer}.zip", NUCLEUS_URL]]
    assert stubs.argv("unzip") == [["-q", "-o", f"{installer}.zip", "-d", str(installer)]]
    assert "s3:GetObject" in done.stdout and "arn:aws:s3:::my-artifacts/*" in done.stdout
    assert "warning" not in done.stdout


def test_provisioning_flags_win_over_environment_and_skip_what_exists(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path, java_version="17.0.10")
    stubs.rules["id"][1] = {"args": ["ggc_user"], "stdout": "uid=998(ggc_user)\n"}
    stubs.rules["id"][2] = {"args": ["-nG", "ggc_user"], "stdout": "ggc_group video\n"}
    stubs.rules["getent"].insert(0, {"args": ["group", "ggc_group"], "stdout": "ggc_group:x:997:\n"})
    installer = tmp_path / "inst"
    (installer / "lib").mkdir(parents=True)
    (installer / "lib" / "Greengrass.jar").write_text("jar")
    done = stubs.run(PROVISION, "--yes", "--region", "us-west-2", "--thing-name", "Dev1", "--thing-group",
                     "Lab", "--installer-dir", str(installer), "--gg-root", str(tmp_path / "gg"),
                     env={"AWS_REGION": "eu-west-1", "DEV_IOT_THING": "Other", "DEV_IOT_THING_GROUP": "Else"})
    assert done.returncode == 0, done.stderr
    assert stubs.argv("sudo") == [["-E", "java", *installer_args(str(tmp_path / "gg"), installer, "us-west-2",
                                                                  "Dev1", "Lab")]]
    assert stubs.calls("curl") == [] and stubs.calls("apt-get") == []
    assert "java 17 found" in done.stdout
    assert "warning: AWS_ACCESS_KEY_ID" in done.stdout


def test_provisioning_without_region_is_a_clear_error(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path)
    done = stubs.run(PROVISION, "--yes")
    assert done.returncode == 2
    assert "no AWS region: pass --region or set AWS_REGION" in done.stderr
    assert stubs.calls("sudo") == [] and stubs.calls("curl") == []


def test_provisioning_rejects_a_malformed_region(tmp_path: Path) -> None:
    done = provisioning_stubs(tmp_path).run(PROVISION, "--yes", "--region", "Frankfurt")
    assert done.returncode == 2 and "does not look like an AWS region" in done.stderr


def test_provisioning_needs_yes_without_a_terminal(tmp_path: Path) -> None:
    done = provisioning_stubs(tmp_path).run(PROVISION, env={"AWS_REGION": "eu-west-1"})
    assert done.returncode == 2
    assert "pass --yes" in done.stderr


def test_provisioning_does_nothing_when_already_installed(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path)
    (tmp_path / "gg" / "alts" / "current").mkdir(parents=True)
    done = stubs.run(PROVISION, "--yes", "--gg-root", str(tmp_path / "gg"), env={"AWS_REGION": "eu-west-1"})
    assert done.returncode == 0, done.stderr
    assert "already installed" in done.stdout
    assert stubs.calls("sudo") == [] and stubs.calls("curl") == []


def run_in_terminal(stubs: Stubs, script: Path, args: list[str], answers: list[str], env: dict[str, str],
                    timeout: float = 30.0) -> tuple[int, str]:
    """Run `script` with a pseudo-terminal as stdin, answering each prompt in turn."""
    stubs.rules_file.write_text(json.dumps(stubs.rules))
    path = os.pathsep.join([str(stubs.bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    full_env = {"PATH": path, "HOME": str(stubs.home), "STUB_LOG": str(stubs.log),
                "STUB_RULES": str(stubs.rules_file), **env}
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve("/bin/bash", ["bash", str(script), *args], full_env)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            while pending and output.rstrip().endswith((b"]:", b"[y/N]")):
                os.write(fd, pending.pop(0).encode() + b"\n")
                output += b"\n"
                break
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_provisioning_prompts_with_defaults_when_interactive(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path, java_version="11.0.22")
    installer = tmp_path / "inst"
    code, output = run_in_terminal(
        stubs, PROVISION, ["--installer-dir", str(installer), "--gg-root", str(tmp_path / "gg")],
        answers=["ap-southeast-2", "", "", "y"], env={})
    assert code == 0, output
    assert "IoT thing name [GreengrassThing]:" in output
    assert "IoT thing group [GreengrassThingGroup]:" in output
    assert stubs.argv("sudo")[-1] == ["-E", "java", *installer_args(
        str(tmp_path / "gg"), installer, "ap-southeast-2", "GreengrassThing", "GreengrassThingGroup")]


# -- set_max_power.sh ------------------------------------------------------------------------------

MAX_POWER = UTILS / "set_max_power.sh"


def test_set_max_power_refuses_off_a_jetson(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, ["nvpmodel", "jetson_clocks", "sudo", "id"])
    done = stubs.run(MAX_POWER, env={"YOLO_EDGE_ROOT": str(tmp_path)})
    assert done.returncode == 3
    assert "not an NVIDIA Jetson" in done.stderr
    assert stubs.calls("nvpmodel") == [] and stubs.calls("jetson_clocks") == []


def test_set_max_power_sets_mode_and_clocks_on_a_jetson(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, ["nvpmodel", "jetson_clocks", "sudo", "id"])
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("nvpmodel", args=["-q"], stdout="NV Power Mode: 15W\n2\n", times=1)
    stubs.on("nvpmodel", args=["-q"], stdout="NV Power Mode: MAXN\n0\n")
    done = stubs.run(MAX_POWER, env={"YOLO_EDGE_ROOT": str(fake_jetson(tmp_path / "root"))})
    assert done.returncode == 0, done.stderr
    assert stubs.argv("sudo") == [["nvpmodel", "-q"], ["nvpmodel", "-m", "0"], ["jetson_clocks"], ["nvpmodel", "-q"]]
    assert "MAXN" in done.stdout


def test_set_max_power_skips_a_mode_already_set_and_dry_run_changes_nothing(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, ["nvpmodel", "jetson_clocks", "sudo", "id"])
    stubs.on("id", args=["-u"], stdout="0\n")
    stubs.on("nvpmodel", args=["-q"], stdout="NV Power Mode: MAXN\n0\n")
    root = fake_jetson(tmp_path / "root")
    done = stubs.run(MAX_POWER, "--dry-run", env={"YOLO_EDGE_ROOT": str(root)})
    assert done.returncode == 0, done.stderr
    assert "power mode 0 already set" in done.stdout
    assert "would run: jetson_clocks" in done.stdout
    assert stubs.argv("nvpmodel") == [["-q"]] and stubs.calls("jetson_clocks") == []
    done = stubs.run(MAX_POWER, "--mode", "x", env={"YOLO_EDGE_ROOT": str(root)})
    assert done.returncode == 2 and "--mode needs a power mode number" in done.stderr


# -- deploy-gdk-build.sh ---------------------------------------------------------------------------

DEPLOY_ENV = {"AWS_ACCOUNT_NUM": "123456789012", "AWS_REGION": "eu-west-1", "DEV_IOT_THING": "Jetson1",
              "DEV_IOT_THING_GROUP": "YoloGroup", "YOLO_EDGE_POLL_S": "0"}
GROUP_ARN = "arn:aws:iot:eu-west-1:123456789012:thinggroup/YoloGroup"


def deploy_project(tmp_path: Path, bucket: str = "my-prefix") -> Path:
    """A copy of the project files the deploy script reads, so GDK's (stub) output stays in tmp."""
    project = tmp_path / "project"
    (project / "utils").mkdir(parents=True)
    (project / "recipes").mkdir()
    shutil.copy2(UTILS / "deploy-gdk-build.sh", project / "utils")
    shutil.copy2(REPO / "recipes" / "deployment-template.json", project / "recipes")
    config = json.loads((REPO / "gdk-config.json").read_text())
    config["component"][COMPONENT]["publish"]["bucket"] = bucket
    (project / "gdk-config.json").write_text(json.dumps(config))
    return project


def deploy_stubs(tmp_path: Path, publish_writes: str | None = "0.1.3") -> Stubs:
    stubs = Stubs(tmp_path, ["gdk", "aws"])
    if publish_writes:
        stubs.on("gdk", prefix=["component", "publish"],
                 run=f"mkdir -p greengrass-build/recipes && echo x > greengrass-build/recipes/{COMPONENT}-"
                     f"{publish_writes}.yaml")
    stubs.on("aws", prefix=["greengrassv2", "list-deployments"], stdout=json.dumps({"deployments": [
        {"deploymentId": "old-1", "targetArn": GROUP_ARN, "deploymentStatus": "ACTIVE"}]}))
    stubs.on("aws", prefix=["greengrassv2", "get-deployment"], stdout=json.dumps({
        "deploymentId": "old-1", "components": {
            "aws.greengrass.Cli": {"componentVersion": "2.12.0"},
            "com.example.Other": {"componentVersion": "1.2.0", "runWith": {"posixUser": "me:me"},
                                  "configurationUpdate": {"merge": "{\"a\": \"1\"}"}},
            COMPONENT: {"componentVersion": "0.1.2", "configurationUpdate": {"merge": "{\"camera_id\": \"1\"}"}},
        }}))
    stubs.on("aws", prefix=["greengrassv2", "create-deployment"], stdout=json.dumps({"deploymentId": "dep-2"}))
    return stubs


def created_deployment(stubs: Stubs) -> dict:
    (call,) = [c for c in stubs.calls("aws") if c["args"][:2] == ["greengrassv2", "create-deployment"]]
    (content,) = call["files"].values()
    return json.loads(content)


def test_deploy_builds_publishes_and_deploys_to_the_thing_group(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    stubs = deploy_stubs(tmp_path)
    merge = '{"model_loc": "yolov8s.onnx", "conf_threshold": "0.4"}'
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--merge", merge, env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert stubs.argv("gdk") == [["component", "build"], ["component", "publish", "-r", "eu-west-1"]]
    aws = stubs.argv("aws")
    assert aws[0] == ["greengrassv2", "list-deployments", "--region", "eu-west-1", "--target-arn", GROUP_ARN,
                      "--history-filter", "LATEST_ONLY", "--output", "json"]
    assert aws[1] == ["greengrassv2", "get-deployment", "--region", "eu-west-1", "--deployment-id", "old-1",
                      "--output", "json"]
    assert aws[2][:4] == ["greengrassv2", "create-deployment", "--region", "eu-west-1"]
    assert len(aws) == 3  # the version came from GDK's publish recipe
    deployment = created_deployment(stubs)
    template = json.loads((REPO / "recipes" / "deployment-template.json").read_text())
    assert deployment["targetArn"] == GROUP_ARN
    assert deployment["deploymentName"] == "yolo-edge"
    assert deployment["deploymentPolicies"] == template["deploymentPolicies"]
    assert deployment["components"] == {
        "aws.greengrass.Cli": {"componentVersion": "2.12.0"},
        "com.example.Other": {"componentVersion": "1.2.0", "runWith": {"posixUser": "me:me"}},
        COMPONENT: {"componentVersion": "0.1.3", "configurationUpdate": {"merge": json.dumps(json.loads(merge))}},
    }
    assert isinstance(deployment["components"][COMPONENT]["configurationUpdate"]["merge"], str)
    assert f"deployment dep-2: {COMPONENT} 0.1.3 -> {GROUP_ARN}" in done.stdout
    assert "carried over: aws.greengrass.Cli, com.example.Other" in done.stderr


def test_deploy_to_one_thing_finds_the_version_in_the_cloud_and_waits(tmp_path: Path) -> None:
    project = deploy_project(tmp_path, bucket="REPLACE-WITH-BUCKET-PREFIX")
    stubs = deploy_stubs(tmp_path, publish_writes=None)
    stubs.rules["aws"][0]["stdout"] = json.dumps({"deployments": []})
    stubs.on("aws", prefix=["greengrassv2", "list-component-versions"], stdout=json.dumps({"componentVersions": [
        {"componentVersion": "1.0.7"}, {"componentVersion": "1.0.6"}]}))
    effective = ["greengrassv2", "list-effective-deployments"]
    stubs.on("aws", prefix=effective, times=1, stdout=json.dumps({"effectiveDeployments": []}))
    stubs.on("aws", prefix=effective, times=1, stdout=json.dumps({"effectiveDeployments": [
        {"deploymentId": "dep-2", "coreDeviceExecutionStatus": "IN_PROGRESS"}]}))
    stubs.on("aws", prefix=effective, stdout=json.dumps({"effectiveDeployments": [
        {"deploymentId": "old-1", "coreDeviceExecutionStatus": "FAILED"},
        {"deploymentId": "dep-2", "coreDeviceExecutionStatus": "SUCCEEDED"}]}))
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--thing", "--bucket", "my-bucket", "--wait",
                     "--component", "com.yoloedge.model=1.0.2", "--skip-build", env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert stubs.argv("gdk") == [["component", "publish", "-r", "eu-west-1", "-b", "my-bucket"]]
    aws = stubs.argv("aws")
    assert aws[0] == ["greengrassv2", "list-component-versions", "--region", "eu-west-1", "--arn",
                      f"arn:aws:greengrass:eu-west-1:123456789012:components:{COMPONENT}", "--output", "json"]
    assert [a[1] for a in aws] == ["list-component-versions", "list-deployments", "create-deployment",
                                   "list-effective-deployments", "list-effective-deployments",
                                   "list-effective-deployments"]
    assert aws[-1] == ["greengrassv2", "list-effective-deployments", "--region", "eu-west-1",
                       "--core-device-thing-name", "Jetson1", "--output", "json"]
    deployment = created_deployment(stubs)
    assert deployment["targetArn"] == "arn:aws:iot:eu-west-1:123456789012:thing/Jetson1"
    assert deployment["components"] == {COMPONENT: {"componentVersion": "1.0.7"},
                                        "com.yoloedge.model": {"componentVersion": "1.0.2"}}
    assert "IN_PROGRESS" in done.stderr
    assert "deployment dep-2 succeeded on Jetson1" in done.stdout


def test_deploy_wait_reports_a_failed_deployment(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    stubs = deploy_stubs(tmp_path)
    stubs.on("aws", prefix=["greengrassv2", "list-effective-deployments"], stdout=json.dumps({
        "effectiveDeployments": [{"deploymentId": "dep-2", "coreDeviceExecutionStatus": "FAILED",
                                  "reason": "COMPONENT_BROKEN"}]}))
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--wait", env=DEPLOY_ENV)
    assert done.returncode == 1
    assert "deployment dep-2 FAILED on Jetson1: COMPONENT_BROKEN" in done.stderr
    assert f"/greengrass/v2/logs/{COMPONENT}.log" in done.stderr


def test_deploy_missing_environment_names_every_variable(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    stubs = deploy_stubs(tmp_path)
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--wait", env={"AWS_REGION": "eu-west-1"})
    assert done.returncode == 2
    assert "set AWS_ACCOUNT_NUM DEV_IOT_THING DEV_IOT_THING_GROUP" in done.stderr
    assert stubs.calls() == []


@pytest.mark.parametrize(("args", "message"), [
    (["--merge", "{not json"], "--merge '{not json' is not a JSON object"),
    (["--merge", '["a"]'], "is not a JSON object"),
    (["--component", "com.yoloedge.model"], "is not NAME=x.y.z"),
    (["--wait-timeout", "soon"], "is not a number of seconds"),
])
def test_deploy_rejects_bad_options_before_calling_anything(args: list[str], message: str,
                                                            tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    stubs = deploy_stubs(tmp_path)
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", *args, env=DEPLOY_ENV)
    assert done.returncode == 2
    assert message in done.stderr
    assert stubs.calls() == []


def test_deploy_needs_a_bucket_when_gdk_config_has_the_placeholder(tmp_path: Path) -> None:
    project = deploy_project(tmp_path, bucket="REPLACE-WITH-BUCKET-PREFIX")
    stubs = deploy_stubs(tmp_path)
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", env=DEPLOY_ENV)
    assert done.returncode == 2
    assert "no artifact bucket" in done.stderr
    assert stubs.calls() == []


def test_deploy_leaves_the_project_files_untouched(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    done = deploy_stubs(tmp_path).run(project / "utils" / "deploy-gdk-build.sh", env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    after = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and "greengrass-build" not in p.parts}
    assert after == before


# -- local_deploy.sh -------------------------------------------------------------------------------

LOCAL = UTILS / "local_deploy.sh"


def fake_build(root: Path, name: str, version: str, files: tuple[str, ...] = ("yolo_edge-0.1.0-py3-none-any.whl",),
               recipe_name: str = "recipe.yaml") -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "artifacts" / name / version).mkdir(parents=True)
    for file in files:
        (root / "artifacts" / name / version / file).write_text("x")
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
              "Manifests": [{"Platform": {"os": "linux"}}]}
    (root / "recipes" / recipe_name).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


def local_stubs(tmp_path: Path) -> tuple[Stubs, dict[str, str]]:
    stubs = Stubs(tmp_path, ["sudo", "id"])
    cli = stubs.add("greengrass-cli")
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("greengrass-cli", prefix=["deployment", "create"],
             stdout="Local deployment submitted! Deployment Id: 0a1b2c3d-aaaa-bbbb-cccc-0123456789ab\n")
    return stubs, {"GREENGRASS_CLI": str(cli)}


def test_local_deploy_creates_a_deployment_from_the_build_output(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--status", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cli = str(stubs.bin / "greengrass-cli")
    assert stubs.argv("sudo") == [
        [cli, "deployment", "create", "--recipeDir", str(build / "recipes"), "--artifactDir",
         str(build / "artifacts"), "--merge", f"{COMPONENT}=0.1.0"],
        [cli, "deployment", "status", "-i", "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"],
    ]


def test_local_deploy_merge_becomes_update_config(tmp_path: Path) -> None:
    fake_build(tmp_path / "out", COMPONENT, "0.2.0")
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--build-dir", str(tmp_path / "out"), "--merge", '{"model_loc": "/m/y.onnx"}', env=env)
    assert done.returncode == 0, done.stderr
    (args,) = stubs.argv("greengrass-cli")
    assert args[-4:] == ["--merge", f"{COMPONENT}=0.2.0", "--update-config",
                         json.dumps({COMPONENT: {"MERGE": {"model_loc": "/m/y.onnx"}}})]


def test_local_deploy_update_config_file_is_passed_through(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.2.0")
    stubs, env = local_stubs(tmp_path)
    config = REPO / "recipes" / "local-update-config.json"
    assert COMPONENT in json.loads(config.read_text())
    done = stubs.run(LOCAL, "--update-config", str(config), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert stubs.argv("greengrass-cli")[0][-2:] == ["--update-config", str(config)]


def test_local_deploy_of_a_real_build(tmp_path: Path) -> None:
    wheel = tmp_path / "yolo_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not used")
    build = subprocess.run([sys.executable, str(UTILS / "build_component.py"), "--wheel", str(wheel),
                            "--output-dir", str(tmp_path / "greengrass-build"), "--version", "1.4.2"],
                           capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (args,) = stubs.argv("greengrass-cli")
    assert args[-2:] == ["--merge", f"{COMPONENT}=1.4.2"]


def test_local_deploy_with_a_model_component_stages_both_builds(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    model = tmp_path / "yolov8n.onnx"
    model.write_bytes(b"onnx bytes")
    published = subprocess.run([sys.executable, str(UTILS / "publish_model_component.py"), str(model),
                                "--local", str(tmp_path / "model-build")], capture_output=True, text=True,
                               check=False)
    assert published.returncode == 0, published.stderr
    assert "utils/local_deploy.sh --model-dir" in published.stdout
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--model-dir", "model-build", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (call,) = stubs.calls("greengrass-cli")
    args = call["args"]
    assert args[args.index("--merge"):] == ["--merge", f"{COMPONENT}=0.1.0", "--merge", "com.yoloedge.model=1.0.0"]
    recipe_dir, artifact_dir = args[args.index("--recipeDir") + 1], args[args.index("--artifactDir") + 1]
    assert call["dirs"][recipe_dir] == ["com.yoloedge.model-1.0.0.yaml", "recipe.yaml"]
    assert call["dirs"][artifact_dir] == [f"{COMPONENT}/0.1.0/yolo_edge-0.1.0-py3-none-any.whl",
                                          "com.yoloedge.model/1.0.0/yolov8n.onnx"]
    assert not Path(recipe_dir).exists()  # the staging folder is removed afterwards


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("none", [], "greengrass-build/recipes not found"),
    ("next_patch", [], "NEXT_PATCH cannot be deployed locally"),
    ("ok", ["--merge", "[1]"], "is not a JSON object"),
    ("ok", ["--update-config", "{oops"], "neither a JSON file nor valid JSON"),
    ("ok", ["--merge", "{}", "--update-config", "{}"], "either --update-config or --merge"),
    ("no_artifacts", [], "missing; build first"),
])
def test_local_deploy_input_errors(setup: str, args: list[str], message: str, tmp_path: Path) -> None:
    build = tmp_path / "greengrass-build"
    if setup in ("ok", "no_artifacts"):
        fake_build(build, COMPONENT, "0.1.0")
    if setup == "no_artifacts":
        shutil.rmtree(build / "artifacts")
    if setup == "next_patch":
        fake_build(build, COMPONENT, "NEXT_PATCH")
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, *args, env=env, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert stubs.calls("greengrass-cli") == []


def test_local_deploy_without_the_cli_says_how_to_get_it(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    stubs = Stubs(tmp_path, ["sudo", "id"])
    done = stubs.run(LOCAL, env={"GREENGRASS_CLI": str(tmp_path / "nope")}, cwd=tmp_path)
    assert done.returncode == 2
    assert "deploy aws.greengrass.Cli" in done.stderr
