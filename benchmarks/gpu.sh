#!/usr/bin/env bash
# The GPU measurements of the PyTorch frame path (CUDA graphs, letterbox on the GPU, pinned buffers,
# FP16, device or host decoding) against Ultralytics' predictor on the same .pt and video.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: benchmarks/gpu.sh [--frames N] [--output DIR] [--quick] [--smoke]

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
  --frames N    measured frames per configuration (default 500; 5 with --smoke)
  --output DIR  where the folders go (default benchmarks/results/gpu-<hostname>; a new temporary
                folder with --smoke)
  --quick       the target runs only, no ablations
  --smoke       a short run proving the script works: 64x64, 2 warm-up frames. With a GPU, every run
                above. Without one, the two target runs through the same `yolo-edge bench` calls on
                the CPU (--device cpu, no --half; the ablations switch GPU-only settings and are
                skipped): this proves the script and the PyTorch frame path, not the GPU figures.
  -h, --help    this text

Exit status: 0 done, 1 no CUDA GPU (without --smoke), 2 bad options, 3 a bench run failed.
USAGE
}

frames=""
output=""
quick=0
smoke=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --frames) frames="${2:?--frames needs a number}"; shift 2 ;;
        --output) output="${2:?--output needs a folder}"; shift 2 ;;
        --quick) quick=1; shift ;;
        --smoke) smoke=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ "$smoke" == 1 ]]; then
    frames="${frames:-5}"
    warmup=2
    size=64
else
    frames="${frames:-500}"
    warmup=30
    size=640
fi
if ! [[ "$frames" =~ ^[1-9][0-9]*$ ]]; then
    echo "--frames must be a positive whole number, got '$frames'" >&2
    exit 2
fi

if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    gpu=1
    python3 -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
elif [[ "$smoke" == 1 ]]; then
    gpu=0
    echo "torch sees no CUDA GPU here: --smoke runs the target's bench calls on the CPU" \
        "(--device cpu, no --half, no ablations); this proves the script, not the GPU figures" >&2
else
    echo "torch sees no CUDA GPU here: this benchmark needs one (use yolo-edge bench for CPU tables," \
        "or --smoke to check this script)" >&2
    exit 1
fi
if [[ -z "$output" ]]; then
    if [[ "$smoke" == 1 ]]; then
        output="$(mktemp -d "${TMPDIR:-/tmp}/yolo-edge-gpu-smoke.XXXXXX")"
    else
        output="benchmarks/results/gpu-$(hostname -s)"
    fi
fi

export YOLO_OFFLINE=1
device=cuda
[[ "$gpu" == 1 ]] || device=cpu
common=(yolov8n.yaml --formats pt --sizes "$size" --device "$device" --frames "$frames" --warmup "$warmup")

run() {  # run FOLDER [bench options...]
    local folder="$1"
    shift
    echo "== $folder"
    if ! yolo-edge bench "${common[@]}" "$@" --output "$output/$folder"; then
        echo "the bench run '$folder' failed (see above)" >&2
        exit 3
    fi
}

if [[ "$gpu" == 0 ]]; then
    run light-cpu --class-bias none --compare-ultralytics
    run heavy-cpu --compare-ultralytics
    echo "results in $output (CPU only: no GPU figures)"
    exit 0
fi
run light-fp16 --half --class-bias none --compare-ultralytics
run heavy-fp16 --half --compare-ultralytics
if [[ "$quick" == 0 ]]; then
    run light-fp32 --class-bias none --compare-ultralytics
    YOLO_EDGE_CUDA_GRAPH=0 run light-fp16-no-graph --half --class-bias none
    YOLO_EDGE_DEVICE_DECODE=host run heavy-fp16-host-decode --half
    YOLO_EDGE_DEVICE_DECODE=device run heavy-fp16-dev-decode --half
fi
echo "results in $output"
