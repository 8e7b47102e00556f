"""The device and workstation shell scripts, run for real against stub executables.

Every external command a script runs (aws, gdk, sudo, apt-get, java, greengrass-cli, ...) is a stub
first on PATH that records its arguments (tests/stubs/stub); the tests assert the exact calls.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import pty
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def apt_get_installs(stubs: Stubs) -> None:
    """Allow `apt-get update` and `apt-get install -y --no-install-recommends ...` (asserted by the test)."""
    stubs.on("apt-get", args=["update"])
    stubs.on("apt-get", prefix=["install", "-y", "--no-install-recommends"])


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
    apt_get_installs(stubs)
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
    """JetPack 5 needs its system Python 3.8 as python3 (tests/test_install_dependencies.py: the plan)."""
    pythons = sorted((Path.home() / ".pyenv" / "versions").glob("3.8.*/bin/python3"))
    if not pythons:
        pytest.skip("no Python 3.8 (JetPack 5's) here; .ci/run installs it with pyenv")
    stubs = Stubs(tmp_path, INSTALL_STUBS)
    (stubs.bin / "python3").symlink_to(pythons[-1].resolve())
    stubs.on("id", args=["-u"], stdout="0\n")
    stubs.on("dpkg-query", args=["-W", "-f=${Version}", "nvidia-jetpack"], stdout="5.1.2-b104")
    not_installed_by_default(stubs)
    stubs.on("apt-cache", args=["show", "python3-pycuda"], exit=100)
    apt_get_installs(stubs)
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
    apt_get_installs(stubs)
    stubs.on("groupadd", args=["--system", "ggc_group"])
    stubs.on("useradd", args=["--system", "--create-home", "--gid", "ggc_group", "ggc_user"])
    stubs.on("usermod", prefix=["-a", "-G"])
    return stubs


def expect_installer(stubs: Stubs, root: str, installer: Path, region: str, thing: str, group: str) -> list[str]:
    """Allow the one nucleus installer run `java <installer_args(...)>`; returns its arguments."""
    expected = installer_args(root, installer, region, thing, group)
    stubs.on("java", args=expected)
    return expected


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
    java = expect_installer(stubs, str(gg_root), installer, "eu-west-1", "GreengrassThing", "GreengrassThingGroup")
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
        ["-E", "java", *java],
    ]
    assert stubs.argv("curl") == [["-fsSL", "--retry", "3", "-o", f"{installer}.zip", NUCLEUS_URL]]
    assert stubs.argv("unzip") == [["-q", "-o", f"{installer}.zip", "-d", str(installer)]]
    assert "s3:GetObject" in done.stdout and "arn:aws:s3:::my-artifacts/*" in done.stdout
    assert "warning" not in done.stdout
    # The command it prints for the workstation is a valid IAM PutRolePolicy call with a JSON policy.
    printed = done.stdout[done.stdout.index("aws iam put-role-policy"):].split("\n\n")[0].replace("\\\n", " ")
    command = shlex.split(printed)
    assert stub_module().check_aws(command[1:]) == []
    policy = json.loads(command[command.index("--policy-document") + 1])
    assert policy["Statement"] == [{"Effect": "Allow", "Action": ["s3:GetObject"],
                                    "Resource": "arn:aws:s3:::my-artifacts/*"}]


def test_provisioning_flags_win_over_environment_and_skip_what_exists(tmp_path: Path) -> None:
    stubs = provisioning_stubs(tmp_path, java_version="17.0.10")
    stubs.rules["id"][1] = {"args": ["ggc_user"], "stdout": "uid=998(ggc_user)\n"}
    stubs.rules["id"][2] = {"args": ["-nG", "ggc_user"], "stdout": "ggc_group video\n"}
    stubs.rules["getent"].insert(0, {"args": ["group", "ggc_group"], "stdout": "ggc_group:x:997:\n"})
    installer = tmp_path / "inst"
    (installer / "lib").mkdir(parents=True)
    (installer / "lib" / "Greengrass.jar").write_text("jar")
    java = expect_installer(stubs, str(tmp_path / "gg"), installer, "us-west-2", "Dev1", "Lab")
    done = stubs.run(PROVISION, "--yes", "--region", "us-west-2", "--thing-name", "Dev1", "--thing-group",
                     "Lab", "--installer-dir", str(installer), "--gg-root", str(tmp_path / "gg"),
                     env={"AWS_REGION": "eu-west-1", "DEV_IOT_THING": "Other", "DEV_IOT_THING_GROUP": "Else"})
    assert done.returncode == 0, done.stderr
    assert stubs.argv("sudo") == [["-E", "java", *java]]
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
    java = expect_installer(stubs, str(tmp_path / "gg"), installer, "ap-southeast-2", "GreengrassThing",
                            "GreengrassThingGroup")
    code, output = run_in_terminal(
        stubs, PROVISION, ["--installer-dir", str(installer), "--gg-root", str(tmp_path / "gg")],
        answers=["ap-southeast-2", "", "", "y"], env={})
    assert code == 0, output
    assert "IoT thing name [GreengrassThing]:" in output
    assert "IoT thing group [GreengrassThingGroup]:" in output
    assert stubs.argv("sudo")[-1] == ["-E", "java", *java]


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
    stubs.on("nvpmodel", args=["-m", "0"])
    stubs.on("jetson_clocks", args=[])
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
COMPONENT_ARN = f"arn:aws:greengrass:eu-west-1:123456789012:components:{COMPONENT}"
MODEL = "com.yoloedge.model"
LIST_VERSIONS = ["greengrassv2", "list-component-versions", "--region", "eu-west-1", "--arn", COMPONENT_ARN,
                 "--output", "json"]
# A stand-in for utils/publish_model_component.py (tested on its own with botocore's Stubber): it
# refuses what the real parser refuses, then answers as the stub `publish_model_component`.
FAKE_MODEL_PUBLISHER = f'''import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("real", {str(UTILS / "publish_model_component.py")!r})
real = sys.modules["real"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real)
real.parse_args(sys.argv[1:])
os.environ["STUB_NAME"] = "publish_model_component"
os.execv(sys.executable, [sys.executable, {str(STUB)!r}, *sys.argv[1:]])
'''


def deploy_project(tmp_path: Path, bucket: str = "my-prefix", version: str | None = None) -> Path:
    """A copy of the project files the deploy script and GDK read, so GDK's (stub) output stays in tmp."""
    project = tmp_path / "project"
    (project / "utils").mkdir(parents=True)
    (project / "recipes").mkdir()
    for name in ("deploy-gdk-build.sh", "build_component.py"):
        shutil.copy2(UTILS / name, project / "utils")
    (project / "utils" / "publish_model_component.py").write_text(FAKE_MODEL_PUBLISHER)
    shutil.copy2(REPO / "recipes" / "deployment-template.json", project / "recipes")
    shutil.copy2(REPO / "recipe.yaml", project)
    config = json.loads((REPO / "gdk-config.json").read_text())
    config["component"][COMPONENT]["publish"]["bucket"] = bucket
    if version:
        config["component"][COMPONENT]["version"] = version
    (project / "gdk-config.json").write_text(json.dumps(config))
    return project


