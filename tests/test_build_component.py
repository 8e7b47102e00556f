"""utils/build_component.py: the wheel and the built recipe in GDK's layout; and the built recipe's
install step run for real (venv, wheel, stamp, the JetPack-aware plan), the way the nucleus runs it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolo_edge.install_plan import TEGRA_RELEASE_ENV

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "utils" / "build_component.py"
COMPONENT = "com.yoloedge.inference"


def run_build(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


def gdk_settings() -> tuple[str, dict[str, Any]]:
    config = json.loads((REPO / "gdk-config.json").read_text())
    ((name, settings),) = config["component"].items()
    return name, settings


def package_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "pyproject.toml has no static version"
    return match.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gg") / "greengrass-build"
    leftovers = {p for p in (REPO / "build", REPO / "components" / "yolo_edge.egg-info") if p.exists()}
    done = run_build("--no-build-isolation", "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert {p for p in (REPO / "build", REPO / "components" / "yolo_edge.egg-info") if p.exists()} == leftovers, \
        "the build must not write into the source tree"
    return out


def built_recipe(out: Path) -> dict[str, Any]:
    return yaml.safe_load((out / "recipes" / "recipe.yaml").read_text())


def test_layout_is_gdks(built: Path) -> None:
    name, settings = gdk_settings()
    wheel_name = f"yolo_edge-{package_version()}-py3-none-any.whl"
    files = sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file())
    assert files == [f"artifacts/{name}/{settings['version']}/{wheel_name}", "recipes/recipe.yaml"]


def test_built_recipe_is_the_source_recipe_with_name_version_and_wheel(built: Path) -> None:
    name, settings = gdk_settings()
    source = yaml.safe_load((REPO / "recipe.yaml").read_text())
    recipe = built_recipe(built)
    wheel_name = f"yolo_edge-{package_version()}-py3-none-any.whl"
    assert recipe["ComponentName"] == name
    assert recipe["ComponentVersion"] == settings["version"]
    assert recipe["ComponentPublisher"] == settings["author"]
    for manifest in recipe["Manifests"]:
        assert [a["URI"] for a in manifest["Artifacts"]] == [
            f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{wheel_name}"]
    for manifest in source["Manifests"]:
        for artifact in manifest["Artifacts"]:
            artifact["URI"] = f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{wheel_name}"
    source.update(ComponentName=name, ComponentVersion=settings["version"], ComponentPublisher=settings["author"])
    assert recipe == source
    text = (built / "recipes" / "recipe.yaml").read_text()
    assert "RecipeFormatVersion: '2020-01-25'" in text
    assert not re.search(r"[&*]id\d+", text), "no YAML anchors/aliases in the built recipe"
    assert len(text.encode()) < 16000


def test_wheel_holds_the_package_and_the_entry_point(built: Path) -> None:
    (wheel,) = built.glob("artifacts/*/*/*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"yolo_edge/__init__.py", "yolo_edge/config.py", "yolo_edge/transport/greengrass.py",
                "yolo_edge/cli.py"} <= names
        assert not any(n.startswith("tests/") or "__pycache__" in n for n in names)
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        assert "yolo-edge = yolo_edge.cli:main" in archive.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith("METADATA")]
        extras = re.findall(r"^Provides-Extra: (\S+)$", archive.read(metadata).decode(), re.MULTILINE)
        assert {"onnx", "greengrass"} <= set(extras)


@pytest.fixture
def project(tmp_path: Path, built: Path) -> tuple[Path, Path]:
    """A copy of the project files the build reads, and the wheel already built (for speed)."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("gdk-config.json", "recipe.yaml", "pyproject.toml"):
        shutil.copy2(REPO / name, copy / name)
    (wheel,) = built.glob("artifacts/*/*/*.whl")
    return copy, wheel


def set_gdk_version(project: Path, version: str) -> None:
    path = project / "gdk-config.json"
    config = json.loads(path.read_text())
    config["component"][COMPONENT]["version"] = version
    path.write_text(json.dumps(config))


def test_next_patch_is_kept_as_gdk_does(project: tuple[Path, Path]) -> None:
    root, wheel = project
    set_gdk_version(root, "NEXT_PATCH")
    done = run_build("--project-dir", str(root), "--wheel", str(wheel))
    assert done.returncode == 0, done.stderr
    assert (root / "greengrass-build" / "artifacts" / COMPONENT / "NEXT_PATCH" / wheel.name).is_file()
    assert built_recipe(root / "greengrass-build")["ComponentVersion"] == "NEXT_PATCH"
    assert "resolved only by `gdk component publish`" in done.stdout


