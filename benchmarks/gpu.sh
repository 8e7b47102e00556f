#!/usr/bin/env bash
# The GPU measurements of the PyTorch frame path (CUDA graphs, letterbox on the GPU, pinned buffers,
# FP16, device or host decoding) against Ultralytics' predictor on the same .pt and video.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: benchmarks/gpu.sh [--frames N] [--output DIR] [--quick]

Runs on a machine with an NVIDIA GPU that torch can see (an H100, a Jetson, ...):

  1. the target: YOLOv8n .pt at 640 (a 480x640 video), FP16, our pipeline vs Ultralytics'
     predictor, with a light head (a few boxes per frame) and the heavy one (300 boxes per frame);
  2. ablations, each in its own output folder:
       fp32        without --half
       no-graph    YOLO_EDGE_CUDA_GRAPH=0 (eager forwards)
       host-decode YOLO_EDGE_DEVICE_DECODE=host (numpy decoding of the copied-back head output)
       dev-decode  YOLO_EDGE_DEVICE_DECODE=device (threshold + NMS on the GPU)

Each folder gets bench.md, bench.json (with the environment and, per row, how the frame path ran:
cuda_graphs, graph_failures, decode) and bench.png. Models have random weights (timings are real).

Options:
  --frames N    measured frames per configuration (default 500)
  --output DIR  where the folders go (default benchmarks/results/gpu-<hostname>)
  --quick       the target runs only, no ablations
  -h, --help    this text
EOF
}

frames=500
output="benchmarks/results/gpu-$(hostname -s)"
quick=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --frames) frames="${2:?--frames needs a number}"; shift 2 ;;
        --output) output="${2:?--output needs a folder}"; shift 2 ;;
        --quick) quick=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$frames" =~ ^[1-9][0-9]*$ ]]; then
    echo "--frames must be a positive whole number, got '$frames'" >&2
    exit 2
fi

if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "torch sees no CUDA GPU here: this benchmark needs one (use yolo-edge bench for CPU tables)" >&2
    exit 1
fi
python3 -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'

export YOLO_OFFLINE=1
common=(yolov8n.yaml --formats pt --sizes 640 --device cuda --frames "$frames" --warmup 30)

run() {  # run FOLDER [bench options...]
    local folder="$1"
    shift
    echo "== $folder"
    yolo-edge bench "${common[@]}" "$@" --output "$output/$folder"
}

run light-fp16 --half --class-bias none --compare-ultralytics
run heavy-fp16 --half --compare-ultralytics
if [[ "$quick" == 0 ]]; then
    run light-fp32 --class-bias none --compare-ultralytics
    YOLO_EDGE_CUDA_GRAPH=0 run light-fp16-no-graph --half --class-bias none
    YOLO_EDGE_DEVICE_DECODE=host run heavy-fp16-host-decode --half
    YOLO_EDGE_DEVICE_DECODE=device run heavy-fp16-dev-decode --half
fi
echo "results in $output"
