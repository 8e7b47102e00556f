"""utils/install_dependencies.sh on a JetPack 5, a JetPack 6 and a plain Linux box: the Python check, the
install plan it prints (numpy pin, OpenCV, cuda-python) and the apt packages it installs.

apt, dpkg and sudo are recording stubs (tests/stubs/stub, answering only the calls given here); the
Jetson is a stub L4T release file; python3 and the install plan are real (a Python 3.8 or 3.10 from
pyenv for the JetPacks, skipped where there is none)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from test_scripts import Stubs

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "utils" / "install_dependencies.sh"
BASE_PACKAGES = ["python3", "python3-venv", "python3-pip", "libgl1", "libglib2.0-0"]
JETPACKS = {  # JetPack: (its Python, L4T release line, nvidia-jetpack version, numpy pin, cuda-python bound)
    5: ("3.8", "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1\n",
        "5.1.2-b104", "numpy<1.24", "cuda-python<12"),
    6: ("3.10", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n",
        "6.2+b77", "numpy<2", "cuda-python<13"),
}


def find_python(version: str) -> Path | None:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for folder in sorted(pyenv.glob(f"{version}.*"), reverse=True):
        if (folder / "bin" / "python3").is_file():
            return (folder / "bin" / "python3").resolve()
    on_path = shutil.which(f"python{version}")
    return Path(on_path).resolve() if on_path and "/shims/" not in on_path else None


def device(tmp_path: Path, python: Path | None, release: str | None) -> tuple[Stubs, dict[str, str]]:
    """Stubs for apt/dpkg/sudo/id (nothing installed, not root), `python` as python3, and the release file."""
    stubs = Stubs(tmp_path, ["dpkg-query", "apt-get", "apt-cache", "sudo", "id"])
    if python is not None:
        (stubs.bin / "python3").symlink_to(python)
    stubs.on("id", args=["-u"], stdout="1000\n")
    stubs.on("dpkg-query", prefix=["-W", "-f=${Status}"], exit=1, stderr="dpkg-query: no packages found\n")
    stubs.on("apt-get", args=["update"])
    stubs.on("apt-get", prefix=["install", "-y", "--no-install-recommends"])
    release_file = tmp_path / "nv_tegra_release"
    if release is not None:
        release_file.write_text(release)
    return stubs, {"YOLO_EDGE_TEGRA_RELEASE": str(release_file)}


def jetpack_python(jetpack: int) -> Path:
    python = find_python(JETPACKS[jetpack][0])
    if python is None:
        pytest.skip(f"no Python {JETPACKS[jetpack][0]} (JetPack {jetpack}'s) here; .ci/run installs 3.8 with pyenv")
    return python


@pytest.mark.parametrize("jetpack", sorted(JETPACKS))
def test_jetpack_installs_its_packages_and_prints_the_plan(jetpack: int, tmp_path: Path) -> None:
    python_version, release, jetpack_version, numpy_pin, cuda_bound = JETPACKS[jetpack]
    stubs, env = device(tmp_path, jetpack_python(jetpack), release)
    stubs.on("dpkg-query", args=["-W", "-f=${Version}", "nvidia-jetpack"], stdout=jetpack_version)
    stubs.on("apt-cache", args=["show", "libopencv-python"], stdout="Package: libopencv-python\n")
    stubs.on("apt-cache", args=["show", "python3-pycuda"], exit=100)
    done = stubs.run(INSTALL, "--backends", "onnx,tensorrt", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"NVIDIA Jetson, L4T {release[3:5]}." in done.stdout and f"JetPack {jetpack_version}" in done.stdout
    # The bare interpreter has no cv2: JetPack's GStreamer-enabled OpenCV is installed for the venv to keep.
    assert stubs.argv("apt-get") == [["update"], ["install", "-y", "--no-install-recommends", *BASE_PACKAGES,
                                                  "libopencv-python", "python3-libnvinfer"]]
    assert [call[:2] for call in stubs.argv("sudo")] == [["apt-get", "update"],
                                                         ["env", "DEBIAN_FRONTEND=noninteractive"]]
    plan = done.stdout[done.stdout.index("install plan:"):]
    assert f"= JetPack {jetpack} (" in plan and f"the system Python of JetPack {jetpack}" in plan
    assert f"  numpy:       {numpy_pin}: " in plan
    assert f"  cuda-python: {cuda_bound} (JetPack {jetpack} has CUDA" in plan
    assert "set its install_extras to onnx,tensorrt,greengrass" in done.stdout


@pytest.mark.parametrize("jetpack", sorted(JETPACKS))
def test_wrong_python_for_the_jetpack_stops_before_apt(jetpack: int, tmp_path: Path) -> None:
    python_version, release, *_ = JETPACKS[jetpack]
    other = "3.10" if python_version == "3.8" else "3.8"
    python = Path(sys.executable) if f"{sys.version_info[0]}.{sys.version_info[1]}" != python_version else None
    python = python or find_python(other)
    if python is None:
        pytest.skip(f"no Python other than {python_version} here")
    stubs, env = device(tmp_path, python, release)
    stubs.on("dpkg-query", args=["-W", "-f=${Version}", "nvidia-jetpack"], stdout="x")
    done = stubs.run(INSTALL, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"install_plan: error: JetPack {jetpack} needs its system Python {python_version} " in done.stderr
    assert "install_dependencies: error: this device cannot run the component as it is" in done.stderr
    assert stubs.calls("apt-get") == [] and stubs.calls("sudo") == [] and stubs.calls("apt-cache") == []


def test_jetpack4_is_refused(tmp_path: Path) -> None:
    stubs, env = device(tmp_path, None, "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref\n")
    stubs.on("dpkg-query", args=["-W", "-f=${Version}", "nvidia-jetpack"], stdout="4.6.4-b39")
    done = stubs.run(INSTALL, env=env)
    assert done.returncode == 2
    assert "L4T R32.7.4 (JetPack 4, Ubuntu 18.04, Python 3.6) is not supported" in done.stderr
    assert stubs.calls("apt-get") == []


def test_plain_linux_dry_run_prints_the_plan_without_jetpack_pins(tmp_path: Path) -> None:
    stubs, env = device(tmp_path, None, None)  # python3: this interpreter (3.8 to 3.13)
    done = stubs.run(INSTALL, "--dry-run", "--backends", "onnx,tensorrt", env=env)
    assert done.returncode == 0, done.stderr
    assert "platform: Linux" in done.stdout and "(not a Jetson)" in done.stdout
    assert ("would run: sudo apt-get install -y --no-install-recommends " + " ".join(BASE_PACKAGES)) in done.stdout
    plan = done.stdout[done.stdout.index("install plan:"):]
    assert "numpy:       no extra pin (not a Jetson)" in plan
    assert "opencv:      opencv-python from PyPI" in plan
    assert "cuda-python: the wheel's bound only" in plan
    assert stubs.calls("apt-get") == [] and stubs.calls("apt-cache") == []


def test_help_documents_the_release_file_variable_and_the_checks(tmp_path: Path) -> None:
    done = Stubs(tmp_path, []).run(INSTALL, "--help")
    assert done.returncode == 0
    for text in ("YOLO_EDGE_TEGRA_RELEASE", "R35 = JetPack 5", "Python 3.8", "numpy<1.24", "libopencv-python"):
        assert text in done.stdout