def test_version_override_and_stale_output_is_replaced(project: tuple[Path, Path]) -> None:
    root, wheel = project
    stale = root / "greengrass-build" / "artifacts" / COMPONENT / "0.0.1" / "old.whl"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    done = run_build("--project-dir", str(root), "--wheel", str(wheel), "--version", "2.3.4")
    assert done.returncode == 0, done.stderr
    assert not stale.exists()
    target = root / "greengrass-build" / "artifacts" / COMPONENT / "2.3.4" / wheel.name
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert built_recipe(root / "greengrass-build")["ComponentVersion"] == "2.3.4"


def test_model_component_dependency_is_opt_in(project: tuple[Path, Path]) -> None:
    root, wheel = project
    done = run_build("--project-dir", str(root), "--wheel", str(wheel),
                     env={"YOLO_EDGE_MODEL_COMPONENT": ">=1.0.0 <2.0.0"})
    assert done.returncode == 0, done.stderr
    recipe = built_recipe(root / "greengrass-build")
    assert recipe["ComponentDependencies"] == {
        "com.yoloedge.model": {"VersionRequirement": ">=1.0.0 <2.0.0", "DependencyType": "HARD"}}
    source = yaml.safe_load((REPO / "recipe.yaml").read_text())
    for manifest, source_manifest in zip(recipe["Manifests"], source["Manifests"]):
        # Nucleus lite interpolates {kernel:rootPath} but not {<dependency>:artifacts:path}; recipe keys
        # are case-sensitive there, so the recipe's own Setenv key is extended, never a second one added.
        (setenv_key,) = [k for k in manifest["Lifecycle"] if k.lower() == "setenv"]
        assert [k for k in source_manifest["Lifecycle"] if k.lower() == "setenv"] in ([], [setenv_key])
        setenv = manifest["Lifecycle"][setenv_key]
        assert setenv["YOLO_EDGE_MODEL_DIR"] == "{kernel:rootPath}/packages/artifacts/com.yoloedge.model"
        assert {k: v for k, v in setenv.items() if k != "YOLO_EDGE_MODEL_DIR"} == \
            source_manifest["Lifecycle"].get(setenv_key, {})
    done = run_build("--project-dir", str(root), "--wheel", str(wheel), env={"YOLO_EDGE_MODEL_COMPONENT": ""})
    assert "ComponentDependencies" not in built_recipe(root / "greengrass-build")


STREAM_MANAGER = {"aws.greengrass.StreamManager": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"}}


def set_default_configuration(project: Path, **values: Any) -> None:
    path = project / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text())
    recipe["ComponentConfiguration"]["DefaultConfiguration"].update(values)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def test_stream_manager_dependency_is_absent_by_default(project: tuple[Path, Path]) -> None:
    root, wheel = project
    set_default_configuration(root, snapshots={"events": ["new"], "s3_bucket": ""})
    done = run_build("--project-dir", str(root), "--wheel", str(wheel))
    assert done.returncode == 0, done.stderr
    recipe = built_recipe(root / "greengrass-build")
    assert "ComponentDependencies" not in recipe
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["install_extras"] == "onnx,greengrass"
    assert "StreamManager" not in done.stdout


def test_stream_manager_dependency_with_the_flag(project: tuple[Path, Path]) -> None:
    root, wheel = project
    done = run_build("--project-dir", str(root), "--wheel", str(wheel), "--stream-manager",
                     env={"YOLO_EDGE_MODEL_COMPONENT": ">=1.0.0"})
    assert done.returncode == 0, done.stderr
    recipe = built_recipe(root / "greengrass-build")
    assert recipe["ComponentDependencies"] == {
        "com.yoloedge.model": {"VersionRequirement": ">=1.0.0", "DependencyType": "HARD"}, **STREAM_MANAGER}
    # The stream-manager SDK comes with the s3 extra, installed by the install step by default.
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["install_extras"] == "onnx,greengrass,s3"
    assert "depends on aws.greengrass.StreamManager >=2.0.0 <3.0.0 (snapshots to S3)" in done.stdout


@pytest.mark.parametrize("snapshots", [
    {"events": ["new", "end"], "s3_bucket": "my-snapshots"},
    '{"events": "new", "s3_bucket": "my-snapshots"}',  # as text, the way nucleus lite needs objects
])
def test_stream_manager_dependency_when_the_default_configuration_names_a_bucket(
        snapshots: Any, project: tuple[Path, Path]) -> None:
    root, wheel = project
    set_default_configuration(root, snapshots=snapshots, install_extras="onnx,s3,greengrass")
    done = run_build("--project-dir", str(root), "--wheel", str(wheel))
    assert done.returncode == 0, done.stderr
    recipe = built_recipe(root / "greengrass-build")
    assert recipe["ComponentDependencies"] == STREAM_MANAGER
    assert recipe["ComponentConfiguration"]["DefaultConfiguration"]["install_extras"] == "onnx,s3,greengrass"