def versions_reply(*versions: str) -> str:
    return json.dumps({"componentVersions": [
        {"componentName": COMPONENT, "componentVersion": v, "arn": f"{COMPONENT_ARN}:versions:{v}"} for v in versions]})


def deploy_stubs(tmp_path: Path, publish_writes: str | None = "0.1.3", cloud: tuple[str, ...] = ("0.1.2",)) -> Stubs:
    """gdk (build = the project's real custom build command with a prebuilt wheel; publish = writes GDK's
    publish recipe <name>-<version>.yaml) and aws answering for a group whose deployment has 0.1.2."""
    stubs = Stubs(tmp_path, ["gdk", "aws"])
    wheel = tmp_path / "yolo_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    stubs.on("gdk", args=["component", "build"], run=f'python3 utils/build_component.py --wheel "{wheel}"')
    publish = "true"
    if publish_writes:
        publish = (f"mkdir -p greengrass-build/recipes && echo x > greengrass-build/recipes/{COMPONENT}-"
                   f"{publish_writes}.yaml")
    stubs.on("gdk", prefix=["component", "publish"], run=publish)
    stubs.on("aws", args=LIST_VERSIONS, times=1, stdout=versions_reply(*cloud))
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
    """The CreateDeployment input the script sent, checked against botocore's model of the operation."""
    (call,) = [c for c in stubs.calls("aws") if c["args"][:2] == ["greengrassv2", "create-deployment"]]
    (content,) = call["files"].values()
    deployment = json.loads(content)
    assert stub_module().validate_operation("greengrassv2", "CreateDeployment", deployment) == []
    return deployment


