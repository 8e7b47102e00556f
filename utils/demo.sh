#!/usr/bin/env bash
# The quick start's first command: set this machine up (idempotent), then run the main job, `yolo-edge demo`.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: utils/demo.sh [--no-apt] [-- DEMO OPTIONS...]

Sets this machine up with utils/setup_dev.sh (apt: mosquitto, shellcheck, ffmpeg; pip: this package
with its [dev] extras; quick when everything is already there), then runs `yolo-edge demo`: a private
Mosquitto, a random-weights YOLOv8n ONNX model, a made video, the component end to end, each frame
as a table row and the run's summary.

Options:
  --no-apt    skip the apt step of the set-up (packages already installed, or no root)
  --          everything after it goes to `yolo-edge demo`, e.g. -- --frames 30 --model yolov8n.onnx
              (see `yolo-edge demo --help` once set up)
  -h, --help  show this help
USAGE
}

setup_args=()
demo_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-apt) setup_args+=(--no-apt); shift ;;
    --) shift; demo_args=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (options for yolo-edge demo go after --; see --help)" >&2; exit 2 ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/utils/setup_dev.sh" "${setup_args[@]}"
echo "==> yolo-edge demo ${demo_args[*]}"
yolo-edge demo "${demo_args[@]}"