def test_a_snapshots_default_that_is_not_json_is_a_clear_error(project: tuple[Path, Path]) -> None:
    root, wheel = project
    set_default_configuration(root, snapshots="{s3_bucket: b}")
    done = run_build("--project-dir", str(root), "--wheel", str(wheel))
    assert done.returncode == 1
    assert "DefaultConfiguration snapshots: not a JSON object" in done.stderr


def test_the_s3_extra_installs_the_stream_manager_sdk(built: Path, tmp_path: Path) -> None:
    """install_extras: ...,s3 -> the install plan asks pip for the stream-manager SDK (the recipe's own
    check of install_extras lets 's3' through: letters, digits, ',', '_' and '-')."""
    (wheel,) = built.glob("artifacts/*/*/*.whl")
    requirements = tmp_path / "requirements.txt"
    done = subprocess.run([sys.executable, "-m", "yolo_edge.install_plan", "--wheel", str(wheel), "--extras",
                           "onnx,greengrass,s3", "--tegra-release", str(tmp_path / "none"),
                           "--requirements-out", str(requirements)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "stream-manager>=1.1" in requirements.read_text().splitlines()
    assert "extras:" in done.stdout and "onnx, greengrass, s3" in done.stdout
    script = built_recipe(built)["Manifests"][0]["Lifecycle"]["install"]["Script"]
    assert "*[!A-Za-z0-9,_-]*)" in script


@pytest.mark.parametrize(("change", "message"), [
    ("version", "component version '1.0' is not semver"),
    ("date", "RecipeFormatVersion must be the string '2020-01-25' (quote it"),
    ("two_recipes", "expected exactly one recipe.yaml or recipe.json"),
    ("no_wheel_artifact", "no manifest has an s3://"),
    ("two_components", "'component' must hold exactly one component"),
])
def test_bad_inputs_are_clear_errors(change: str, message: str, project: tuple[Path, Path]) -> None:
    root, wheel = project
    recipe = root / "recipe.yaml"
    if change == "version":
        set_gdk_version(root, "1.0")
    elif change == "date":
        recipe.write_text(recipe.read_text().replace('RecipeFormatVersion: "2020-01-25"',
                                                     "RecipeFormatVersion: 2020-01-25"))
    elif change == "two_recipes":
        (root / "recipe.json").write_text("{}")
    elif change == "no_wheel_artifact":
        recipe.write_text(recipe.read_text().replace("-py3-none-any.whl", ".zip"))
    elif change == "two_components":
        config = json.loads((root / "gdk-config.json").read_text())
        config["component"]["other"] = {}
        (root / "gdk-config.json").write_text(json.dumps(config))
    done = run_build("--project-dir", str(root), "--wheel", str(wheel))
    assert done.returncode == 1
    assert message in done.stderr
    assert not (root / "greengrass-build").exists()


def test_runs_as_gdks_custom_build_command(tmp_path: Path) -> None:
    """GDK runs custom_build_command as a list, without a shell, from the project folder."""
    project = tmp_path / "project"
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(
        ".git", "greengrass-build", "tests", "benchmarks", "docs", "__pycache__", "*.egg-info", "build", ".*"))
    (name, settings), command = gdk_settings(), json.loads(
        (REPO / "gdk-config.json").read_text())["component"][COMPONENT]["build"]["custom_build_command"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PIP_NO_BUILD_ISOLATION": "0"}  # "0" switches isolation off (offline build)
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (project / "greengrass-build" / "recipes" / "recipe.yaml").is_file()
    assert len(list((project / "greengrass-build" / "artifacts" / name / settings["version"]).glob("*.whl"))) == 1


# -- the install step, run for real ------------------------------------------------------------------
#
# Hermetic: no package index (PIP_NO_INDEX) and no pip configuration of this machine (PIP_CONFIG_FILE=
# /dev/null), so pip must find every requirement already installed: the venv is made with
# --system-site-packages from the test's own interpreter, which has the runtime dependencies. Inside a
# virtualenv a venv made from it sees only the base interpreter's packages, so the test environment's
# site-packages are also put on PYTHONPATH. The JetPack runs use a bare Python 3.8/3.10: pip cannot get
# numpy there, and what it was asked for (the JetPack's numpy pin) is what those tests check.

ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine().lower())
JETPACKS = {  # JetPack: (its Python, numpy must stay below, a line of its /etc/nv_tegra_release)
    5: ("3.8", "1.24", "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                       "DATE: Tue Aug  1 19:57:35 UTC 2023\n"),
    6: ("3.10", "2", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                     "DATE: Wed Jan  8 01:49:37 UTC 2025\n"),
}
needs_sha256sum = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum (coreutils) is missing")


def interpolate(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():
        text = text.replace("{" + key + "}", value)
    left = re.findall(r"\{[a-zA-Z.]+:[^}\s]*\}", text)
    assert not left, f"recipe variables the test does not provide: {left}"
    return text


def site_packages_env() -> dict[str, str]:
    """What makes the test environment's packages the install step's system packages (see above)."""
    if sys.prefix == sys.base_prefix:
        return {}
    return {"PYTHONPATH": os.pathsep.join(site.getsitepackages())}


def python_dir(version: str, tmp_path: Path) -> Path | None:
    """A folder whose `python3` is a Python `version` (pyenv's, or pythonX.Y on PATH); None if there is none."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [p / "bin" / "python3" for p in sorted(pyenv.glob(f"{version}.*"), reverse=True)]
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" not in on_path:
        found.append(Path(on_path))
    for interpreter in found:
        if interpreter.is_file():
            folder = tmp_path / f"python{version}-bin"
            folder.mkdir()
            (folder / "python3").symlink_to(interpreter.resolve())
            return folder
    return None


def copy_build(built: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "greengrass-build"
    shutil.copytree(built, out)
    work = tmp_path / "work"
    work.mkdir()
    return out, work


def run_install(out: Path, work: Path, extras: str | None = None, *, architecture: str | None = None,
                python_bin: Path | None = None, tegra_release: Path | None = None,
                ) -> tuple[subprocess.CompletedProcess, float]:
    """Run the built recipe's install step as the nucleus does: `sh -c`, cwd {work:path}, Setenv applied.
    `python_bin` holds the `python3` to use (default: the test's); no `tegra_release` = not a Jetson."""
    recipe = built_recipe(out)
    (manifest,) = [m for m in recipe["Manifests"] if m["Platform"]["architecture"] == (architecture or ARCH)]
    lifecycle = manifest["Lifecycle"]
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    variables = {"work:path": str(work),
                 "artifacts:path": str(next(out.glob(f"artifacts/{COMPONENT}/*"))),
                 "configuration:/install_extras": defaults["install_extras"] if extras is None else extras}
    env = {"PATH": os.pathsep.join([str(python_bin or Path(sys.executable).parent), "/usr/bin", "/bin"]),
           "HOME": str(work), "LANG": "C.UTF-8", "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull,
           TEGRA_RELEASE_ENV: str(tegra_release or work.parent / "not-a-jetson" / "nv_tegra_release"),
           **(site_packages_env() if python_bin is None else {})}
    for step_env in (lifecycle.get("Setenv", {}), lifecycle["install"].get("Setenv", {})):
        env.update({k: interpolate(str(v), variables) for k, v in step_env.items()})
    script = interpolate(lifecycle["install"]["Script"], variables)
    start = time.monotonic()
    done = subprocess.run(["sh", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=lifecycle["install"]["Timeout"], check=False)
    return done, time.monotonic() - start


def venv_python(work: Path, code: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), **site_packages_env()}
    return subprocess.run([str(work / "venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          env=env, check=False)


def requirement_names(path: Path) -> set[str]:
    return {re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0].lower() for line in path.read_text().splitlines()}


@pytest.mark.slow
@pytest.mark.skipif(ARCH is None, reason=f"no manifest for {platform.machine()}")
@needs_sha256sum
def test_install_step_creates_the_venv_once_and_reinstalls_on_a_new_wheel(built: Path, tmp_path: Path) -> None:
    out, work = copy_build(built, tmp_path)
    venv = work / "venv"
    plan = work / "install-plan"

    first, first_s = run_install(out, work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed yolo_edge-" in first.stdout
    assert "not a Jetson" in first.stdout and "numpy:       no extra pin" in first.stdout
    assert requirement_names(plan / "requirements.txt") == {
        "numpy", "opencv-python", "pyyaml", "paho-mqtt", "onnxruntime", "awsiotsdk"}
    assert (plan / "remove.txt").read_text() == ""  # not a Jetson: pip's OpenCV stays
    where = venv_python(work, "import yolo_edge, onnxruntime, awsiot; print(yolo_edge.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv)), "the component's package must come from its own venv"
    assert (venv / "bin" / "yolo-edge").is_file()
    help_text = subprocess.run([str(venv / "bin" / "yolo-edge"), "run", "--help"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(work), **site_packages_env()},
                               check=False)
    assert help_text.returncode == 0 and "--greengrass" in help_text.stdout, help_text.stderr
    stamp = (venv / ".yolo-edge-installed").read_text()
    planned = (plan / "requirements.txt").stat().st_mtime_ns

    second, second_s = run_install(out, work)
    assert second.returncode == 0, second.stderr
    assert "yolo-edge already installed in" in second.stdout
    assert "install plan" not in second.stdout, "an unchanged restart must not plan or call pip again"
    assert (venv / ".yolo-edge-installed").read_text() == stamp
    assert (plan / "requirements.txt").stat().st_mtime_ns == planned

    # A new component version whose wheel differs (same file name) is installed again.
    (wheel,) = out.glob("artifacts/*/*/*.whl")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("yolo_edge/_build_marker.py", "MARKER = 1\n")
    third, _ = run_install(out, work)
    assert third.returncode == 0, third.stderr
    assert "installed yolo_edge-" in third.stdout and "yolo-edge already installed in" not in third.stdout
    assert (venv / ".yolo-edge-installed").read_text() != stamp
    marker = venv_python(work, "import yolo_edge._build_marker as m; print(m.MARKER)")
    assert marker.stdout.strip() == "1", marker.stderr
    print(f"\nInstall step: first {first_s:.1f} s, unchanged restart {second_s:.2f} s")

    bad, _ = run_install(out, work, extras="onnx;rm -rf /")
    assert bad.returncode == 1
    assert "install_extras: invalid value 'onnx;rm -rf /'" in bad.stderr
    unknown, _ = run_install(out, work, extras="onnx,onxx")
    assert unknown.returncode == 2
    assert "install_extras: unknown extra 'onxx'" in unknown.stderr


@pytest.mark.slow
@needs_sha256sum
@pytest.mark.parametrize("jetpack", sorted(JETPACKS))
def test_install_step_on_a_jetpack_asks_pip_for_its_numpy_pin(jetpack: int, built: Path, tmp_path: Path) -> None:
    python, numpy_below, release_line = JETPACKS[jetpack]
    python_bin = python_dir(python, tmp_path)
    if python_bin is None:
        pytest.skip(f"no Python {python} (JetPack {jetpack}'s) here; .ci/run installs 3.8 with pyenv")
    release = tmp_path / "nv_tegra_release"
    release.write_text(release_line)
    out, work = copy_build(built, tmp_path)

    done, _ = run_install(out, work, architecture="aarch64", python_bin=python_bin, tegra_release=release)
    assert f"JetPack {jetpack}" in done.stdout and f"numpy<{numpy_below}:" in done.stdout, done.stdout + done.stderr
    (numpy,) = [line for line in (work / "install-plan" / "requirements.txt").read_text().splitlines()
                if re.match(r"numpy\b", line)]
    assert f"<{numpy_below}" in numpy[len("numpy"):].split(",")
    # The bare interpreter has no system cv2: pip's OpenCV is asked for, with the warning about CSI cameras.
    assert "opencv-python" in requirement_names(work / "install-plan" / "requirements.txt")
    assert "CSI cameras (csi://) need JetPack's GStreamer-enabled OpenCV" in done.stdout
    # The venv is the JetPack's Python and holds the wheel; then pip, with no index, was asked for the pin.
    version = venv_python(work, "import sys, yolo_edge; print('%d.%d' % sys.version_info[:2])")
    assert version.stdout.strip() == python, version.stderr
    assert done.returncode != 0
    assert re.search(rf"requirement numpy\S*<{re.escape(numpy_below)}\b", done.stderr), done.stderr[-2000:]
    assert not (work / "venv" / ".yolo-edge-installed").exists()


@needs_sha256sum
def test_install_step_refuses_a_python_the_jetpack_cannot_use(built: Path, tmp_path: Path) -> None:
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    jetpack = next(j for j, (python, _, _) in sorted(JETPACKS.items()) if python != running)
    release = tmp_path / "nv_tegra_release"
    release.write_text(JETPACKS[jetpack][2])
    out, work = copy_build(built, tmp_path)
    done, _ = run_install(out, work, architecture="aarch64", tegra_release=release)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"JetPack {jetpack} needs its system Python {JETPACKS[jetpack][0]}" in done.stderr
    assert f"is Python {platform.python_version()}" in done.stderr
    assert not (work / "venv").exists(), "nothing may be installed for a Python the JetPack cannot use"