def test_deploy_builds_publishes_the_next_patch_and_deploys_to_the_thing_group(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    assert json.loads((project / "gdk-config.json").read_text())["component"][COMPONENT]["version"] == "NEXT_PATCH"
    stubs = deploy_stubs(tmp_path)
    merge = '{"camera_id": "rtsp://cam/stream", "conf_threshold": "0.4"}'
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--merge", merge, env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert stubs.argv("gdk") == [["component", "build"], ["component", "publish", "-r", "eu-west-1"]]
    assert (project / "greengrass-build" / "artifacts" / COMPONENT / "NEXT_PATCH").is_dir()
    aws = stubs.argv("aws")
    assert aws[0] == LIST_VERSIONS
    assert aws[1] == ["greengrassv2", "list-deployments", "--region", "eu-west-1", "--target-arn", GROUP_ARN,
                      "--history-filter", "LATEST_ONLY", "--output", "json"]
    assert aws[2] == ["greengrassv2", "get-deployment", "--region", "eu-west-1", "--deployment-id", "old-1",
                      "--output", "json"]
    assert aws[3][:4] == ["greengrassv2", "create-deployment", "--region", "eu-west-1"]
    assert len(aws) == 4  # the version came from GDK's publish recipe
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
    assert f"deployment dep-2: {COMPONENT} 0.1.3 -> {GROUP_ARN}" in done.stdout
    assert "carried over: aws.greengrass.Cli, com.example.Other" in done.stderr


def test_deploy_to_one_thing_finds_the_new_version_in_the_cloud_and_waits(tmp_path: Path) -> None:
    project = deploy_project(tmp_path, bucket="REPLACE-WITH-BUCKET-PREFIX")
    (project / "greengrass-build" / "artifacts" / COMPONENT / "NEXT_PATCH").mkdir(parents=True)
    stubs = deploy_stubs(tmp_path, publish_writes=None, cloud=("1.0.6", "1.0.5"))
    stubs.rules["aws"][1]["stdout"] = json.dumps({"deployments": []})
    stubs.on("aws", args=LIST_VERSIONS, times=1, stdout=versions_reply("1.0.7", "1.0.6", "1.0.5"))
    effective = ["greengrassv2", "list-effective-deployments"]
    stubs.on("aws", prefix=effective, times=1, stdout=json.dumps({"effectiveDeployments": []}))
    stubs.on("aws", prefix=effective, times=1, stdout=json.dumps({"effectiveDeployments": [
        {"deploymentId": "dep-2", "coreDeviceExecutionStatus": "IN_PROGRESS"}]}))
    stubs.on("aws", prefix=effective, stdout=json.dumps({"effectiveDeployments": [
        {"deploymentId": "old-1", "coreDeviceExecutionStatus": "FAILED"},
        {"deploymentId": "dep-2", "coreDeviceExecutionStatus": "SUCCEEDED"}]}))
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--thing", "--bucket", "my-bucket", "--wait",
                     "--component", "aws.greengrass.Cli=2.12.0", "--skip-build", env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert stubs.argv("gdk") == [["component", "publish", "-r", "eu-west-1", "-b", "my-bucket"]]
    aws = stubs.argv("aws")
    assert aws[0] == aws[1] == LIST_VERSIONS  # before and after publishing: 1.0.7 is the new one
    assert [a[1] for a in aws] == ["list-component-versions", "list-component-versions", "list-deployments",
                                   "create-deployment", "list-effective-deployments",
                                   "list-effective-deployments", "list-effective-deployments"]
    assert aws[-1] == ["greengrassv2", "list-effective-deployments", "--region", "eu-west-1",
                       "--core-device-thing-name", "Jetson1", "--output", "json"]
    deployment = created_deployment(stubs)
    assert deployment["targetArn"] == "arn:aws:iot:eu-west-1:123456789012:thing/Jetson1"
    assert deployment["components"] == {COMPONENT: {"componentVersion": "1.0.7"},
                                        "aws.greengrass.Cli": {"componentVersion": "2.12.0"}}
    assert "IN_PROGRESS" in done.stderr
    assert "deployment dep-2 succeeded on Jetson1" in done.stdout


def test_deploy_first_publish_of_a_component_that_does_not_exist_yet(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    stubs = deploy_stubs(tmp_path, publish_writes="1.0.0")
    stubs.rules["aws"][0] = {"args": LIST_VERSIONS, "exit": 254, "stderr": (
        "An error occurred (ResourceNotFoundException) when calling the ListComponentVersions operation: "
        "The resource was not found.\n")}
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert created_deployment(stubs)["components"][COMPONENT] == {"componentVersion": "1.0.0"}


def test_deploy_refuses_to_republish_a_fixed_version_before_building(tmp_path: Path) -> None:
    """GDK uploads the artifacts before CreateComponentVersion: a published version must never be published again."""
    project = deploy_project(tmp_path, version="0.1.2")
    stubs = deploy_stubs(tmp_path, cloud=("0.1.2", "0.1.1"))
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--skip-build", env=DEPLOY_ENV)
    assert done.returncode == 2
    assert f"{COMPONENT} 0.1.2 is already published in eu-west-1" in done.stderr
    assert "NEXT_PATCH" in done.stderr
    assert stubs.argv("aws") == [LIST_VERSIONS]
    assert stubs.calls("gdk") == []


def test_deploy_a_new_fixed_version_is_the_version_deployed(tmp_path: Path) -> None:
    project = deploy_project(tmp_path, version="0.2.0")
    stubs = deploy_stubs(tmp_path, publish_writes="0.2.0", cloud=("0.1.2",))
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", env=DEPLOY_ENV)
    assert done.returncode == 0, done.stderr
    assert (project / "greengrass-build" / "artifacts" / COMPONENT / "0.2.0").is_dir()
    assert created_deployment(stubs)["components"][COMPONENT]["componentVersion"] == "0.2.0"


def model_publisher_says(stubs: Stubs, version: str, reused: bool = False) -> None:
    stubs.on("publish_model_component", stdout="uploading ...\n" + json.dumps({
        "component": MODEL, "version": version, "arn": f"{COMPONENT_ARN[:-len(COMPONENT)]}{MODEL}:versions:{version}",
        "state": "DEPLOYABLE", "reused": reused, "files": ["yolov8n.onnx"]}) + "\n")


def test_deploy_with_a_model_publishes_it_and_points_model_loc_at_it(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    model = tmp_path / "models" / "yolov8n.onnx"
    model.parent.mkdir()
    model.write_bytes(b"onnx")
    stubs = deploy_stubs(tmp_path)
    model_publisher_says(stubs, "1.0.4")
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--model", str(model), "--merge",
                     '{"camera_id": "0"}', env=DEPLOY_ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (build, _) = stubs.calls("gdk")
    assert build["env"]["YOLO_EDGE_MODEL_COMPONENT"] == ">=1.0.0"
    recipe = yaml.safe_load((project / "greengrass-build" / "recipes" / "recipe.yaml").read_text())
    assert recipe["ComponentDependencies"][MODEL]["VersionRequirement"] == ">=1.0.0"
    model_dir = {m["Lifecycle"]["Setenv"]["YOLO_EDGE_MODEL_DIR"] for m in recipe["Manifests"]}
    assert model_dir == {"{kernel:rootPath}/packages/artifacts/com.yoloedge.model"}
    # The model is published after GDK's publish, which creates the bucket <prefix>-<region>-<account>.
    assert stubs.argv("publish_model_component") == [[
        str(model), "--bucket", "my-prefix-eu-west-1-123456789012", "--region", "eu-west-1", "--reuse-existing",
        "--json"]]
    deployment = created_deployment(stubs)
    ours = deployment["components"][COMPONENT]
    assert json.loads(ours["configurationUpdate"]["merge"]) == {"camera_id": "0", "model_loc": "1.0.4/yolov8n.onnx"}
    assert deployment["components"][MODEL] == {"componentVersion": "1.0.4"}
    # On the device: YOLO_EDGE_MODEL_DIR/<model_loc> is <root>/packages/artifacts/<model>/<version>/<file>,
    # where the nucleus puts the model component's artifact.
    assert "model_loc 1.0.4/yolov8n.onnx" in done.stderr


def test_deploy_with_a_model_needs_a_build_with_the_model_dependency(tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    built = project / "greengrass-build"
    (built / "recipes").mkdir(parents=True)
    (built / "recipes" / "recipe.yaml").write_text(yaml.safe_dump({"ComponentName": COMPONENT}))
    model = tmp_path / "yolov8n.onnx"
    model.write_bytes(b"onnx")
    stubs = deploy_stubs(tmp_path)
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", "--model", str(model), "--skip-build", env=DEPLOY_ENV)
    assert done.returncode == 2
    assert "built without the com.yoloedge.model dependency: run without --skip-build" in done.stderr
    assert stubs.calls("gdk") == [] and stubs.calls("publish_model_component") == []


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
    (["--model", "missing.onnx"], "--model 'missing.onnx': no such file"),
    (["--model", "MODEL.txt"], "not a .onnx, .pt, .engine or .trt file"),
    (["--model", "MODEL.onnx", "--component", "com.yoloedge.model=1.0.0"], "use one of them"),
    (["--model", "MODEL.onnx", "--merge", '{"model_loc": "x.onnx"}'], "--merge sets model_loc and --model"),
])
def test_deploy_rejects_bad_options_before_calling_anything(args: list[str], message: str,
                                                            tmp_path: Path) -> None:
    project = deploy_project(tmp_path)
    for suffix in (".txt", ".onnx"):
        (tmp_path / f"MODEL{suffix}").write_bytes(b"x")
    stubs = deploy_stubs(tmp_path)
    done = stubs.run(project / "utils" / "deploy-gdk-build.sh", *args, env=DEPLOY_ENV, cwd=tmp_path)
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
DEPLOYMENT_ID = "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
LOCAL_ENV = {"YOLO_EDGE_POLL_S": "0"}


def fake_build(root: Path, name: str, version: str, files: tuple[str, ...] = ("yolo_edge-0.1.0-py3-none-any.whl",),
               recipe_name: str = "recipe.yaml", model_dependency: bool = False) -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "artifacts" / name / version).mkdir(parents=True)
    for file in files:
        (root / "artifacts" / name / version / file).write_text("x")
    manifest: dict = {"Platform": {"os": "linux", "runtime": "*"}}
    if model_dependency:
        manifest["Lifecycle"] = {"Setenv": {"YOLO_EDGE_MODEL_DIR": "{kernel:rootPath}/packages/artifacts/" + MODEL}}
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
              "Manifests": [manifest]}
    (root / "recipes" / recipe_name).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


