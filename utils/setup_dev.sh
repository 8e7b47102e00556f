#!/usr/bin/env bash
# Install everything needed to run yolo-edge locally and to run its tests:
# Debian packages (mosquitto, shellcheck, ffmpeg) and the Python package with its dev extras.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: utils/setup_dev.sh [--no-apt] [--python PYTHON]

Installs, idempotently:
  * apt: mosquitto (local MQTT broker), shellcheck, ffmpeg (stream tests)
  * pip: a torch/torchvision pair that work together on this CPU architecture
         (override with YOLO_EDGE_TORCH_SPEC="torch==X torchvision==Y"),
         then this repository in editable mode with the [dev] extras
         (onnxruntime, ultralytics, awsiotsdk, boto3, pytest, ruff, matplotlib, ...).

Options:
  --no-apt         skip the apt step (packages already installed, or no root)
  --python PYTHON  interpreter to install into (default: python3)
  -h, --help       show this help
USAGE
}

python_bin=python3
use_apt=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-apt) use_apt=0; shift ;;
    --python) python_bin="${2:?--python needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if [[ "$use_apt" -eq 1 ]]; then
  missing=()
  for pkg in mosquitto shellcheck ffmpeg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "==> apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "==> apt packages already installed"
  fi
  # The package starts its own brokers on free ports; the system service is not needed.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    echo "    (note: a system mosquitto service is running on port 1883; yolo-edge demo does not need it)"
  fi
fi

torch_spec="${YOLO_EDGE_TORCH_SPEC:-}"
if [[ -z "$torch_spec" ]]; then
  case "$(uname -m)" in
    x86_64) torch_spec="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64) torch_spec="torch==2.9.1 torchvision==0.24.1" ;;
    *) torch_spec="torch torchvision" ;;
  esac
fi

if "$python_bin" -c "import torch, torchvision, torchvision.ops; torchvision.ops.nms" >/dev/null 2>&1; then
  echo "==> torch and torchvision already work together; keeping them"
else
  echo "==> pip install $torch_spec"
  # shellcheck disable=SC2086 # the spec is a list of requirement words
  "$python_bin" -m pip install --quiet $torch_spec
fi

echo "==> pip install -e '${repo_root}/tools' -e '${repo_root}[dev]'"
"$python_bin" -m pip install --quiet -e "${repo_root}/tools" -e "${repo_root}[dev]"
"$python_bin" -c "import yolo_edge, onnxruntime, ultralytics; print('yolo-edge', yolo_edge.__version__, \
'| onnxruntime', onnxruntime.__version__, '| ultralytics', ultralytics.__version__)"
