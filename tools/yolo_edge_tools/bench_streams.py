"""`yolo-edge bench --streams 1,2,4,8`: several cameras in one component, batched and unbatched, side by side.

For each model, input size and stream count N, two configurations run, each in a process of its own
(`python -m yolo_edge_tools.bench_streams SPEC`, so peak memory is a fresh process'): the component's
own `Controller`, in-process, with N cameras that each read their own looping copy of the same video
(a `VideoFileSource` per camera) and emit into a collector instead of a broker; batched (`batch_size`
0: one frame per running camera in each model call, capped by what the model takes) and unbatched
(`batch_size` 1). All cameras start with {"status": "start"}; the first `--warmup` × N frames are left
out, then `--frames` × N frames are measured, every one published (`max_publish_rate` 0) and its
message JSON-encoded as the publisher would.

Per configuration: aggregate frames/s (all cameras), per-stream frames/s (min and mean: fairness),
per-frame latency (the message's `latency_ms.total` + `gather_wait_ms`: pre-processing, the batch's
inference, post-processing and the wait for the batch) p50/p90, frame age p90 for live sources, the
mean batch, and peak RSS; derived: aggregate vs one stream's, and memory per extra camera
((RSS(N) - RSS(1)) / (N - 1)). Writes bench-streams.md and bench-streams.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from yolo_edge.backends import ModelLoadError
from yolo_edge.config import MAX_CAMERAS, ConfigError

from . import bench, bench_report, bench_worker

STREAMS_WORKER = ("-m", "yolo_edge_tools.bench_streams")
BATCHINGS = {"batched": 0, "unbatched": 1}  # the column's name -> the configuration's batch_size
# Targets (issue 12): multiplexing loses nothing; an extra camera costs little memory; on a CUDA GPU,
# batching 8 streams pays.
AGGREGATE_VS_ONE_STREAM_MIN = 0.95
MIB_PER_EXTRA_CAMERA_MAX = 25.0
GPU_BATCHED_VS_UNBATCHED_MIN = 2.5
GPU_BATCHED_STREAMS = 8
SHUTDOWN_TIMEOUT_S = 10.0
POLL_S = 0.5

Encode = Callable[[dict[str, Any]], object]


# ---- the parent: plan, run the workers, report ----

@dataclass
class StreamsJob(bench.Job):
    """One configuration: a model at one size serving `streams` cameras, batched or not."""

    streams: int = 1
    batching: str = "batched"

    def describe(self) -> str:
        return f"{super().describe()} x{self.streams} {self.batching}"

    def entry(self) -> dict[str, Any]:
        return {**super().entry(), "streams": self.streams, "batching": self.batching,
                "batch_size": BATCHINGS[self.batching]}


def parse_streams(text: str) -> list[int]:
    try:
        counts = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= count <= MAX_CAMERAS for count in counts):
        raise ConfigError("--streams", text, f"comma-separated stream counts from 1 to {MAX_CAMERAS}, e.g. 1,2,4,8")
    return sorted(set(counts))


def reject_other_runners(args: argparse.Namespace) -> None:
    """The options of the latency table that mean nothing here."""
    for flag, used in (("--bare", args.bare), ("--compare-ultralytics", args.compare_ultralytics),
                       ("--modes", args.modes != "pipeline"), ("--repeat", args.repeat != 1)):
        if used:
            raise ConfigError(flag, True, "not with --streams (each stream count runs batched and unbatched, once)")


def plan_jobs(pairs: list[tuple[bench.ModelFile, tuple[int, int]]], threads: list[int],
              streams: list[int]) -> list[StreamsJob]:
    jobs = [StreamsJob(model, size, "streams", count, streams=n, batching=batching)
            for model, size in pairs for count in threads for n in streams for batching in BATCHINGS]
    for job in jobs:
        job.column = job.model.title + (f" · threads={job.threads or 'default'}" if len(threads) > 1 else "")
    return jobs


def run(args: argparse.Namespace) -> int:
    streams = parse_streams(args.streams)
    reject_other_runners(args)
    options = bench.Options.parse(args, urls=True)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        pairs = bench.resolve_models(args.models, options.sizes, options.formats, args.device, args.half,
                                     options.class_bias, max_batch=max(streams))
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = plan_jobs(pairs, options.threads, streams)
    with tempfile.TemporaryDirectory(prefix="yolo-edge-bench-streams-") as tmp:
        workdir = Path(tmp)
        source, source_info = bench.prepare_source(args, options.video_size, workdir)
        spec = {"source": source, "frames": args.frames, "warmup": args.warmup, "device": args.device,
                "half": args.half, "messages": not args.no_messages, **options.config_keys()}
        print(f"{len(jobs)} configurations, {args.warmup} warm-up + {args.frames} measured frames per stream, "
              "every one in its own process")
        progress = bench.Progress(len(jobs))
        for index, job in enumerate(jobs, 1):
            job_spec = {**spec, "streams": job.streams, "batch_size": BATCHINGS[job.batching]}
            result = bench.run_quietly(job, job_spec, workdir, index, args.timeout, args.quiet, args.quiet_wait,
                                       STREAMS_WORKER)
            job.runs.append(result)
            print(progress.line(f"{job.describe()}: {outcome(result)}"), flush=True)

    configs = [{**job.entry(), "summary": job.runs[-1], "runs": job.runs} for job in jobs]
    derive(configs)
    report: dict[str, Any] = {
        **bench.report_head(args),
        "settings": {"streams": streams, "sizes": [list(s) for s in options.sizes], "frames": args.frames,
                     "warmup": args.warmup, "threads": options.threads, "messages": not args.no_messages,
                     "device": args.device, "half": args.half, "source": source_info,
                     "class_bias": options.class_bias, "quiet_percent": args.quiet},
        "models": bench.model_entries(pairs), "configurations": configs, "targets": check_targets(configs)}
    written = write_all(report, output)
    print()
    print("\n".join(configurations_table(configs)))
    for path in written:
        print(f"wrote {path}")
    return bench.report_failures(configs)


def outcome(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    fps = result["stream_fps"]
    return (f"{result['fps']:.1f} FPS in all, per stream {fps['min']:.1f} min / {fps['mean']:.1f} mean, "
            f"mean batch {result['mean_batch']:.2f}, latency p90 {result['latency_ms']['frame']['p90']:.1f} ms, "
            f"peak {result['peak_rss_mb']:.0f} MB")


def _ok(config: dict[str, Any]) -> bool:
    return "error" not in config["summary"]


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[key] == b[key] for key in ("path", "size", "threads"))


def derive(configs: list[dict[str, Any]]) -> None:
    """Each measured configuration's figures against one stream of the same model, size, threads and
    batching: aggregate FPS ratio and memory per extra camera (under `derived`; None without a 1-stream run)."""
    for config in configs:
        one = next((c for c in configs if _same_setup(c, config) and c["batching"] == config["batching"]
                    and c["streams"] == 1 and _ok(c)), None)
        derived: dict[str, float | None] = {"vs_one_stream": None, "mib_per_extra_camera": None}
        if one is not None and _ok(config):
            s, base = config["summary"], one["summary"]
            derived["vs_one_stream"] = round(s["fps"] / base["fps"], 3) if base["fps"] else None
            if config["streams"] > 1:
                derived["mib_per_extra_camera"] = round((s["peak_rss_mb"] - base["peak_rss_mb"])
                                                        / (config["streams"] - 1), 1)
        config["derived"] = derived


def _on_cuda(config: dict[str, Any]) -> bool:
    return str((config["summary"].get("info") or {}).get("device", "")).startswith("cuda")


def check_targets(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every batched row of more than one stream: aggregate FPS vs one stream's (files only: one live
    stream is held to its camera's frame rate) and memory per extra camera; on a CUDA GPU from 8 streams,
    batched vs unbatched aggregate FPS."""
    checks: list[dict[str, Any]] = []
    for config in configs:
        if config["batching"] != "batched" or config["streams"] < 2 or not _ok(config):
            continue
        base = {"column": config["column"], "size": config["size"], "streams": config["streams"]}
        derived = config["derived"]
        ratio, per_camera = derived["vs_one_stream"], derived["mib_per_extra_camera"]
        if ratio is not None and "age" not in config["summary"]["latency_ms"]:
            checks.append({**base, "check": "aggregate FPS / one stream's", "value": ratio,
                           "target": f">= {AGGREGATE_VS_ONE_STREAM_MIN}", "met": ratio >= AGGREGATE_VS_ONE_STREAM_MIN})
        if per_camera is not None:
            checks.append({**base, "check": "peak RSS per extra camera (MiB)", "value": per_camera,
                           "target": f"<= {MIB_PER_EXTRA_CAMERA_MAX:g}", "met": per_camera <= MIB_PER_EXTRA_CAMERA_MAX})
        unbatched = _partner(configs, config)
        if _on_cuda(config) and config["streams"] >= GPU_BATCHED_STREAMS and unbatched is not None:
            gain = round(config["summary"]["fps"] / unbatched["summary"]["fps"], 3)
            checks.append({**base, "check": "aggregate FPS batched / unbatched", "value": gain,
                           "target": f">= {GPU_BATCHED_VS_UNBATCHED_MIN}", "met": gain >= GPU_BATCHED_VS_UNBATCHED_MIN})
    return checks


