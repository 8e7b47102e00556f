#!/usr/bin/env bash
# Install the system packages yolo-edge needs on a device, Jetson or plain Linux (Debian/Ubuntu).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: utils/install_dependencies.sh [--backends LIST] [--dry-run] [-h|--help]

Installs the system packages the yolo-edge component needs on this device with apt-get, after
checking that this device can run it, and prints what the component's install step will put in its
venv here (components/yolo_edge/install_plan.py, the code that step runs). Python packages
(onnxruntime, opencv, ...) are not installed here: the install step puts them in the component's
own venv. Packages already installed are skipped; shell rc files are never edited.

  --backends LIST  comma-separated backends to prepare: onnx, torch, tensorrt (default: onnx)
  --dry-run        print the plan (detected platform, packages to install) and change nothing
  -h, --help       show this help

A Jetson is found by its L4T release file, /etc/nv_tegra_release: R35 = JetPack 5 (needs the system
Python 3.8), R36 = JetPack 6 (Python 3.10); JetPack 4 (R32) is refused. Elsewhere python3 must be
3.8 to 3.13. A wrong python3 stops the script before anything is installed (exit 2).
On a Jetson:
  onnx      python3-venv, python3-pip, libgl1/libglib2.0-0 for OpenCV; JetPack's GStreamer-enabled
            OpenCV (libopencv-python) when python3 cannot import cv2 (the venv keeps the system cv2)
  torch     + libopenblas-dev, libjpeg-dev, zlib1g-dev; prints where NVIDIA's torch wheel comes from
  tensorrt  + python3-libnvinfer (JetPack's TensorRT Python bindings), python3-pycuda if available
and the venv gets numpy<1.24 (JetPack 5) or numpy<2 (JetPack 6) and cuda-python bound to the CUDA
major version. Elsewhere the same base set; torch comes from PyPI in the venv; TensorRT is not
installed (prints how).

Environment:
  YOLO_EDGE_TEGRA_RELEASE  the L4T release file (default: $YOLO_EDGE_ROOT/etc/nv_tegra_release;
                           a path that does not exist means "not a Jetson")
  YOLO_EDGE_ROOT           prefix for /etc files (default: /)
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
tegra_release="${YOLO_EDGE_TEGRA_RELEASE:-$root/etc/nv_tegra_release}"
plan_py="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/components/yolo_edge/install_plan.py"
[[ -f "$plan_py" ]] || die "$plan_py not found; run this script from a yolo-edge checkout"
extras="$backends"
[[ ",$extras," == *,greengrass,* ]] || extras="$extras,greengrass"

# The component's install plan for this device (-I: only the system's packages, as the venv sees them).
install_plan() {
  python3 -I "$plan_py" --extras "$extras" --tegra-release "$tegra_release"
}

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
have_python=0
if command -v python3 >/dev/null 2>&1; then
  have_python=1
  install_plan >/dev/null || die "this device cannot run the component as it is (see above); nothing was installed"
fi

packages=(python3 python3-venv python3-pip libgl1 libglib2.0-0)
hints=()
if (( jetson )) && ! { (( have_python )) && python3 -I -c "import cv2" >/dev/null 2>&1; }; then
  if apt-cache show libopencv-python >/dev/null 2>&1; then
    packages+=(libopencv-python)
  else
    hints+=("opencv: python3 has no cv2 and libopencv-python is not in your apt sources (sudo apt-get install nvidia-opencv, from JetPack's repository); without it the venv uses pip's opencv-python, which cannot open CSI cameras.")
  fi
fi
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
if (( have_python )) || command -v python3 >/dev/null 2>&1; then
  note "the component's install step will do this here (set its install_extras to $extras):"
  install_plan || die "this device cannot run the component as it is (see above)"
elif (( dry_run )); then
  note "python3 is not installed yet: the install plan is shown once it is"
fi
if (( jetson )); then
  note "next: utils/set_max_power.sh for full clocks, then utils/provisioning.sh"
else
  note "next: utils/provisioning.sh"
fi
