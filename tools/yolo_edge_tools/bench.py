"""`yolo-edge bench`: the latency table for models × formats × input sizes, measured honestly.

Every configuration runs in a process of its own (`python -m yolo_edge_tools.bench_worker`), so peak
memory and the time from process start to the first result are those a fresh deployment sees.
The measured path is the component's own: the frame feeder thread reads and preprocesses frame N+1
while the predictor infers frame N, then the frame message is built and JSON-encoded. Warm-up
frames are left out. Optional extra rows: `--bare` (the runtime's bare session.run on one
preprocessed tensor, same threads: the floor) and `--compare-ultralytics` (Ultralytics' own
predictor on the same model file and video, and, where OpenVINO is installed, on Ultralytics' own
OpenVINO export of the same weights: the fair peer on Intel CPUs).

`.onnx` models run in each runtime of `--runtimes` (onnxruntime, openvino, auto: the component's config
key `runtime`), one row per runtime; every row names the runtime (and precision) it actually ran on.

Models are files (.onnx, .pt, .engine/.trt, *_openvino_model/ folders) or Ultralytics architecture
names such as yolov8n.yaml, which are built with RANDOM weights and exported at each size (boxes are
meaningless, timings are real). Writes bench.md (tables), bench.json (every run, the environment) and bench.png (chart).

With `--streams 1,2,4,8` it measures several cameras in one component instead, batched and unbatched
side by side (`bench_streams`), and writes bench-streams.md and bench-streams.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Tuple

from yolo_edge import __version__
from yolo_edge.backends import RUNTIMES, ModelLoadError, format_for
from yolo_edge.config import Config, ConfigError

from . import samples

DEFAULT_SIZES = "640,480x640,320,224"
ARCHITECTURE_SUFFIXES = (".yaml", ".yml")
# --formats for architecture names -> (Ultralytics export format, file extension)
# ("openvino": Ultralytics' OpenVINO IR folder, which our rows load as the model too)
EXPORTS = {"onnx": ("onnx", ".onnx"), "pt": ("pt", ".pt"), "engine": ("engine", ".engine"),
           "openvino": ("openvino", "_openvino_model")}
FORMAT_TITLES = {"onnx": "ONNX", "pytorch": "PyTorch", "tensorrt": "TensorRT", "openvino": "OpenVINO IR"}
RUNNER_TITLES = {"pipeline": "", "serial": "serial", "bare": "bare", "ultralytics": "Ultralytics",
                 "streams": "streams"}
OUR_MODES = ("pipeline", "serial")
# --ultralytics-openvino-precision: Ultralytics' OpenVINO predictor as shipped (the CPU plugin's default
# precision: bf16 on CPUs with avx512_bf16 or AMX) and/or forced to f32, to compare at our precision.
ULTRALYTICS_OPENVINO_PRECISIONS = ("default", "f32")


def default_runtime() -> str:
    """The component's own default for the config key `runtime` (what an unconfigured device runs)."""
    return str(next(f.default for f in fields(Config) if f.name == "runtime"))
CACHE = Path(os.environ.get("YOLO_EDGE_BENCH_CACHE", Path.home() / ".cache" / "yolo-edge" / "bench"))


@dataclass(frozen=True)
class ModelFile:
    """One model file to measure, with where it came from."""

    label: str  # e.g. "yolov8n" (shown in tables)
    path: Path
    format: str  # onnx | pytorch | tensorrt
    random_weights: bool = False
    architecture: str | None = None
    fixed_size: tuple[int, int] | None = None  # None: accepts any size

    @property
    def title(self) -> str:
        return f"{self.label} {FORMAT_TITLES.get(self.format, self.format)}"


