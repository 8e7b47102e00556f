#!/usr/bin/env python3
"""OpenVINO on the CPU: the config key `performance` (latency vs throughput), on an idle CPU and on one
that other processes keep busy (as other Greengrass components do on a small device).

For each input size and each number of busy processes (`--busy 0,1`: pure-Python busy loops, one core
each), compiles the model as the component does for `latency` (one request on all cores) and for
`throughput` (OpenVINO's suggested number of requests side by side, kept full), then measures ms per frame
(wall time over the frames / frames) alternately, `--repeat` times; medians are reported.

    python benchmarks/openvino_performance.py --model yolov8n.yaml --sizes 640,480x640 --busy 0,1 --repeat 3

Writes openvino_performance.md and .json to --output.

    python benchmarks/openvino_performance.py --smoke   # 64x64, idle and 1 busy process, 5 frames, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from yolo_edge_tools import bench, bench_report
from yolo_edge_tools.bench_worker import side_by_side

MODES = ("latency", "throughput")
SMOKE = {"sizes": "64", "busy": "0,1", "frames": 5, "repeat": 1,
         "output": str(Path(tempfile.gettempdir()) / "yolo-edge-smoke" / "openvino-performance")}


def busy_loop() -> None:
    while True:
        pass


def frame_ms(backend: Any, tensor: np.ndarray, frames: int) -> float:
    """Wall ms per frame with the backend's requests kept full (one at a time under latency)."""
    for _ in side_by_side(backend, tensor, backend.concurrency):  # warm-up: every request once
        pass
    start = time.perf_counter()
    for _ in side_by_side(backend, tensor, frames):
        pass
    return (time.perf_counter() - start) * 1000 / frames


def measure(model: Path, size: tuple[int, int], busy_counts: list[int], frames: int, repeat: int
            ) -> list[dict[str, Any]]:
    from yolo_edge.backends import BackendOptions, load_backend
    from yolo_edge.predictor import PostprocessSettings, Predictor

    backends = {mode: load_backend(model, BackendOptions(device="cpu", runtime="openvino", performance=mode,
                                                         input_size=size)) for mode in MODES}
    frame = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    tensor, _ = Predictor(backends["latency"], PostprocessSettings()).host_tensor(frame)
    rows = []
    for busy in busy_counts:
        hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(busy)]
        for hog in hogs:
            hog.start()
        try:
            samples: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(repeat):
                for mode in MODES:
                    samples[mode].append(frame_ms(backends[mode], tensor, frames))
        finally:
            for hog in hogs:
                hog.terminate()
                hog.join()
        rows.append({"size": list(size), "busy": busy, "concurrency": backends["throughput"].concurrency,
                     **{f"{mode}_ms": round(statistics.median(samples[mode]), 2) for mode in MODES},
                     "samples": samples})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| input H×W | busy processes | latency ms/frame | throughput ms/frame | requests | throughput gain |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        gain = row["latency_ms"] / row["throughput_ms"]
        lines.append(f"| {bench_report.size_label(row['size'])} | {row['busy']} | {row['latency_ms']:.2f} | "
                     f"{row['throughput_ms']:.2f} | {row['concurrency']} | {gain:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov8n.yaml", help="an .onnx file or an architecture name")
    parser.add_argument("--sizes", default=None, help="input sizes, HxW or one number (default 640,480x640)")
    parser.add_argument("--busy", default=None, help="numbers of busy processes, comma-separated (default 0,1)")
    parser.add_argument("--frames", type=int, default=None, help="measured frames per sample (default 60)")
    parser.add_argument("--repeat", type=int, default=None, help="samples per mode, alternating (default 3)")
    parser.add_argument("--class-bias", default="none", help="architecture names: see yolo-edge bench")
    parser.add_argument("--output", default=None, help="folder for the .md and .json (default bench-results)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds' run that proves the script")
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else {"sizes": "640,480x640", "busy": "0,1", "frames": 60, "repeat": 3,
                                          "output": "bench-results"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sizes = bench.parse_sizes(args.sizes)
    busy = [int(part) for part in str(args.busy).split(",")]
    if any(count < 0 for count in busy) or args.frames < 1 or args.repeat < 1:
        parser.error("--busy counts must be >= 0, --frames and --repeat >= 1")
    pairs = bench.resolve_models([args.model], sizes, ["onnx"], "cpu", False, bench.parse_class_bias(args.class_bias))
    rows = [row for model, size in pairs for row in measure(model.path, size, busy, args.frames, args.repeat)]
    table = markdown(rows)
    print(table, end="")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "openvino_performance.md").write_text(
        "# OpenVINO latency vs throughput\n\nCommand: `benchmarks/openvino_performance.py "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n\n{table}", encoding="utf-8")
    (output / "openvino_performance.json").write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
