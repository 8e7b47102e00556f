#!/usr/bin/env python3
"""ONNX Runtime CPU thread settings against the component's pipeline: which defaults win?

For every input size, ONNX Runtime intra-op thread count (1, 2, runtime default) and thread
spinning (on: ONNX Runtime's default, idle workers busy-wait; off: they sleep), measures in a fresh
process each:
  pipeline  the component's path: frame feeder thread overlapping inference (FrameFeeder + Predictor)
  serial    the same predictor with no feeder thread (read, preprocess, infer, postprocess in turn)
  bare      bare session.run on one preprocessed frame (the floor)
Configurations are interleaved and repeated; medians are reported, with the process' CPU time per
frame (all threads), which shows what spinning costs the rest of a small device.

    python benchmarks/ort_threads.py --model yolov8n.yaml --sizes 640,480x640 --repeat 3

Writes ort_threads.md and ort_threads.json to --output.

    python benchmarks/ort_threads.py --smoke    # 64x64, default threads, spinning on and off, 5 frames, 1 repeat

--smoke proves the script end to end in seconds (every runner, both spinning settings) and writes to a
temporary folder; explicit options still win over its values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yolo_edge_tools import bench, bench_worker, samples

SPINNING = {"on": "1", "off": "0"}
MODES = ("pipeline", "serial", "bare")
SMOKE = {"sizes": "64", "threads": "0", "spinning": "on,off", "frames": 5, "warmup": 1, "repeat": 1,
         "output": str(Path(tempfile.gettempdir()) / "yolo-edge-smoke" / "ort-threads")}


def session_with(backend, threads: int, spinning: str) -> None:
    """Replace an OnnxBackend's session by one with these thread settings (all else as the backend's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", SPINNING[spinning])
    providers = backend.session.get_providers()
    backend.session = None
    backend.session = ort.InferenceSession(str(backend.path), options, providers=providers)