def local_stubs(tmp_path: Path, statuses: tuple[str, ...] = ("SUCCEEDED",)) -> tuple[Stubs, dict[str, str]]:
    """greengrass-cli that queues the deployment, then answers `deployment status` with `statuses` in turn
    (the last one for good)."""
    stubs = Stubs(tmp_path, ["sudo", "id"])
    cli = stubs.add("greengrass-cli")
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("greengrass-cli", prefix=["deployment", "create"],
             stdout=f"Local deployment submitted! Deployment Id: {DEPLOYMENT_ID}\n")
    status = ["deployment", "status", "-i", DEPLOYMENT_ID]
    for state in statuses[:-1]:
        stubs.on("greengrass-cli", args=status, times=1, stdout=f"{DEPLOYMENT_ID}: {state}\n")
    stubs.on("greengrass-cli", args=status, stdout=f"{DEPLOYMENT_ID}: {statuses[-1]}\n")
    return stubs, {"GREENGRASS_CLI": str(cli), **LOCAL_ENV}


def test_local_deploy_creates_a_deployment_and_waits_until_it_succeeded(tmp_path: Path) -> None:
    build = fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    stubs, env = local_stubs(tmp_path, statuses=("QUEUED", "IN_PROGRESS", "SUCCEEDED"))
    done = stubs.run(LOCAL, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cli = str(stubs.bin / "greengrass-cli")
    status = [cli, "deployment", "status", "-i", DEPLOYMENT_ID]
    assert stubs.argv("sudo") == [
        [cli, "deployment", "create", "--recipeDir", str(build / "recipes"), "--artifactDir",
         str(build / "artifacts"), "--merge", f"{COMPONENT}=0.1.0"], status, status, status]
    assert [line for line in done.stdout.splitlines() if DEPLOYMENT_ID in line][1:] == [
        f"local_deploy: deployment {DEPLOYMENT_ID}: {s}" for s in ("QUEUED", "IN_PROGRESS", "SUCCEEDED")]
    assert f"/greengrass/v2/logs/{COMPONENT}.log" in done.stdout


def test_local_deploy_merge_becomes_update_config(tmp_path: Path) -> None:
    fake_build(tmp_path / "out", COMPONENT, "0.2.0")
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--build-dir", str(tmp_path / "out"), "--merge", '{"model_loc": "/m/y.onnx"}', env=env)
    assert done.returncode == 0, done.stderr
    args = stubs.argv("greengrass-cli")[0]
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
    assert stubs.argv("greengrass-cli")[0][-2:] == ["--merge", f"{COMPONENT}=1.4.2"]


def test_local_deploy_of_real_builds_with_the_model_component(tmp_path: Path) -> None:
    """build_component.py --model-component + publish_model_component.py --local, as the docs walk through."""
    wheel = tmp_path / "yolo_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not used")
    build = subprocess.run([sys.executable, str(UTILS / "build_component.py"), "--wheel", str(wheel),
                            "--output-dir", str(tmp_path / "greengrass-build"), "--version", "1.4.2",
                            "--model-component", ">=1.0.0"], capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    publish_local_model(tmp_path)
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--model-dir", "model-build", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    args = stubs.argv("greengrass-cli")[0]
    assert args[args.index("--merge"):] == [
        "--merge", f"{COMPONENT}=1.4.2", "--merge", "com.yoloedge.model=1.0.0", "--update-config",
        json.dumps({COMPONENT: {"MERGE": {"model_loc": "1.0.0/yolov8n.onnx"}}})]


def publish_local_model(tmp_path: Path) -> Path:
    model = tmp_path / "yolov8n.onnx"
    model.write_bytes(b"onnx bytes")
    published = subprocess.run([sys.executable, str(UTILS / "publish_model_component.py"), str(model),
                                "--local", str(tmp_path / "model-build")], capture_output=True, text=True,
                               check=False)
    assert published.returncode == 0, published.stderr
    assert "utils/local_deploy.sh --model-dir" in published.stdout
    return tmp_path / "model-build"


def nucleus_reads_the_folders_late(stubs: Stubs, tmp_path: Path) -> Path:
    """Like the nucleus: `deployment create` only queues; the folders are copied at a later status poll."""
    queue, store = tmp_path / "queued-folders", tmp_path / "nucleus-store"
    store.mkdir()
    stubs.rules["greengrass-cli"][0]["run"] = (
        f'while [ $# -gt 0 ]; do case "$1" in --recipeDir|--artifactDir) echo "$2" >> "{queue}";; esac; shift; done')
    stubs.rules["greengrass-cli"][2]["run"] = (  # the second status answer: IN_PROGRESS
        f'while read -r d; do cp -R "$d" "{store}/" || exit 1; done < "{queue}"')
    return store


def test_local_deploy_with_a_model_component_keeps_the_staged_files_until_the_nucleus_is_done(
        tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0", model_dependency=True)
    publish_local_model(tmp_path)
    stubs, env = local_stubs(tmp_path, statuses=("QUEUED", "IN_PROGRESS", "SUCCEEDED"))
    store = nucleus_reads_the_folders_late(stubs, tmp_path)
    done = stubs.run(LOCAL, "--model-dir", "model-build", "--merge", '{"camera_id": "0"}', env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    call = stubs.calls("greengrass-cli")[0]
    args = call["args"]
    assert args[args.index("--merge"):] == [
        "--merge", f"{COMPONENT}=0.1.0", "--merge", "com.yoloedge.model=1.0.0", "--update-config",
        json.dumps({COMPONENT: {"MERGE": {"camera_id": "0", "model_loc": "1.0.0/yolov8n.onnx"}}})]
    recipe_dir, artifact_dir = args[args.index("--recipeDir") + 1], args[args.index("--artifactDir") + 1]
    assert call["dirs"][recipe_dir] == ["com.yoloedge.model-1.0.0.yaml", "recipe.yaml"]
    assert call["dirs"][artifact_dir] == [f"{COMPONENT}/0.1.0/yolo_edge-0.1.0-py3-none-any.whl",
                                          "com.yoloedge.model/1.0.0/yolov8n.onnx"]
    # The nucleus found the staged files when it got to them, and they are removed once it is done.
    assert (store / "artifacts" / "com.yoloedge.model" / "1.0.0" / "yolov8n.onnx").read_bytes() == b"onnx bytes"
    assert (store / "recipes" / "recipe.yaml").is_file()
    assert not Path(recipe_dir).exists()


def test_local_deploy_model_loc_needs_the_model_dependency(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    publish_local_model(tmp_path)
    stubs, env = local_stubs(tmp_path)
    done = stubs.run(LOCAL, "--model-dir", "model-build", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "no dependency on the model component, so model_loc '1.0.0/yolov8n.onnx' would not resolve" in done.stderr
    assert "--model-component" in done.stderr
    assert stubs.calls("greengrass-cli") == []
    # an explicit model_loc needs no dependency
    done = stubs.run(LOCAL, "--model-dir", "model-build", "--merge", '{"model_loc": "/m/y.onnx"}', env=env,
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_local_deploy_failed_deployment_removes_the_staging_and_says_where_to_look(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0", model_dependency=True)
    publish_local_model(tmp_path)
    stubs, env = local_stubs(tmp_path, statuses=("IN_PROGRESS", "FAILED"))
    done = stubs.run(LOCAL, "--model-dir", "model-build", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert f"deployment {DEPLOYMENT_ID} FAILED" in done.stderr
    assert "/greengrass/v2/logs/greengrass.log" in done.stderr
    args = stubs.argv("greengrass-cli")[0]
    assert not Path(args[args.index("--recipeDir") + 1]).exists()


@pytest.mark.parametrize("how", ["timeout", "no-wait"])
def test_local_deploy_keeps_the_staged_files_while_the_deployment_may_still_run(how: str, tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0", model_dependency=True)
    publish_local_model(tmp_path)
    stubs, env = local_stubs(tmp_path, statuses=("IN_PROGRESS",))
    flags = ["--timeout", "0"] if how == "timeout" else ["--no-wait"]
    done = stubs.run(LOCAL, "--model-dir", "model-build", *flags, env=env, cwd=tmp_path)
    args = stubs.argv("greengrass-cli")[0]
    stage = Path(args[args.index("--recipeDir") + 1]).parent
    try:
        assert (stage / "artifacts" / "com.yoloedge.model" / "1.0.0" / "yolov8n.onnx").is_file()
        assert f"kept {stage} for the nucleus" in done.stderr
        if how == "timeout":
            assert done.returncode == 1
            assert f"deployment {DEPLOYMENT_ID} still IN_PROGRESS after 0s" in done.stderr
        else:
            assert done.returncode == 0, done.stderr
            assert len(stubs.calls("greengrass-cli")) == 1  # no status polls
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("none", [], "greengrass-build/recipes not found"),
    ("next_patch", [], "NEXT_PATCH cannot be deployed locally"),
    ("ok", ["--merge", "[1]"], "is not a JSON object"),
    ("ok", ["--update-config", "{oops"], "neither a JSON file nor valid JSON"),
    ("ok", ["--merge", "{}", "--update-config", "{}"], "either --update-config or --merge"),
    ("ok", ["--timeout", "soon"], "--timeout 'soon' is not a number of seconds"),
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
    assert done.returncode == 2
    assert message in done.stderr
    assert stubs.calls("greengrass-cli") == []


def test_local_deploy_without_the_cli_says_how_to_get_it(tmp_path: Path) -> None:
    fake_build(tmp_path / "greengrass-build", COMPONENT, "0.1.0")
    stubs = Stubs(tmp_path, ["sudo", "id"])
    done = stubs.run(LOCAL, env={"GREENGRASS_CLI": str(tmp_path / "nope")}, cwd=tmp_path)
    assert done.returncode == 2
    assert "deploy aws.greengrass.Cli" in done.stderr


# -- the stubs themselves: they refuse what the real tools refuse -----------------------------------


def stub_module() -> Any:
    loader = importlib.machinery.SourceFileLoader("script_stub", str(STUB))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_an_undeclared_call_fails_loudly(tmp_path: Path) -> None:
    stubs = Stubs(tmp_path, ["tool"])
    stubs.on("tool", args=["known"], stdout="ok\n")
    script = tmp_path / "script.sh"
    script.write_text("set -e\ntool known\ntool unknown --flag\n")
    done = stubs.run(script)
    assert done.stdout == "ok\n"
    assert done.returncode == 2
    assert "stub tool: unexpected call tool 'unknown --flag'" in done.stderr
    assert [c["args"] for c in stubs.calls("tool")] == [["known"], ["unknown", "--flag"]]


@pytest.mark.parametrize(("args", "problem"), [
    (["greengrassv2", "list-component-versions", "--region", "eu-west-1", "--component-arn", COMPONENT_ARN],
     "unknown option --component-arn"),
    (["greengrassv2", "list-component-version", "--arn", COMPONENT_ARN], "has no operation 'list-component-version'"),
    (["greengrassv2", "list-component-versions", "--region", "eu-west-1"],
     'Missing required parameter in input: "arn"'),
    (["greengrassv2", "list-component-versions", "--arn", "arn:aws:iot:eu-west-1:1:thing/x"], "does not match"),
    (["greengrassv2", "list-deployments", "--target-arn", GROUP_ARN, "--history-filter", "LATEST"],
     "'LATEST' is not one of ['ALL', 'LATEST_ONLY']"),
    (["greengrassv2", "list-deployments", "--output", "jsn"], "--output 'jsn'"),
    (["greengrassv2", "list-deployments", "--region", "Ireland"], "is not a region name"),
    (["greengrassv2", "list-deployments", "--max-results", "500"], "is more than 100"),
    (["greengrassv2", "get-deployment", "--deployment-id"], "--deployment-id needs a value"),
])
def test_the_aws_stub_checks_flags_against_botocores_model(args: list[str], problem: str) -> None:
    problems = stub_module().check_aws(args)
    assert any(problem in p for p in problems), problems


def test_the_aws_stub_validates_cli_input_json_and_the_configuration_merge(tmp_path: Path) -> None:
    stub = stub_module()
    good = {"targetArn": GROUP_ARN, "components": {COMPONENT: {
        "componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"camera_id": "0"}'}}}}
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(good))
    create = ["greengrassv2", "create-deployment", "--region", "eu-west-1", "--cli-input-json", f"file://{path}"]
    assert stub.check_aws(create) == []
    for merge, problem in ((json.dumps({"camera_id": "0"}), None),
                           ({"camera_id": "0"}, "Invalid type for parameter components.com.yoloedge.inference"),
                           ('["camera_id"]', "is not a JSON object string"),
                           ("{camera_id: 0}", "is not a JSON object string")):
        bad = json.loads(json.dumps(good))
        bad["components"][COMPONENT]["configurationUpdate"]["merge"] = merge
        path.write_text(json.dumps(bad))
        problems = stub.check_aws(create)
        assert (problems == []) if problem is None else any(problem in p for p in problems), (merge, problems)
    path.write_text(json.dumps({**good, "deploymentPolicies": {"failureHandlingPolicy": "UNDO"}}))
    assert any("'UNDO' is not one of" in p for p in stub.check_aws(create))
    path.write_text(json.dumps({**good, "targetArns": [GROUP_ARN]}))
    assert any('Unknown parameter in input: "targetArns"' in p for p in stub.check_aws(create))


def test_the_gdk_stub_takes_gdks_commands_in_a_gdk_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = stub_module()
    monkeypatch.chdir(tmp_path)
    assert any("no gdk-config.json" in p for p in stub.check_gdk(["component", "build"]))
    (tmp_path / "gdk-config.json").write_text("{}")
    (tmp_path / "recipe.yaml").write_text("{}")
    assert stub.check_gdk(["component", "build"]) == []
    assert stub.check_gdk(["component", "publish", "-r", "eu-west-1", "-b", "bucket"]) == []
    assert any("unknown argument '--version'" in p for p in stub.check_gdk(["component", "publish", "--version", "1"]))
    assert any("-b needs a value" in p for p in stub.check_gdk(["component", "publish", "-b"]))
    assert stub.check_gdk(["component", "deploy"])
    (tmp_path / "recipe.json").write_text("{}")
    assert any("exactly one recipe" in p for p in stub.check_gdk(["component", "build"]))


def test_the_greengrass_cli_stub_takes_the_real_options(tmp_path: Path) -> None:
    stub = stub_module()
    build = fake_build(tmp_path / "b", COMPONENT, "1.0.0")
    create = ["deployment", "create", "--recipeDir", str(build / "recipes"), "--artifactDir", str(build / "artifacts")]
    assert stub.check_greengrass_cli([*create, "--merge", f"{COMPONENT}=1.0.0"]) == []
    assert stub.check_greengrass_cli([*create, "--merge", f"{COMPONENT}=1.0.0", "--update-config",
                                      json.dumps({COMPONENT: {"MERGE": {"a": "1"}, "RESET": ["/b"]}})]) == []
    for extra, problem in (
            (["--merge", COMPONENT], "is not NAME=x.y.z"),
            (["--merge", f"{COMPONENT}=1.0.0", "--update-config", '{"x": {"merge": {}}}'], "only MERGE and RESET"),
            (["--merge", f"{COMPONENT}=1.0.0", "--status"], "unknown argument '--status'"),
            ([], "neither --merge nor --remove"),
    ):
        assert any(problem in p for p in stub.check_greengrass_cli([*create, *extra])), extra
    assert any("no such folder" in p for p in stub.check_greengrass_cli(
        ["deployment", "create", "--recipeDir", str(tmp_path / "none"), "--merge", f"{COMPONENT}=1.0.0"]))
    assert stub.check_greengrass_cli(["deployment", "status", "-i", DEPLOYMENT_ID]) == []
    assert any("needs -i or --deploymentId" in p for p in stub.check_greengrass_cli(["deployment", "status"]))
    assert any("unknown command" in p for p in stub.check_greengrass_cli(["deployments", "list"]))