@dataclass
class Job:
    """One configuration: a model at one size, run by one runner with one thread setting."""

    model: ModelFile
    size: tuple[int, int]
    mode: str
    threads: int | None  # None: the runner's own default (Ultralytics)
    runtime: str | None = None  # the config key `runtime` for an .onnx model; None: not applicable
    openvino_precision: str | None = None  # Ultralytics on an OpenVINO IR: one of ULTRALYTICS_OPENVINO_PRECISIONS
    column: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runner(self) -> str:
        return RUNNER_TITLES[self.mode]

    def describe(self) -> str:
        threads = "" if self.threads is None else f" threads={self.threads or 'default'}"
        runtime = "" if self.runtime is None else f" runtime={self.runtime}"
        precision = "" if self.openvino_precision is None else f" precision={self.openvino_precision}"
        return f"{self.model.title} {size_slug(self.size)} {self.mode}{runtime}{precision}{threads}"

    def entry(self) -> dict[str, Any]:
        """What the report says about this configuration, besides its results."""
        return {"column": self.column, "model": self.model.label, "format": self.model.format, "mode": self.mode,
                "runner": self.runner or "yolo-edge", "path": str(self.model.path), "size": list(self.size),
                "threads": self.threads, "random_weights": self.model.random_weights, "runtime": self.runtime,
                "openvino_precision": self.openvino_precision}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure latency, FPS, memory and start-up per model, format and input size",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="model files (.onnx .pt .engine .trt) or architecture names (yolov8n.yaml, "
                             "yolov8n-seg.yaml: random weights, exported per size)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="input sizes, HxW or one number for square (default: %(default)s)")
    parser.add_argument("--formats", default="onnx",
                        help="formats to export architecture names to: onnx, pt, engine, openvino (Ultralytics' "
                             "OpenVINO IR folder, loaded as the model by our rows too) (default: %(default)s)")
    parser.add_argument("--runtimes", default=None, metavar="RUNTIME,...",
                        help="for .onnx models: the config key `runtime` per row, comma-separated: "
                             f"{', '.join(RUNTIMES)}; one row (own process) each (default: the component's "
                             f"default, {default_runtime()})")
    parser.add_argument("--class-bias", default="-1.0", metavar="FLOAT|none",
                        help="architecture names: class-logit bias of the random head. The default -1.0 "
                             "makes every anchor a candidate (the heaviest NMS); 'none' keeps Ultralytics' "
                             "initialisation (no detections, the lightest) (default: %(default)s)")
    parser.add_argument("--source", help="video file to read (default: a generated MJPG video)")
    parser.add_argument("--video-size", default="480x640", help="HxW of the generated video (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=100, help="measured frames per configuration (default: 100)")
    parser.add_argument("--warmup", type=int, default=10, help="frames run first and left out (default: 10)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every configuration N times, interleaved; medians are reported (default: 1)")
    parser.add_argument("--threads", default="0",
                        help="runtime CPU threads to try, comma-separated; 0 = runtime default (default: 0)")
    parser.add_argument("--modes", default="pipeline",
                        help="our runners: pipeline (feeder thread overlapping inference, as the component "
                             "runs) and/or serial (no overlap) (default: %(default)s)")
    parser.add_argument("--bare", action="store_true",
                        help="add the bare session.run baseline of the same model and threads")
    parser.add_argument("--precision", default=None,
                        help="the component's config key `precision` for our rows (e.g. fp32, bf16; default: "
                             "its default)")
    parser.add_argument("--performance", default=None,
                        help="the component's config key `performance` for our rows: latency, throughput or auto "
                             "(default: its default, auto)")
    parser.add_argument("--compare-ultralytics", action="store_true",
                        help="add Ultralytics' own predictor on the same model file and video, and (architecture "
                             "names, with openvino installed) on Ultralytics' own OpenVINO export of the weights")
    parser.add_argument("--ultralytics-openvino-precision", default="default", metavar="default|f32,...",
                        help="Ultralytics' OpenVINO rows: 'default' (as Ultralytics runs it: the CPU plugin's "
                             "default precision, bf16 on CPUs with bf16) and/or 'f32' (forced, to compare at "
                             "our f32) (default: %(default)s)")
    parser.add_argument("--no-messages", action="store_true",
                        help="do not build and encode the frame message per frame (it is on by default, "
                             "as in the component)")
    parser.add_argument("--quiet", type=float, default=0.0, metavar="PERCENT",
                        help="on a shared machine: wait (up to --quiet-wait s) until other processes use less "
                             "than PERCENT of the CPU before each run, and rerun (up to twice) a run during "
                             "which they used more; the quietest attempt is kept (default: 0, off)")
    parser.add_argument("--quiet-wait", type=float, default=120.0, metavar="SECONDS",
                        help="longest wait for quiet before a run (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--half", action="store_true", help="FP16 where the backend supports it (and engine export)")
    parser.add_argument("--output", default="bench-results", help="folder for bench.md/json/png (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per configuration (default: 600)")
    parser.add_argument("--streams", metavar="N,N,...",
                        help="several cameras in one component instead: for each stream count N, N looping "
                             "copies of the video through one Controller, batched (batch_size 0) and unbatched "
                             "(batch_size 1) side by side; --frames and --warmup are per stream. Architecture "
                             "names are exported with a dynamic batch. Writes bench-streams.md/json")
    parser.set_defaults(handler=run)


def size_slug(size: tuple[int, int]) -> str:
    """HxW with an ASCII x, for file names and log lines (bench_report.size_label is the table's)."""
    return f"{size[0]}x{size[1]}"


def parse_size(text: str, flag: str = "--sizes") -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ConfigError(flag, text, "sizes like 640, 480x640 (HxW), multiples of 32") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or any(n < 32 or n > 4096 or n % 32 for n in numbers):
        raise ConfigError(flag, text, "sizes like 640, 480x640 (HxW), multiples of 32 from 32 to 4096")
    return numbers[0], numbers[1]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = [parse_size(part.strip()) for part in text.split(",") if part.strip()]
    if not sizes:
        raise ConfigError("--sizes", text, "at least one size, e.g. 640,480x640")
    return list(dict.fromkeys(sizes))


def parse_list(flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if bad or not items:
        raise ConfigError(flag, text, "a comma-separated list of " + ", ".join(allowed))
    return list(dict.fromkeys(items))


def parse_threads(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError("--threads", text, "comma-separated thread counts, 0 = runtime default") from None
    if not values or any(v < 0 or v > 256 for v in values):
        raise ConfigError("--threads", text, "comma-separated thread counts from 0 to 256, 0 = runtime default")
    return list(dict.fromkeys(values))


def parse_class_bias(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError("--class-bias", text, "a number such as -1.0, or 'none'") from None


def is_architecture(name: str) -> bool:
    return name.lower().endswith(ARCHITECTURE_SUFFIXES)


def build_architecture(name: str, fmt: str, size: tuple[int, int], half: bool = False,
                       class_bias: float | None = -1.0, max_batch: int = 1) -> Path:
    """A random-weights model of `name` exported for `size`, cached by Ultralytics version.
    `max_batch` > 1: exported with a dynamic batch (an engine's profile up to that batch)."""
    from .modelgen import build_model, export_model, offline_guards, save_checkpoint

    offline_guards()
    import ultralytics

    stem = Path(name).stem
    folder = CACHE / f"ultralytics-{ultralytics.__version__}" / f"class-bias-{class_bias}"
    checkpoint = folder / f"{stem}.pt"
    if not checkpoint.exists():
        save_checkpoint(build_model(name, class_bias=class_bias), checkpoint)
    export_format, suffix = EXPORTS[fmt]
    if export_format == "pt":
        return checkpoint
    dynamic = f"-dynamic{max_batch}" if max_batch > 1 else ""
    target = folder / f"{stem}-{size_slug(size)}{'-fp16' if half else ''}{dynamic}{suffix}"
    if not target.exists():
        kwargs: dict[str, Any] = {"half": True} if half and export_format in ("engine", "openvino") else {}
        if max_batch > 1:
            kwargs.update(dynamic=True, batch=max_batch)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            copy = Path(scratch) / checkpoint.name
            copy.write_bytes(checkpoint.read_bytes())  # Ultralytics writes exports beside the checkpoint
            export_model(copy, export_format, size, target, **kwargs)
    return target


def probe_fixed_size(path: Path, fmt: str, device: str) -> tuple[int, int] | None:
    """The input size a model file is fixed to, or None when it takes any size."""
    if fmt == "pytorch":
        return None
    from yolo_edge.backends import BackendOptions, load_backend

    backend = load_backend(path, BackendOptions(device=device))
    try:
        if backend.info.dynamic:
            return None
        height, width = backend.info.input_shape
        return height, width
    finally:
        backend.close()


def resolve_models(names: list[str], sizes: list[tuple[int, int]], formats: list[str], device: str,
                   half: bool, class_bias: float | None = -1.0, say=print,
                   max_batch: int = 1) -> list[tuple[ModelFile, tuple[int, int]]]:
    """(model file, size) pairs to measure; architectures are built and exported per size (with a
    dynamic batch up to `max_batch` when it is > 1)."""
    pairs: list[tuple[ModelFile, tuple[int, int]]] = []
    for name in names:
        if is_architecture(name):
            say(f"{name}: an architecture, built with RANDOM weights (no download) and exported per size; "
                "its boxes are meaningless, its timings are real")
            for fmt in formats:
                for size in sizes:
                    say(f"  preparing {Path(name).stem} {fmt} {size_slug(size)} ...")
                    path = build_architecture(name, fmt, size, half, class_bias, max_batch)
                    model_format = format_for(path)
                    pairs.append((ModelFile(Path(name).stem, path, model_format, True, name,
                                            None if model_format == "pytorch" else size), size))
            continue
        path = Path(name).expanduser()
        model_format = format_for(path)  # raises ModelLoadError naming the extension
        if not (path.is_dir() if model_format == "openvino" else path.is_file()):
            raise ModelLoadError(str(path), "folder not found" if model_format == "openvino" else "file not found")
        fixed = probe_fixed_size(path, model_format, device)
        model = ModelFile(path.stem, path.resolve(), model_format, fixed_size=fixed)
        usable = [size for size in sizes if fixed is None or size == fixed]
        if fixed is not None and not usable:
            say(f"{path}: fixed at {size_slug(fixed)} (not in --sizes); measuring it at that size only. "
                "Export it at other sizes with `yolo-edge export` to fill the table")
            usable = [fixed]
        elif fixed is not None and len(usable) < len(sizes):
            say(f"{path}: fixed at {size_slug(fixed)}; other sizes are skipped for it")
        pairs.extend((model, size) for size in usable)
    return pairs


Peers = Dict[Tuple[str, Tuple[int, int]], ModelFile]  # (label, size) -> Ultralytics' OpenVINO IR of those weights


def plan_jobs(pairs: list[tuple[ModelFile, tuple[int, int]]], modes: list[str], threads: list[int],
              bare: bool, ultralytics: bool, runtimes: list[str] | None = None,
              openvino_peers: Peers | None = None, openvino_precisions: tuple[str, ...] = ("default",)) -> list[Job]:
    """The configurations to run: ours (one per runtime for .onnx models) and bare per thread count, then
    Ultralytics on the same file and, from `openvino_peers`, on its own OpenVINO export of the weights."""
    runtimes = runtimes or [default_runtime()]
    peers = openvino_peers or {}
    jobs: list[Job] = []
    for model, size in pairs:
        model_runtimes: list[str | None] = list(runtimes) if model.format == "onnx" else [None]
        for count in threads:
            for runtime in model_runtimes:
                jobs.extend(Job(model, size, mode, count, runtime) for mode in modes)
                if bare:
                    jobs.append(Job(model, size, "bare", count, runtime))
        if not ultralytics:
            continue
        ir_peer = model if model.format == "openvino" else peers.get((model.label, size))
        if model.format != "openvino":
            jobs.append(Job(model, size, "ultralytics", None))
        if ir_peer is not None:
            jobs.extend(Job(ir_peer, size, "ultralytics", None, openvino_precision=precision)
                        for precision in openvino_precisions)
    name_columns(jobs, many_threads=len(threads) > 1, many_runtimes=len(runtimes) > 1)
    return jobs


def name_columns(jobs: list[Job], many_threads: bool, many_runtimes: bool) -> None:
    """Each job's table column: model format, then runtime, runner, precision and threads where they vary."""
    forced_precision = any(job.openvino_precision not in (None, "default") for job in jobs)
    for job in jobs:
        parts = [job.model.title]
        if many_runtimes and job.runtime is not None:
            parts.append(f"· {job.runtime}")
        if job.runner:
            parts.append(f"· {job.runner}")
        if forced_precision and job.openvino_precision is not None:
            parts.append(f"· {job.openvino_precision}")
        if many_threads and job.threads is not None:
            parts.append(f"· threads={job.threads or 'default'}")
        job.column = " ".join(parts)


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def openvino_peers(pairs: list[tuple[ModelFile, tuple[int, int]]], half: bool, class_bias: float | None,
                   say=print) -> Peers:
    """Ultralytics' own OpenVINO export of each architecture's weights at each size (cached beside the
    other exports), for models that are not such an export already; empty without openvino."""
    if not openvino_installed():
        say("note: openvino is not installed: no Ultralytics OpenVINO rows (pip install openvino)")
        return {}
    have_ir = {(model.label, size) for model, size in pairs if model.format == "openvino"}
    peers: Peers = {}
    for model, size in pairs:
        key = (model.label, size)
        if model.architecture is None or model.format == "openvino" or key in have_ir or key in peers:
            continue
        say(f"  preparing {model.label} openvino {size_slug(size)} (Ultralytics' own OpenVINO export) ...")
        path = build_architecture(model.architecture, "openvino", size, half, class_bias)
        peers[key] = ModelFile(model.label, path, "openvino", True, model.architecture, size)
    return peers


def worker_environment() -> dict[str, str]:
    """The worker must import this very package even when it is not installed."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_VERBOSE", "False")
    return env


WORKER_COMMAND = ("-m", "yolo_edge_tools.bench_worker")


def run_worker(job: Job, spec: dict[str, Any], workdir: Path, index: int, timeout: float,
               worker: tuple[str, ...] = WORKER_COMMAND) -> dict[str, Any]:
    """Run one configuration in a fresh process (`python *worker SPEC`); its result, or one with `error`."""
    spec_path = workdir / f"spec-{index}.json"
    result_path = workdir / f"result-{index}.json"
    result_path.unlink(missing_ok=True)
    threads = {} if job.threads is None else {"threads": job.threads}
    extra = {key: value for key, value in (("runtime", job.runtime), ("openvino_precision", job.openvino_precision))
             if value is not None}
    spec_path.write_text(json.dumps({**spec, **threads, **extra, "mode": job.mode, "model": str(job.model.path),
                                     "size": list(job.size), "result": str(result_path),
                                     "spawned_at": time.time()}))
    command = [sys.executable, *worker, str(spec_path)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                                   env=worker_environment(), check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s (raise --timeout)"}
    if result_path.exists():
        result: dict[str, Any] = json.loads(result_path.read_text())
        if completed.returncode and "error" not in result:
            result["error"] = f"worker exited with {completed.returncode}"
        return result
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return {"error": f"worker exited with {completed.returncode}: " + " | ".join(tail)}


QUIET_RETRIES = 2


def others_cpu_percent(sample_s: float = 1.0) -> float | None:
    """CPU used by all processes over `sample_s` (this one idles meanwhile), in % of all cores."""
    from .bench_worker import system_busy_seconds

    start = system_busy_seconds()
    time.sleep(sample_s)
    end = system_busy_seconds()
    if start is None or end is None:
        return None
    return 100 * (end - start) / (sample_s * (os.cpu_count() or 1))


def wait_for_quiet(limit: float, max_wait: float) -> float | None:
    """Wait until other processes use less than `limit` % of the CPU, for at most `max_wait` s."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = others_cpu_percent()
        if busy is None or busy < limit or time.monotonic() >= deadline:
            return busy
        time.sleep(1.0)


def run_quietly(job: Job, spec: dict[str, Any], workdir: Path, index: int, timeout: float, quiet: float,
                quiet_wait: float, worker: tuple[str, ...] = WORKER_COMMAND) -> dict[str, Any]:
    """`run_worker`, and with `quiet` > 0: wait for quiet first, rerun noisy runs, keep the quietest."""
    attempts: list[dict[str, Any]] = []
    for _ in range(1 + (QUIET_RETRIES if quiet > 0 else 0)):
        if quiet > 0:
            wait_for_quiet(quiet, quiet_wait)
        result = run_worker(job, spec, workdir, index, timeout, worker)
        attempts.append(result)
        noise = result.get("other_cpu_percent")
        if quiet <= 0 or "error" in result or noise is None or noise <= quiet:
            break
    best = min(attempts, key=lambda r: r.get("other_cpu_percent") or 0.0)
    if len(attempts) > 1:
        best["attempts"] = len(attempts)
    return best


def median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric medians over the successful runs of one configuration."""
    good = [run for run in runs if "error" not in run]
    if not good:
        return {"error": runs[-1].get("error", "no run") if runs else "no run"}

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    summary: dict[str, Any] = {"runs": len(good)}
    for key in ("fps", "frame_ms", "first_result_s", "peak_rss_mb", "cpu_ms_per_frame", "detections_per_frame",
                "frames", "other_cpu_percent"):
        values = [run[key] for run in good if run.get(key) is not None]
        if values:
            summary[key] = med(values)
    summary["startup"] = {key: med([run["startup"][key] for run in good]) for key in good[0]["startup"]}
    summary["latency_ms"] = {
        stage: {stat: med([run["latency_ms"][stage][stat] for run in good]) for stat in stats}
        for stage, stats in good[0]["latency_ms"].items()}
    for key in ("info", "bare_call", "note", "device_frames"):
        if key in good[-1]:
            summary[key] = good[-1][key]
    if len(good) < len(runs):
        summary["failed_runs"] = len(runs) - len(good)
    return summary


class Progress:
    """A plain-text progress bar: one line per finished configuration."""

    def __init__(self, total: int, width: int = 20) -> None:
        self.total = total
        self.width = width
        self.done = 0
        self.started = time.monotonic()

    def line(self, text: str) -> str:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        return (f"[{bar}] {self.done:>{len(str(self.total))}}/{self.total} "
                f"{_clock(elapsed)} elapsed, ~{_clock(left)} left | {text}")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def outcome(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    total = result["latency_ms"]["total"]["p50"]
    noise = result.get("other_cpu_percent")
    return (f"{total:.1f} ms p50 total, {result['frame_ms']:.1f} ms/frame, {result['fps']:.1f} FPS, "
            f"on {runtime_label(result.get('info') or {})}, "
            f"first result {result['first_result_s']:.2f} s, peak {result['peak_rss_mb']:.0f} MB"
            + ("" if noise is None else f", others' CPU {noise:.0f}%"))


def parse_config_value(flag: str, key: str, value: str | None) -> str | None:
    """`flag`'s value checked by the component's own parser of config key `key`; None: not given."""
    if value is None:
        return None
    try:
        Config.from_mapping({key: value})
    except ConfigError as exc:
        raise ConfigError(flag, value, exc.allowed) from None
    return value


def runtime_label(info: dict[str, Any]) -> str:
    """The runtime a row ran on, with its precision where the worker found one, and how many frames it
    ran side by side where more than one."""
    runtime = str(info.get("runtime") or "?")
    precision = info.get("precision")
    label = runtime if not precision or str(precision) in runtime else f"{runtime}, {precision}"
    concurrency = int(info.get("concurrency") or 1)
    return label if concurrency <= 1 else f"{label}, {concurrency} frames at once"


@dataclass(frozen=True)
class Options:
    """The options every bench run parses and checks the same way."""

    sizes: list[tuple[int, int]]
    formats: list[str]
    threads: list[int]
    video_size: tuple[int, int]
    class_bias: float | None
    runtimes: list[str] = field(default_factory=list)
    openvino_precisions: tuple[str, ...] = ("default",)
    precision: str | None = None  # the config key `precision` for our rows; None: the component's default
    performance: str | None = None  # the config key `performance` for our rows; None: the component's default

    def config_keys(self) -> dict[str, str]:
        """The component's config keys these options set for our rows (precision, performance) where given."""
        return {key: value for key, value in (("precision", self.precision), ("performance", self.performance))
                if value is not None}

    @classmethod
    def parse(cls, args: argparse.Namespace, urls: bool = False) -> Options:
        """`urls`: --source may also be a stream URL (rtsp://, http://...)."""
        options = cls(parse_sizes(args.sizes), parse_list("--formats", args.formats, tuple(EXPORTS)),
                      parse_threads(args.threads), parse_size(args.video_size, "--video-size"),
                      parse_class_bias(args.class_bias), parse_list("--runtimes", args.runtimes or default_runtime(),
                                                                    RUNTIMES),
                      tuple(parse_list("--ultralytics-openvino-precision", args.ultralytics_openvino_precision,
                                       ULTRALYTICS_OPENVINO_PRECISIONS)),
                      parse_config_value("--precision", "precision", args.precision),
                      parse_config_value("--performance", "performance", args.performance))
        for flag, value, low in (("--frames", args.frames, 1), ("--warmup", args.warmup, 0),
                                 ("--repeat", args.repeat, 1)):
            if value < low:
                raise ConfigError(flag, value, f"an integer >= {low}")
        if args.source and not Path(args.source).is_file() and not (urls and is_url(args.source)):
            raise ConfigError("--source", args.source, "an existing video file" + (" or a stream URL" if urls else ""))
        return options


def is_url(source: str) -> bool:
    return "://" in source


def prepare_source(args: argparse.Namespace, video_size: tuple[int, int], workdir: Path) -> tuple[str, dict[str, Any]]:
    """The video to read: --source, or a generated MJPG video of warm-up + measured frames; and how the
    report describes it."""
    if args.source and is_url(args.source):
        return args.source, {"path": args.source}
    if args.source:
        path = str(Path(args.source).resolve())
        return path, {"path": path}
    frames = args.warmup + args.frames
    source = str(samples.make_video(workdir / "bench.avi", frames, video_size))
    return source, {"generated": True, "frames": frames, "size": list(video_size), "codec": "MJPG"}


def report_head(args: argparse.Namespace) -> dict[str, Any]:
    """The fields every report starts with: what made it, when, how and where."""
    from . import bench_report

    return {"schema": 1, "tool": f"yolo-edge bench {__version__}", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command_line(args), "environment": bench_report.environment()}


def run(args: argparse.Namespace) -> int:
    if args.streams:
        from . import bench_streams

        return bench_streams.run(args)
    from . import bench_report

    options = Options.parse(args)
    sizes, threads, class_bias = options.sizes, options.threads, options.class_bias
    modes = parse_list("--modes", args.modes, OUR_MODES)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        pairs = resolve_models(args.models, sizes, options.formats, args.device, args.half, class_bias)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    peers = openvino_peers(pairs, args.half, class_bias) if args.compare_ultralytics else {}
    jobs = plan_jobs(pairs, modes, threads, args.bare, args.compare_ultralytics, options.runtimes, peers,
                     options.openvino_precisions)

    with tempfile.TemporaryDirectory(prefix="yolo-edge-bench-") as tmp:
        workdir = Path(tmp)
        source, source_info = prepare_source(args, options.video_size, workdir)
        spec = {"source": source, "frames": args.frames, "warmup": args.warmup, "device": args.device,
                "half": args.half, "messages": not args.no_messages,
                **options.config_keys()}
        total = len(jobs) * args.repeat
        print(f"{len(jobs)} configurations x {args.repeat} repeat(s), {args.warmup} warm-up + {args.frames} "
              f"measured frames each, every one in its own process")
        progress = Progress(total)
        index = 0
        for repeat in range(args.repeat):
            for job in jobs:
                index += 1
                result = run_quietly(job, spec, workdir, index, args.timeout, args.quiet, args.quiet_wait)
                result["repeat"] = repeat + 1
                job.runs.append(result)
                print(progress.line(f"{job.describe()}: {outcome(result)}"), flush=True)

    report: dict[str, Any] = {
        **report_head(args),
        "settings": {"sizes": [list(s) for s in sizes], "frames": args.frames, "warmup": args.warmup,
                     "repeat": args.repeat, "threads": threads, "modes": modes, "bare": args.bare,
                     "runtimes": options.runtimes, "precision": options.precision,
                     "performance": options.performance,
                     "ultralytics_openvino_precision": list(options.openvino_precisions),
                     "compare_ultralytics": args.compare_ultralytics, "messages": not args.no_messages,
                     "device": args.device, "half": args.half, "source": source_info,
                     "class_bias": class_bias, "quiet_percent": args.quiet},
        "models": model_entries(pairs + [(peer, size) for (_, size), peer in peers.items()]),
        "configurations": [{**job.entry(), "summary": median_summary(job.runs), "runs": job.runs} for job in jobs],
    }
    report["targets"] = bench_report.check_targets(report["configurations"])
    written = bench_report.write_all(report, output)
    print()
    print(bench_report.summary_table(report))
    for path in written:
        print(f"wrote {path}")
    return report_failures(report["configurations"])


def report_failures(configs: list[dict[str, Any]]) -> int:
    """Say which configurations failed, on stderr; the exit code: 1 if any did."""
    failed = [c for c in configs if "error" in c["summary"]]
    for config in failed:
        print(f"error: {config['column']} {size_slug(tuple(config['size']))}: {config['summary']['error']}",
              file=sys.stderr)
    return 1 if failed else 0


def command_line(args: argparse.Namespace) -> str:
    """The invocation, rebuilt from the parsed arguments (defaults left out)."""
    parts = ["yolo-edge", "bench", *args.models, "--sizes", args.sizes, "--frames", str(args.frames),
             "--warmup", str(args.warmup)]
    options = (("--formats", "formats", "onnx"),
               ("--class-bias", "class_bias", "-1.0"), ("--source", "source", None),
               ("--video-size", "video_size", "480x640"), ("--repeat", "repeat", 1), ("--threads", "threads", "0"),
               ("--modes", "modes", "pipeline"), ("--runtimes", "runtimes", None), ("--precision", "precision", None),
               ("--performance", "performance", None),
               ("--ultralytics-openvino-precision", "ultralytics_openvino_precision", "default"),
               ("--quiet", "quiet", 0.0), ("--device", "device", "auto"), ("--streams", "streams", None))
    for flag, name, default in options:
        value = getattr(args, name)
        if value != default:
            parts += [flag, str(value)]
    for flag, name in (("--bare", "bare"), ("--compare-ultralytics", "compare_ultralytics"),
                       ("--no-messages", "no_messages"), ("--half", "half")):
        if getattr(args, name):
            parts.append(flag)
    return " ".join(shlex.quote(part) for part in parts)


def model_entries(pairs: list[tuple[ModelFile, tuple[int, int]]]) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for model, _ in pairs:
        entries.setdefault(str(model.path), {
            "label": model.label, "path": str(model.path), "format": model.format,
            "random_weights": model.random_weights, "architecture": model.architecture,
            "fixed_size": list(model.fixed_size) if model.fixed_size else None})
    return list(entries.values())