def worker(spec_path: str) -> int:
    def backend_for(spec: dict[str, Any]):
        backend = bench_worker.load_backend(spec)
        session_with(backend, spec["threads"], spec["spinning"])
        return backend

    def predictor_for(spec: dict[str, Any]):
        from yolo_edge.predictor import PostprocessSettings, Predictor

        return Predictor(backend_for(spec), PostprocessSettings.from_config(bench_worker.config_for(spec)))

    runners = {
        "pipeline": lambda spec, rec: bench_worker.run_pipeline(spec, rec, predictor_for),
        "serial": lambda spec, rec: bench_worker.run_serial(spec, rec, predictor_for),
        "bare": lambda spec, rec: bench_worker.run_bare(spec, rec, backend_for),
    }
    return bench_worker.main([spec_path], runners)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=f"a short run proving the script works: {SMOKE}")
    parser.add_argument("--model", default="yolov8n.yaml", help="ONNX file or architecture name (default: %(default)s)")
    parser.add_argument("--class-bias", default="none",
                        help="architecture names: random head bias; 'none' = few boxes, light NMS (default: none)")
    parser.add_argument("--sizes", default="640,480x640", help="input sizes (default: %(default)s)")
    parser.add_argument("--threads", default="1,2,0", help="intra-op thread counts, 0 = default (default: %(default)s)")
    parser.add_argument("--spinning", default="on,off", help="on, off or both (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=60, help="measured frames per run (default: 60)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up frames per run (default: 5)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats (default: 3)")
    parser.add_argument("--modes", default=",".join(MODES), help="runners (default: %(default)s)")
    parser.add_argument("--quiet", type=float, default=0.0, metavar="PERCENT",
                        help="wait for, and rerun until, other processes use < PERCENT of the CPU (see yolo-edge "
                             "bench --quiet; default: 0, off)")
    parser.add_argument("--output", default="benchmarks/results/ort-threads", help="output folder")
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke values become the defaults; options given explicitly keep theirs
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
    return args


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker(sys.argv[2])
    args = parse_args()

    sizes = bench.parse_sizes(args.sizes)
    threads = bench.parse_threads(args.threads)
    spinning = bench.parse_list("--spinning", args.spinning, tuple(SPINNING))
    pairs = bench.resolve_models([args.model], sizes, ["onnx"], "cpu", False, bench.parse_class_bias(args.class_bias))
    jobs = []
    modes = bench.parse_list("--modes", args.modes, MODES)
    for (model, size), count, spin, mode in itertools.product(pairs, threads, spinning, modes):
        jobs.append((bench.Job(model, size, mode, count), spin))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        source = str(samples.make_video(workdir / "video.avi", args.warmup + args.frames, (480, 640)))
        progress = bench.Progress(len(jobs) * args.repeat)
        index = 0
        for _ in range(args.repeat):
            for job, spin in jobs:
                index += 1
                spec = {"source": source, "frames": args.frames, "warmup": args.warmup, "device": "cpu",
                        "spinning": spin, "runtime": "onnxruntime"}  # ONNX Runtime's threads, whatever auto picks
                result = bench.run_quietly(job, spec, workdir, index, 600, args.quiet, 300,
                                           (str(Path(__file__).resolve()), "--worker"))
                job.runs.append(result)
                print(progress.line(f"{job.describe()} spinning={spin}: {bench.outcome(result)}"), flush=True)

    rows = [{"model": job.model.label, "size": list(job.size), "threads": job.threads, "spinning": spin,
             "mode": job.mode, "summary": bench.median_summary(job.runs), "runs": job.runs} for job, spin in jobs]
    from yolo_edge_tools import bench_report

    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": bench_report.environment(),
              "command": " ".join(sys.argv), "rows": rows}
    (output / "ort_threads.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (output / "ort_threads.md").write_text(text)
    print(text)
    return 0


def markdown(report: dict[str, Any]) -> str:
    from yolo_edge_tools import bench_report

    rows = report["rows"]
    lines = [f"# ONNX Runtime thread settings — {report['created']}", "",
             f"Machine: {bench_report.machine_line(report['environment'])}.", "", f"Command: `{report['command']}`", "",
             "Median over repeats of: end-to-end ms per frame (1000/FPS) for each runner, and the pipeline "
             "process' CPU ms per frame (all threads). Lower is better.", "",
             "| input H×W | threads | spinning | pipeline ms | serial ms | bare ms | pipeline / bare | "
             "pipeline CPU ms/frame | bare CPU ms/frame | others' CPU % |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((tuple(r["size"]), r["threads"], r["spinning"]) for r in rows))
    for size, threads, spin in keys:
        by_mode = {r["mode"]: r["summary"] for r in rows
                   if (tuple(r["size"]), r["threads"], r["spinning"]) == (size, threads, spin)}
        if any("error" in s for s in by_mode.values()):
            lines.append(f"| {size[0]}×{size[1]} | {threads or 'default'} | {spin} | error |||||||")
            continue
        pipe, serial, bare = (by_mode.get(mode) for mode in MODES)
        others = [run["other_cpu_percent"] for r in rows if (tuple(r["size"]), r["threads"], r["spinning"]) ==
                  (size, threads, spin) for run in r["runs"] if run.get("other_cpu_percent") is not None]
        ratio = f"{pipe['frame_ms'] / bare['frame_ms']:.3f}" if pipe and bare else "–"
        lines.append(f"| {size[0]}×{size[1]} | {threads or 'default'} | {spin} | {_cell(pipe, 'frame_ms', 1)} | "
                     f"{_cell(serial, 'frame_ms', 1)} | {_cell(bare, 'frame_ms', 1)} | {ratio} | "
                     f"{_cell(pipe, 'cpu_ms_per_frame', 0)} | {_cell(bare, 'cpu_ms_per_frame', 0)} | "
                     f"{statistics.median(others) if others else 0:.0f} |")
    return "\n".join(lines) + "\n"


def _cell(summary: dict[str, Any] | None, key: str, digits: int) -> str:
    return "–" if summary is None else f"{summary[key]:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