def _partner(configs: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any] | None:
    """The other batching's run of the same model, size, threads and stream count, when it succeeded."""
    return next((c for c in configs if _same_setup(c, config) and c["streams"] == config["streams"]
                 and c["batching"] != config["batching"] and _ok(c)), None)


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


TEXT_COLUMNS = frozenset({"model", "configuration", "input H×W", "batching", "check", "target", "met"})


def _table(columns: Sequence[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; columns of numbers are right-aligned."""
    align = ["---" if column in TEXT_COLUMNS else "---:" for column in columns]
    return ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _key_cells(config: dict[str, Any], batching: bool = True) -> list[str]:
    cells = [config["column"], bench_report.size_label(config["size"]), str(config["streams"])]
    return cells + [config["batching"]] if batching else cells


def comparison_table(configs: list[dict[str, Any]]) -> list[str]:
    """Aggregate FPS batched and unbatched side by side, one row per model, size and stream count."""
    rows = []
    for config in (c for c in configs if c["batching"] == "batched"):
        other = next((c for c in configs if _same_setup(c, config) and c["streams"] == config["streams"]
                      and c["batching"] == "unbatched"), None)
        fps = config["summary"].get("fps")
        other_fps = other["summary"].get("fps") if other is not None else None
        ratio = fps / other_fps if fps and other_fps else None
        rows.append([*_key_cells(config, batching=False), _number(fps), _number(other_fps), _number(ratio, 2)])
    return _table(("model", "input H×W", "streams", "batched FPS", "unbatched FPS", "batched / unbatched"), rows)


CONFIGURATION_COLUMNS = ("model", "input H×W", "streams", "batching", "aggregate FPS", "× 1 stream",
                         "per-stream FPS min / mean", "latency p50 / p90 ms", "age p90 ms", "mean batch",
                         "peak RSS MiB", "MiB per extra camera", "CPU ms/frame", "others' CPU %")


def _configuration_cells(config: dict[str, Any]) -> list[str]:
    s = config["summary"]
    if not _ok(config):
        return [*_key_cells(config), f"error: {s['error']}"] + [""] * (len(CONFIGURATION_COLUMNS) - 5)
    latency, derived = s["latency_ms"], config["derived"]
    return [*_key_cells(config), f"{s['fps']:.1f}", _number(derived["vs_one_stream"], 2),
            f"{s['stream_fps']['min']:.1f} / {s['stream_fps']['mean']:.1f}",
            f"{latency['frame']['p50']:.1f} / {latency['frame']['p90']:.1f}",
            _number(latency.get("age", {}).get("p90")), f"{s['mean_batch']:.2f}", f"{s['peak_rss_mb']:.0f}",
            _number(derived["mib_per_extra_camera"]), f"{s['cpu_ms_per_frame']:.1f}",
            _number(s.get("other_cpu_percent"), 0)]


def configurations_table(configs: list[dict[str, Any]]) -> list[str]:
    return _table(CONFIGURATION_COLUMNS, [_configuration_cells(c) for c in configs])


def stages_table(configs: list[dict[str, Any]]) -> list[str]:
    rows = [[*_key_cells(c), *(f"{c['summary']['latency_ms'][stage]['p50']:.1f}" for stage in (*STAGES, "frame"))]
            for c in configs if _ok(c)]
    return _table(("model", "input H×W", "streams", "batching", "preprocess", "inference (the call)", "postprocess",
                   "gather wait", "frame"), rows)


def targets_table(checks: list[dict[str, Any]]) -> list[str]:
    rows = [[c["column"], bench_report.size_label(c["size"]), str(c["streams"]), c["check"], c["target"],
             f"{c['value']:g}", "yes" if c["met"] else "**no**"] for c in checks]
    return _table(("configuration", "input H×W", "streams", "check", "target", "value", "met"), rows)


def notes(configs: list[dict[str, Any]]) -> list[str]:
    lines = [f"- {c['column']} {bench_report.size_label(c['size'])} ×{c['streams']} {c['batching']}: "
             f"{c['summary']['error']}" for c in configs if not _ok(c)]
    fixed = dict.fromkeys(c["column"] for c in configs
                          if _ok(c) and (c["summary"].get("info") or {}).get("max_batch") == 1)
    lines += [f"- {column}: the model takes one frame per call (a fixed batch of 1), so its *batched* rows ran "
              "one frame at a time (mean batch 1). Export it with a dynamic batch (`yolo-edge export --dynamic "
              "--batch N`) to batch." for column in fixed]
    return lines


def markdown(report: dict[str, Any]) -> str:
    configs, settings = report["configurations"], report["settings"]
    lines = [f"# yolo-edge bench --streams — {report['created']}", "",
             f"Machine: {bench_report.machine_line(report['environment'])}.", "",
             f"Command: `{report['command']}`", "",
             "Each configuration ran in its own process: the component's own `Controller` (in-process, its "
             "messages collected instead of published) serving N cameras, each reading its own looping copy "
             f"of {bench_report.describe_source(settings['source'])}, all started by `{{\"status\": \"start\"}}`; "
             f"{settings['warmup']} warm-up frames per stream left out, then {settings['frames']} measured frames "
             "per stream (N × that in all). *batched*: `batch_size` 0, one frame per running camera in each model "
             "call (capped by what the model takes); *unbatched*: `batch_size` 1. Every frame was published "
             f"(`max_publish_rate` 0){' and its message JSON-encoded' if settings['messages'] else ''}.", "",
             *bench_report.random_weights_lines(configs, settings),
             "## Aggregate frames/s, batched vs unbatched", "", *comparison_table(configs), "",
             "## Per configuration", "",
             "*aggregate FPS*: frame messages per second over the measured window, all cameras together; "
             "*× 1 stream*: that over the 1-stream run's (same model, size and batching). *per-stream FPS*: "
             "the slowest camera's and the mean (fairness: equal when no camera is starved). *latency*: per "
             "frame, pre-processing + its batch's inference + post-processing + its wait in the batch gathering "
             "(`latency_ms.total` + `gather_wait_ms`). *age*: capture to inference, live sources only. "
             "*mean batch*: frames per model call. *MiB per extra camera*: (peak RSS − the 1-stream run's) / "
             "(N − 1). *CPU ms/frame*: the process' CPU time per measured frame; *others' CPU %*: what other "
             "processes used meanwhile, in % of all cores.", "",
             *configurations_table(configs), "",
             "## Where a frame's time goes (p50 ms)", "",
             "*inference* is the whole model call of the frame's batch; *gather wait* runs from the frame being "
             "prepared to its batch's call starting: for a file read as fast as it can be, that includes the "
             "frames prepared ahead of it (the feeder keeps up to two per camera), so it grows with the time "
             "a batch takes.", "", *stages_table(configs), ""]
    if report.get("targets"):
        lines += ["## Targets", "", *targets_table(report["targets"]), ""]
    if notes(configs):
        lines += ["## Notes", "", *notes(configs), ""]
    return "\n".join(lines)


def write_all(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "bench-streams.json", folder / "bench-streams.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    return [json_path, md_path]


# ---- the worker: one configuration in its own process ----

def camera_names(streams: int) -> list[str]:
    return [f"cam-{i}" for i in range(1, streams + 1)]


STAGES = ("preprocess", "inference", "postprocess", "gather_wait")


@dataclass(frozen=True)
class FrameRecord:
    camera: str
    stages_ms: dict[str, float]  # STAGES: inference is the batch's call
    age_ms: float | None  # live sources only

    @property
    def latency_ms(self) -> float:
        """Pre-processing + the batch's inference + post-processing + the wait for the batch."""
        return sum(self.stages_ms.values())


class StreamCollector:
    """The controller's `emit`: keeps the frame messages of the measured window, batch by batch.

    Frames of one model call are emitted one after another, and each message says how many frames its
    batch had, so batches are told apart by counting. The window starts when the batch that completes
    the warm-up has been emitted and ends with the batch that completes the measured frames; its
    duration is between those two moments. Called on the controller thread only."""

    def __init__(self, cameras: list[str], warmup: int, frames: int, encode: Encode | None,
                 spawned_at: float) -> None:
        self.cameras = cameras
        self._warmup_frames = max(1, warmup * len(cameras))  # at least one batch: the window needs a start
        self._window_frames = frames * len(cameras)
        self._encode = encode
        self._spawned_at = spawned_at
        self.finished = threading.Event()
        self.error: str | None = None
        self.load_s: float | None = None
        self.first_result_s: float | None = None
        self.window: list[FrameRecord] = []
        self.batches = 0
        self._warmed = 0
        self._batch: list[FrameRecord] = []
        self._left_in_batch = 0
        self._start: tuple[float, float, float | None] | None = None  # wall, own CPU, all processes' busy s
        self._end: tuple[float, float, float | None] | None = None

    def emit(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            self.fail(f"{message.get('code')}: {message.get('message')}")
        elif kind == "status" and message.get("event") == "model_loaded":
            self.load_s = message.get("load_s")
        elif kind == "frame" and not self.finished.is_set():
            self._frame(message)

    def fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        self.finished.set()

    def _frame(self, message: dict[str, Any]) -> None:
        if self._encode is not None:
            self._encode(message)
        if self.first_result_s is None:
            self.first_result_s = round(time.time() - self._spawned_at, 3)
        if not self._left_in_batch:
            self._left_in_batch = int(message["batch_size"])
        self._left_in_batch -= 1
        stages = {stage: message["latency_ms"][stage] for stage in STAGES[:3]}
        stages["gather_wait"] = message.get("gather_wait_ms", 0.0)
        self._batch.append(FrameRecord(message["camera"], stages, message.get("frame_age_ms")))
        if not self._left_in_batch:
            self._batch_done()

    def _batch_done(self) -> None:
        batch, self._batch = self._batch, []
        now = (time.perf_counter(), bench_worker.cpu_seconds(), bench_worker.system_busy_seconds())
        if self._start is None:
            self._warmed += len(batch)
            if self._warmed >= self._warmup_frames:
                self._start = now
            return
        self.window.extend(batch)
        self.batches += 1
        self._end = now
        if len(self.window) >= self._window_frames:
            self.finished.set()

    def wait(self, controller_done: Callable[[float], bool]) -> None:
        """Until the window is complete; raises on an error message or when the controller stops."""
        while not self.finished.wait(POLL_S):
            if controller_done(0):
                self.fail("the controller stopped before the measurement ended")
        if self.error is not None:
            raise RuntimeError(self.error)

    def summary(self) -> dict[str, Any]:
        if self._start is None or self._end is None or not self.window:
            raise RuntimeError("no frame was measured")
        wall = self._end[0] - self._start[0]
        cpu = self._end[1] - self._start[1]
        counts = Counter(record.camera for record in self.window)
        per_stream = [counts[name] / wall for name in self.cameras]
        ages = [record.age_ms for record in self.window if record.age_ms is not None]
        latency = {"frame": bench_worker.percentiles([record.latency_ms for record in self.window])}
        latency.update({stage: bench_worker.percentiles([record.stages_ms[stage] for record in self.window])
                        for stage in STAGES})
        if ages:
            latency["age"] = bench_worker.percentiles(ages)
        start_busy, end_busy = self._start[2], self._end[2]
        return {
            "frames": len(self.window), "window_s": round(wall, 3), "fps": round(len(self.window) / wall, 3),
            "stream_fps": {"min": round(min(per_stream), 3), "mean": round(sum(per_stream) / len(per_stream), 3),
                           "max": round(max(per_stream), 3)},
            "latency_ms": latency, "mean_batch": round(len(self.window) / self.batches, 3), "batches": self.batches,
            "cameras": {name: self._camera(name, wall) for name in self.cameras},
            "cpu_ms_per_frame": round(cpu * 1000 / len(self.window), 3), "first_result_s": self.first_result_s,
            "other_cpu_percent": None if start_busy is None or end_busy is None
            else bench_worker.others_percent(end_busy - start_busy, cpu, wall)}

    def _camera(self, name: str, wall: float) -> dict[str, Any]:
        latencies = [record.latency_ms for record in self.window if record.camera == name]
        figures: dict[str, Any] = {"frames": len(latencies), "fps": round(len(latencies) / wall, 3)}
        if latencies:
            figures["latency_ms"] = bench_worker.percentiles(latencies)
        return figures


def measure_streams(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration: `streams` cameras, each a looping copy of the spec's source, through one
    Controller with the spec's `batch_size`; its figures from the frame messages."""
    from yolo_edge import messages
    from yolo_edge.allocator import keep_freed_memory
    from yolo_edge.controller import Controller

    keep_freed_memory()  # as `yolo-edge run` does
    spawned_at = float(spec.get("spawned_at") or time.time())
    imported = time.time()
    cameras = camera_names(int(spec["streams"]))
    config = bench_worker.config_for(spec, cameras={name: {"source": spec["source"], "loop_source": True}
                                                    for name in cameras},
                                     batch_size=int(spec["batch_size"]), summary_interval_s=0)
    collector = StreamCollector(cameras, int(spec.get("warmup", 10)), int(spec.get("frames", 100)),
                                messages.encode if spec.get("messages", True) else None, spawned_at)
    controller = Controller(config, collector.emit)
    threading.Thread(target=controller.run, name="controller", daemon=True).start()
    controller.submit_command(json.dumps({"status": "start"}).encode())
    try:
        collector.wait(controller.wait_done)
        predictor = controller.predictor
        info = None if predictor is None else {**bench_worker.model_info(predictor.info),
                                               "max_batch": predictor.info.max_batch}
    finally:
        controller.request_shutdown("benchmark done")
        controller.wait_done(SHUTDOWN_TIMEOUT_S)
    return {"streams": len(cameras), "batch_size": config.batch_size, **collector.summary(),
            "peak_rss_mb": bench_worker.peak_rss_mb(), "info": info,
            "startup": {"imports_s": round(imported - spawned_at, 3), "load_s": collector.load_s}}


if __name__ == "__main__":
    sys.exit(bench_worker.main(measure_spec=measure_streams))
