#!/usr/bin/env bash
# Put an NVIDIA Jetson in its maximum power mode with full clocks, for benchmarks and inference.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: utils/set_max_power.sh [--mode N] [--dry-run] [-h|--help]

On an NVIDIA Jetson: `nvpmodel -m N` (default 0, MAXN on most modules) and `jetson_clocks`
(CPU/GPU/EMC clocks pinned at their maximum until reboot). Refuses on other machines.
Some modules ask to reboot after a power-mode change; nvpmodel prints it when so.

  --mode N    nvpmodel power mode id (default: 0; `nvpmodel -p --verbose` lists them)
  --dry-run   print the commands, change nothing
  -h, --help  show this help

Environment: YOLO_EDGE_ROOT  prefix for /etc files (tests fake a Jetson with it; default: /)
USAGE
}

die() { echo "set_max_power: error: $*" >&2; exit 2; }

mode=0
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--mode needs a power mode number"; mode="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

tegra_release="${YOLO_EDGE_ROOT:-}/etc/nv_tegra_release"
if [[ ! -f "$tegra_release" ]]; then
  echo "set_max_power: this is not an NVIDIA Jetson ($tegra_release not found); nvpmodel and jetson_clocks exist only there. Nothing changed." >&2
  exit 3
fi
for tool in nvpmodel jetson_clocks; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH; it ships with L4T (nvidia-l4t-tools)"
done

sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
run() {
  if (( dry_run )); then
    echo "would run: ${sudo_cmd[*]:+${sudo_cmd[*]} }$*"
  else
    "${sudo_cmd[@]}" "$@"
  fi
}

# `nvpmodel -q` prints "NV Power Mode: MAXN" then the mode id on its own line.
current="$("${sudo_cmd[@]}" nvpmodel -q 2>/dev/null | grep -E '^[0-9]+$' | tail -n 1 || true)"
if [[ "$current" == "$mode" ]]; then
  echo "set_max_power: power mode $mode already set"
else
  run nvpmodel -m "$mode"
fi
run jetson_clocks
if (( ! dry_run )); then
  "${sudo_cmd[@]}" nvpmodel -q || true
fi
