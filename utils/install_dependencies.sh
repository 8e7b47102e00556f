#!/usr/bin/env bash
# Install the system packages yolo-edge needs on a device, Jetson or plain Linux (Debian/Ubuntu).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: utils/install_dependencies.sh [--backends LIST] [--dry-run] [-h|--help]

Installs the system packages the yolo-edge component needs on this device with apt-get. Python
packages (onnxruntime, opencv, ...) are not installed here: the component's Install step puts them
in its own venv. Packages already installed are skipped; shell rc files are never edited.

  --backends LIST  comma-separated backends to prepare: onnx, torch, tensorrt (default: onnx)
  --dry-run        print the plan (detected platform, packages to install) and change nothing
  -h, --help       show this help

On a Jetson (detected by /etc/nv_tegra_release; JetPack by the nvidia-jetpack package):
  onnx      python3-venv, python3-pip, libgl1/libglib2.0-0 for OpenCV
  torch     + libopenblas-dev, libjpeg-dev, zlib1g-dev; prints where NVIDIA's torch wheel comes from
  tensorrt  + python3-libnvinfer (JetPack's TensorRT Python bindings), python3-pycuda if available
Elsewhere the same base set; torch comes from PyPI in the venv; TensorRT is not installed (prints how).

Environment: YOLO_EDGE_ROOT  prefix for /etc files (tests fake a Jetson with it; default: /)
EOF
}

die() { echo "install_dependencies: error: $*" >&2; exit 2; }
note() { echo "install_dependencies: $*"; }

backends="onnx"
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backends) [[ $# -ge 2 && -n "$2" ]] || die "--backends needs a value such as onnx,torch,tensorrt"
                backends="$2"; shift 2 ;;
    --backends=*) backends="${1#*=}"; [[ -n "$backends" ]] || die "--backends needs a value"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

want_onnx=0 want_torch=0 want_tensorrt=0
IFS=',' read -r -a backend_list <<<"$backends"
for backend in "${backend_list[@]}"; do
  case "$backend" in
    onnx) want_onnx=1 ;;
    torch) want_torch=1 ;;
    tensorrt) want_tensorrt=1 ;;
    "") ;;
    *) die "--backends: unknown backend '$backend'; allowed: onnx, torch, tensorrt" ;;
  esac
done
(( want_onnx + want_torch + want_tensorrt > 0 )) || die "--backends: name at least one of onnx, torch, tensorrt"

root="${YOLO_EDGE_ROOT:-}"
tegra_release="$root/etc/nv_tegra_release"

is_installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]]
}

jetson=0
if [[ -f "$tegra_release" ]]; then
  jetson=1
  # "# R35 (release), REVISION: 4.1, GCID: ..." -> L4T 35.4.1
  l4t="$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' "$tegra_release" | head -n 1)"
  jetpack="$(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null || true)"
  note "platform: NVIDIA Jetson, L4T ${l4t:-unknown}, JetPack ${jetpack:-not installed (nvidia-jetpack package missing)}"
else
  note "platform: Linux $(uname -m) (not a Jetson)"
fi

packages=(python3 python3-venv python3-pip libgl1 libglib2.0-0)
hints=()
if (( want_torch )); then
  if (( jetson )); then
    packages+=(libopenblas-dev libjpeg-dev zlib1g-dev)
    hints+=("torch: install NVIDIA's PyTorch wheel for JetPack ${jetpack:-<your version>} system-wide (pip3 install <wheel from the Jetson download centre / jetson-ai-lab index>); the component's venv sees it through --system-site-packages. Add 'torch' to the recipe's install_extras only after that, or pip will pull a CPU-only torch.")
  else
    hints+=("torch: nothing system-wide; set install_extras to onnx,greengrass,torch and the component's venv installs Ultralytics and torch from PyPI.")
  fi
fi
if (( want_tensorrt )); then
  if (( jetson )); then
    packages+=(python3-libnvinfer)
    if apt-cache show python3-pycuda >/dev/null 2>&1; then
      packages+=(python3-pycuda)
    else
      hints+=("tensorrt: python3-pycuda is not in your apt sources; the component uses cuda-python from install_extras 'tensorrt' instead.")
    fi
  else
    hints+=("tensorrt: not installed off Jetson; use NVIDIA's TensorRT packages or the 'tensorrt' wheel matching your CUDA, and add 'tensorrt' to install_extras.")
  fi
fi

missing=()
for package in "${packages[@]}"; do
  if is_installed "$package"; then
    note "already installed: $package"
  else
    missing+=("$package")
  fi
done

sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi

if (( ${#missing[@]} == 0 )); then
  note "nothing to install"
elif (( dry_run )); then
  note "would run: ${sudo_cmd[*]:+${sudo_cmd[*]} }apt-get update"
  note "would run: ${sudo_cmd[*]:+${sudo_cmd[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
else
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages with your package manager: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  note "installed: ${missing[*]}"
fi

for hint in "${hints[@]}"; do
  note "hint: $hint"
done
if (( jetson )); then
  note "next: utils/set_max_power.sh for full clocks, then utils/provisioning.sh"
else
  note "next: utils/provisioning.sh"
fi
