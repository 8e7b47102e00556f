"""yolo_edge.install_plan: JetPack detection, the Python check, the numpy pin, the system OpenCV kept,
the cuda-python bound, and the pip requirement lines it derives from a wheel's metadata.

The device facts a Jetson would give (its L4T release file, its system cv2) are files and a probe
result here; the probe itself runs for real against this interpreter's cv2."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yolo_edge import install_plan
from yolo_edge.install_plan import (
    OPENCV_WHEELS,
    Device,
    PlanError,
    WheelMetadata,
    check_python,
    detect_device,
    make_plan,
    marker_environment,
    marker_holds,
    merge,
    parse_requirement,
)

JP5_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1\n"
JP6_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
# Requires-Dist lines in the form setuptools writes them for this project's pyproject.toml.
REQUIRES = (
    'numpy<1.24,>=1.23; python_version < "3.9"',
    'numpy>=1.23; python_version >= "3.9"',
    "opencv-python>=4.5.4",
    "PyYAML>=6.0",
    "paho-mqtt>=2.0",
    'onnxruntime>=1.16; extra == "onnx"',
    'awsiotsdk>=1.15; extra == "greengrass"',
    'ultralytics>=8.1; extra == "torch"',
    'ultralytics>=8.1; extra == "export"',
    'onnx>=1.14; extra == "export"',
    'cuda-python>=11.4; extra == "tensorrt"',
    'yolo-edge[export,onnx]; extra == "dev"',
    'pytest>=7.4; extra == "dev"',
)
METADATA = WheelMetadata("yolo-edge", REQUIRES, ("onnx", "greengrass", "torch", "export", "tensorrt", "dev"))
SYSTEM_CV2 = {"version": "4.5.4", "path": "/usr/lib/python3.8/dist-packages/cv2/__init__.py", "gstreamer": True}


def release_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nv_tegra_release"
    path.write_text(text)
    return path


def jetson(tmp_path: Path, text: str = JP5_RELEASE) -> Device:
    return detect_device(release_file(tmp_path, text))


def plan_for(device: Device, extras: list[str], probe: dict[str, object] | None = None,
             python: tuple[int, int, int] | None = None):
    if python is None:
        python = device.jetpack.python + (10,) if device.jetpack else tuple(sys.version_info[:3])

    def no_probe_off_a_jetson() -> dict[str, object]:
        assert device.jetpack is not None, "the system is probed only on a Jetson"
        return probe or {}

    return make_plan(device, extras, METADATA, python, "/usr/bin/python3", no_probe_off_a_jetson)


# -- the platform -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "l4t", "jetpack"), [
    (JP5_RELEASE, "35.4.1", 5),
    ("# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64\n", "35.3.1", 5),
    ("# R34 (release), REVISION: 1.1, GCID: 30414990, BOARD: t186ref\n", "34.1.1", 5),
    (JP6_RELEASE, "36.4.3", 6),
])
def test_jetpack_comes_from_the_l4t_release(line: str, l4t: str, jetpack: int, tmp_path: Path) -> None:
    device = jetson(tmp_path, line)
    assert (device.l4t, device.jetpack and device.jetpack.major) == (l4t, jetpack)
    assert f"L4T R{l4t} = JetPack {jetpack}" in device.describe()


def test_no_release_file_is_plain_linux(tmp_path: Path) -> None:
    device = detect_device(tmp_path / "missing")
    assert device.jetpack is None and "not a Jetson" in device.describe()


@pytest.mark.parametrize(("line", "message"), [
    ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref\n",
     "L4T R32.7.4 (JetPack 4, Ubuntu 18.04, Python 3.6) is not supported; yolo-edge runs on JetPack 5 = L4T "
     "R34/R35, Python 3.8; JetPack 6 = L4T R36, Python 3.10"),
    ("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic\n", "L4T R38.2.0 is not supported"),
    ("Jetson release 35\n", "not an L4T release line (expected '# R35 (release), REVISION: 4.1, ...'), found "
                            "'Jetson release 35'"),
    ("", "not an L4T release line"),
])
def test_unknown_or_old_releases_are_refused(line: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="nv_tegra_release: ") as error:
        jetson(tmp_path, line)
    assert message in str(error.value)


def test_release_file_path_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_EDGE_TEGRA_RELEASE", "/tmp/x")
    assert install_plan.tegra_release_path() == Path("/tmp/x")
    assert install_plan.tegra_release_path("/given") == Path("/given")
    monkeypatch.delenv("YOLO_EDGE_TEGRA_RELEASE")
    assert install_plan.tegra_release_path() == Path("/etc/nv_tegra_release")


# -- the interpreter ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "version"), [(JP5_RELEASE, (3, 8, 10)), (JP6_RELEASE, (3, 10, 12))])
def test_each_jetpack_takes_its_system_python(release: str, version: tuple[int, int, int], tmp_path: Path) -> None:
    assert "the system Python of JetPack" in check_python(jetson(tmp_path, release), version, "/usr/bin/python3")


@pytest.mark.parametrize(("release", "version", "message"), [
    (JP5_RELEASE, (3, 10, 12), "JetPack 5 needs its system Python 3.8 (TensorRT's Python bindings and NVIDIA's "
                               "torch wheels are built only for it); /usr/bin/python3 is Python 3.10.12. Make "
                               "python3 the system /usr/bin/python3.8"),
    (JP6_RELEASE, (3, 8, 10), "JetPack 6 needs its system Python 3.10"),
    (None, (3, 7, 17), "/usr/bin/python3 is Python 3.7.17; yolo-edge supports Python 3.8 to 3.13"),
    (None, (3, 14, 0), "/usr/bin/python3 is Python 3.14.0; yolo-edge supports Python 3.8 to 3.13"),
])
def test_a_wrong_python_is_refused(release: str | None, version: tuple[int, int, int], message: str,
                                   tmp_path: Path) -> None:
    device = jetson(tmp_path, release) if release else detect_device(tmp_path / "missing")
    with pytest.raises(PlanError) as error:
        check_python(device, version, "/usr/bin/python3")
    assert str(error.value) == message or message in str(error.value)


@pytest.mark.parametrize("version", [(3, 8, 0), (3, 13, 1)])
def test_plain_linux_takes_38_to_313(version: tuple[int, int, int], tmp_path: Path) -> None:
    assert check_python(detect_device(tmp_path / "missing"), version, "py") == f"{'.'.join(map(str, version))} (py)"


# -- requirements and markers -------------------------------------------------------------------------


@pytest.mark.parametrize(("marker", "variables", "holds"), [
    ('python_version < "3.9"', {"python_version": "3.8"}, True),
    ('python_version < "3.9"', {"python_version": "3.10"}, False),  # as versions, not strings
    ('python_version >= "3.9" and extra == "onnx"', {"python_version": "3.10", "extra": "onnx"}, True),
    ('python_version >= "3.9" and extra == "onnx"', {"python_version": "3.10", "extra": ""}, False),
    ("extra == 'Green_Grass'", {"extra": "green-grass"}, True),  # extra names compare normalised
    ('(sys_platform == "win32" or sys_platform == "linux") and platform_machine == "aarch64"',
     {"sys_platform": "linux", "platform_machine": "aarch64"}, True),
    ('sys_platform == "win32" or sys_platform == "linux" and platform_machine == "aarch64"',
     {"sys_platform": "linux", "platform_machine": "x86_64"}, False),  # `and` binds tighter
    ("'linux' in sys_platform", {"sys_platform": "linux"}, True),
    ('"arm" not in platform_machine', {"platform_machine": "aarch64"}, True),
    ('python_full_version ~= "3.8.0"', {"python_full_version": "3.8.18"}, True),
    ('python_full_version ~= "3.8.0"', {"python_full_version": "3.9.0"}, False),
    ('platform_release != "5.10.120-tegra"', {"platform_release": "5.10.120-tegra"}, False),
    ("", {}, True),
])
def test_markers(marker: str, variables: dict[str, str], holds: bool) -> None:
    assert marker_holds(marker, {**marker_environment(), **variables}) is holds


@pytest.mark.parametrize(("marker", "message"), [
    ('python_version < "3.9" and', "ends too early"),
    ('(python_version < "3.9"', "ends too early"),
    ('python_version <> "3.9"', "unknown variable '>'"),
    ('python_version "3.9" "3.9"', "unknown comparison"),
    ('pythonversion < "3.9"', "unknown variable 'pythonversion'"),
    ('python_version < "3.9" extra', "cannot read the environment marker"),
    ('python_version < "3.9" # x', "cannot read the environment marker"),
])
def test_unreadable_markers_are_errors(marker: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        marker_holds(marker, marker_environment())


def test_marker_environment_is_this_interpreter() -> None:
    env = marker_environment("onnx")
    assert env["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert env["platform_machine"] == platform.machine() and env["extra"] == "onnx"


@pytest.mark.parametrize(("text", "line", "marker"), [
    ('numpy<1.24,>=1.23; python_version < "3.9"', "numpy<1.24,>=1.23", 'python_version < "3.9"'),
    ("Name_X[b, a] (>=1.0, <2)", "Name_X[b,a]>=1.0,<2", ""),
    ("pkg @ https://example.org/pkg-1.0.whl ; extra == 'a'", "pkg @ https://example.org/pkg-1.0.whl",
     "extra == 'a'"),
])
def test_requirements_are_split_into_name_extras_spec_marker(text: str, line: str, marker: str) -> None:
    requirement = parse_requirement(text)
    assert (requirement.line(), requirement.marker) == (line, marker)


def test_merge_gives_one_line_per_project_with_the_pins() -> None:
    """pip 20's resolver (JetPack 5's venv) refuses a project named twice: specifiers are joined."""
    merged = merge([parse_requirement(t) for t in ("numpy>=1.23", "Pillow>=9", "numpy<1.24", "ultralytics>=8.1",
                                                   "ultralytics[export]>=8.1")],
                   {"numpy": "<1.24", "cuda-python": "<12"})
    assert [r.line() for r in merged] == ["numpy>=1.23,<1.24", "Pillow>=9", "ultralytics[export]>=8.1",
                                          "cuda-python<12"]


# -- plans --------------------------------------------------------------------------------------------


def test_jetpack5_pins_numpy_keeps_system_opencv_and_bounds_cuda_python(tmp_path: Path) -> None:
    plan = plan_for(jetson(tmp_path), ["onnx", "greengrass", "tensorrt"], {"cv2": SYSTEM_CV2, "numpy": "1.17.4"},
                    python=(3, 8, 10))
    assert plan.requirements == ["numpy<1.24,>=1.23", "PyYAML>=6.0", "paho-mqtt>=2.0", "onnxruntime>=1.16",
                                 "awsiotsdk>=1.15", "cuda-python>=11.4,<12"]
    assert plan.remove == list(OPENCV_WHEELS)  # pulled in by another package? removed after the install
    assert plan.warnings == []
    choices = dict(plan.choices)
    assert choices["platform"].startswith("NVIDIA Jetson, L4T R35.4.1 = JetPack 5 (Ubuntu 20.04")
    assert choices["numpy"] == "numpy<1.24: TensorRT 8's Python bindings use np.bool, removed in numpy 1.24"
    assert choices["opencv"].startswith("system cv2 4.5.4 with GStreamer (/usr/lib/python3.8/dist-packages/cv2")
    assert choices["cuda-python"] == "cuda-python<12 (JetPack 5 has CUDA 11.4)"
    report = plan.report()
    assert "pip requirements:\n  numpy<1.24,>=1.23\n" in report and "removed from the venv after the install" in report


def test_jetpack6_pins_numpy_below_2_and_cuda_python_below_13(tmp_path: Path) -> None:
    plan = plan_for(jetson(tmp_path, JP6_RELEASE), ["onnx", "tensorrt"], {"cv2": SYSTEM_CV2, "numpy": "1.21.5"})
    assert plan.requirements == ["numpy>=1.23,<2", "PyYAML>=6.0", "paho-mqtt>=2.0", "onnxruntime>=1.16",
                                 "cuda-python>=11.4,<13"]
    assert dict(plan.choices)["cuda-python"] == "cuda-python<13 (JetPack 6 has CUDA 12)"


def test_jetson_without_a_system_cv2_gets_pips_opencv_and_a_warning(tmp_path: Path) -> None:
    plan = plan_for(jetson(tmp_path), ["onnx"], {"cv2_error": "ModuleNotFoundError: No module named 'cv2'"})
    assert "opencv-python>=4.5.4" in plan.requirements and plan.remove == []
    assert dict(plan.choices)["cuda-python"] == "not needed (no tensorrt extra)"
    (warning,) = plan.warnings
    assert warning.startswith("CSI cameras (csi://) need JetPack's GStreamer-enabled OpenCV: sudo apt-get install "
                              "nvidia-opencv") and "No module named 'cv2'" in warning


def test_jetson_warnings_for_a_cv2_without_gstreamer_a_numpy_2_and_no_torch(tmp_path: Path) -> None:
    probe = {"cv2": {**SYSTEM_CV2, "gstreamer": False}, "numpy": "1.26.4", "torch": None}
    plan = plan_for(jetson(tmp_path), ["torch"], probe)
    assert "opencv-python>=4.5.4" not in plan.requirements  # kept all the same: pip's has no GStreamer either
    assert "WITHOUT GStreamer" in dict(plan.choices)["opencv"]
    assert [w.split(",")[0].split(":")[0] for w in plan.warnings] == [
        "the system numpy 1.26.4 is not numpy<1.24", "the system cv2 has no GStreamer", "no system torch"]
    with_torch = plan_for(jetson(tmp_path), ["torch"], {**probe, "torch": "2.1.0a0+41361538.nv23.06"})
    assert not any("torch" in w for w in with_torch.warnings)


def test_plain_linux_takes_the_wheels_requirements_as_they_are(tmp_path: Path) -> None:
    plan = plan_for(detect_device(tmp_path / "missing"), ["onnx", "tensorrt"])
    numpy = "numpy<1.24,>=1.23" if sys.version_info < (3, 9) else "numpy>=1.23"
    assert plan.requirements == [numpy, "opencv-python>=4.5.4", "PyYAML>=6.0", "paho-mqtt>=2.0",
                                 "onnxruntime>=1.16", "cuda-python>=11.4"]
    assert plan.remove == [] and plan.warnings == []
    assert dict(plan.choices)["numpy"] == "no extra pin (not a Jetson)"


def test_extras_of_extras_are_expanded(tmp_path: Path) -> None:
    plan = plan_for(detect_device(tmp_path / "missing"), ["dev"])
    names = [r.split(">")[0].split("<")[0] for r in plan.requirements]
    assert names == ["numpy", "opencv-python", "PyYAML", "paho-mqtt", "onnxruntime", "ultralytics", "onnx", "pytest"]


def test_an_unknown_extra_names_what_the_wheel_provides(tmp_path: Path) -> None:
    with pytest.raises(PlanError) as error:
        plan_for(detect_device(tmp_path / "missing"), ["onnx", "Tensor_RT", "gpu"])
    assert str(error.value) == ("install_extras: unknown extra 'tensor-rt', 'gpu'; yolo-edge provides: dev, export, "
                                "greengrass, onnx, tensorrt, torch")


def test_without_a_wheel_only_the_choices_are_printed(tmp_path: Path) -> None:
    plan = make_plan(jetson(tmp_path), ["onnx", "tensorrt"], None, (3, 8, 10), "python3",
                     lambda: {"cv2": SYSTEM_CV2})
    assert plan.requirements == [] and "pip requirements" not in plan.report()
    assert dict(plan.choices)["cuda-python"] == "cuda-python<12 (JetPack 5 has CUDA 11.4)"


# -- the system probe and the command line -------------------------------------------------------------


def test_probe_reads_this_interpreters_cv2_and_numpy() -> None:
    facts = install_plan.probe_system(sys.executable)
    if importlib.util.find_spec("cv2") is None:
        assert "No module named 'cv2'" in str(facts["cv2_error"])
    else:
        import cv2

        assert facts["cv2"]["version"] == cv2.__version__
        assert facts["cv2"]["gstreamer"] == ("GStreamer:                   YES" in cv2.getBuildInformation())
    import numpy

    assert facts["numpy"] == numpy.__version__


def test_probe_of_a_missing_interpreter_is_an_error_not_a_crash(tmp_path: Path) -> None:
    assert "probe of" in str(install_plan.probe_system(str(tmp_path / "python3"))["cv2_error"])


def make_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "yolo_edge-0.1.0-py3-none-any.whl"
    lines = ["Metadata-Version: 2.1", "Name: yolo-edge", "Version: 0.1.0"]
    lines += [f"Provides-Extra: {e}" for e in METADATA.extras] + [f"Requires-Dist: {r}" for r in REQUIRES]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("yolo_edge-0.1.0.dist-info/METADATA", "\n".join(lines) + "\n")
    return wheel


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    package_root = str(Path(install_plan.__file__).resolve().parents[1])  # the yolo_edge under test
    return subprocess.run([sys.executable, "-m", "yolo_edge.install_plan", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": package_root, **(env or {})}, timeout=120,
                          check=False)


def test_cli_writes_the_requirement_and_remove_files(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path)
    done = run_cli("--wheel", str(wheel), "--extras", "onnx,greengrass", "--requirements-out",
                   str(tmp_path / "req.txt"), "--remove-out", str(tmp_path / "remove.txt"),
                   env={"YOLO_EDGE_TEGRA_RELEASE": str(tmp_path / "none")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("install plan:\n  platform:    Linux")
    assert (tmp_path / "req.txt").read_text().splitlines()[1:] == [
        "opencv-python>=4.5.4", "PyYAML>=6.0", "paho-mqtt>=2.0", "onnxruntime>=1.16", "awsiotsdk>=1.15"]
    assert (tmp_path / "remove.txt").read_text() == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--tegra-release", "{jp5}"], "install_plan: error: JetPack 5 needs its system Python 3.8"),
    (["--wheel", "{dir}"], "install_plan: error: --wheel {dir}: cannot read it as a wheel"),
    (["--extras", "onnx,gpu", "--wheel", "{wheel}"], "install_plan: error: install_extras: unknown extra 'gpu'"),
])
def test_cli_errors_exit_2_with_the_reason(args: list[str], message: str, tmp_path: Path) -> None:
    if sys.version_info[:2] == (3, 8) and "{jp5}" in args:
        pytest.skip("this interpreter is JetPack 5's Python")
    fill = {"{jp5}": str(release_file(tmp_path, JP5_RELEASE)), "{dir}": str(tmp_path), "{wheel}": ""}
    if "{wheel}" in args:
        fill["{wheel}"] = str(make_wheel(tmp_path))
    done = run_cli(*[fill.get(a, a) for a in args], env={"YOLO_EDGE_TEGRA_RELEASE": str(tmp_path / "none")})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(message.replace("{dir}", str(tmp_path))), done.stderr


def test_cli_help_documents_the_release_file_variable() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "YOLO_EDGE_TEGRA_RELEASE" in done.stdout and "/etc/nv_tegra_release" in done.stdout
