#!/usr/bin/env bash
# The runtime on a device's Python: build the wheel, install it with [onnx,greengrass] into a fresh venv
# of Python 3.8 (JetPack 5) and of 3.10 (JetPack 6) with the dependency versions those devices get, add the
# tools package without its dependencies (the test harness's local broker and sample images), and run
# the runtime test subset (`-m runtime`: component over a real Mosquitto, processing, commands, config,
# Greengrass transport) there. Needs the full suite to have run first: it leaves the exported models and
# Ultralytics' images in the test cache, as these Pythons have no Ultralytics.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: .ci/device-pythons.sh [VERSION ...]

VERSION is 3.8 or 3.10 (default: both). For each, a pyenv interpreter of that version is used
(installed with `pyenv install` when missing), a venv is made under $YOLO_EDGE_CI_VENVS
(default: /tmp/yolo-edge-ci), the wheel built from this repository is installed into it with
[onnx,greengrass] under .ci/jetpack*-pyVERSION.txt constraints, the tools wheel with --no-deps (for the
test harness only), and `pytest -m runtime` runs on every test file under tests/ that holds runtime tests.
USAGE
}

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3.8 3.10)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venvs="${YOLO_EDGE_CI_VENVS:-/tmp/yolo-edge-ci}"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"

interpreter() {  # newest pyenv CPython of this minor version, installed if missing
  local version="$1" found
  found="$(find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/${version}.*/bin/python${version}" 2>/dev/null | sort -V | tail -n 1)"
  if [[ -z "$found" ]]; then
    command -v pyenv >/dev/null 2>&1 || { echo "error: no Python $version under $pyenv_root and no pyenv to install it" >&2; return 1; }
    echo "==> pyenv install $version" >&2
    pyenv install --skip-existing "$version" >&2
    found="$(find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/${version}.*/bin/python${version}" | sort -V | tail -n 1)"
  fi
  echo "$found"
}

wheel_dir="$venvs/wheel"
rm -rf "$wheel_dir"
mkdir -p "$wheel_dir"
python3 -m pip wheel --quiet --no-deps --wheel-dir "$wheel_dir" "$repo" "$repo/tools"
wheels=("$wheel_dir"/yolo_edge-*.whl)
wheel="${wheels[0]}"
tools_wheels=("$wheel_dir"/yolo_edge_tools-*.whl)
tools_wheel="${tools_wheels[0]}"

for version in "${versions[@]}"; do
  case "$version" in
    3.8) constraints="$repo/.ci/jetpack5-py3.8.txt" ;;
    3.10) constraints="$repo/.ci/jetpack6-py3.10.txt" ;;
    *) echo "error: Python version '$version' has no device constraints; use 3.8 or 3.10" >&2; exit 2 ;;
  esac
  python_bin="$(interpreter "$version")"
  venv="$venvs/py$version"
  echo "==> Python $version: $python_bin -> $venv"
  rm -rf "$venv"
  "$python_bin" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet --constraint "$constraints" "${wheel}[onnx,greengrass]" \
    "pytest>=7.4" "pytest-timeout>=2.2"
  # The test harness (tests/conftest.py) takes LocalBroker and the sample images from the tools package.
  # --no-deps: none of the tools' dependencies (Ultralytics, torch, ...) reach the venv; the runtime itself
  # never imports the tools.
  "$venv/bin/python" -m pip install --quiet --no-deps "$tools_wheel"
  "$venv/bin/python" -c "import sys, numpy, cv2, onnxruntime, yolo_edge; print('python', sys.version.split()[0], \
'| numpy', numpy.__version__, '| opencv', cv2.__version__, '| onnxruntime', onnxruntime.__version__)"
  # From the repository root so tests/ is found; yolo_edge is imported from the installed wheel. Only the
  # modules that hold runtime tests are collected: the others import Ultralytics, torch or boto3.
  mapfile -t runtime_tests < <(cd "$repo" && grep -rl --include="test_*.py" "pytest.mark.runtime" tests | sort)
  (cd "$repo" && "$venv/bin/python" -m pytest -q -ra -m runtime -p no:cacheprovider "${runtime_tests[@]}")
done
