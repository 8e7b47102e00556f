"""One benchmark configuration, measured in a process of its own (started by `yolo-edge bench`).

    python -m yolo_edge_tools.bench_worker SPEC.json

SPEC names the mode, model, input size, source, frame counts and thread setting; the worker writes
its measurements as JSON to the spec's `result` path. A fresh process per configuration keeps peak
memory and start-up time honest: nothing is shared with, or warmed by, another configuration.

Modes:
- `pipeline`: the component's own path, FrameFeeder (reads and preprocesses on its thread) +
  Predictor.infer_and_decode on this thread, plus building and encoding the frame message, exactly
  as the controller does per frame.
- `serial`: the same Predictor with read → preprocess → infer → postprocess on one thread (no
  overlap); for comparing the feeder's overlap against none.
- `bare`: the backend's bare `session.run` (ONNX Runtime) or `infer` (OpenVINO and the rest) on one
  preprocessed tensor, same thread settings and runtime: the floor the pipeline is judged against.
- `ultralytics`: Ultralytics' own predictor, `YOLO(model).predict(source, stream=True, ...)`; on an
  OpenVINO IR folder, spec `openvino_precision` "f32" forces OpenVINO's f32 ("default": as shipped).

Spec `runtime` (auto | onnxruntime | openvino) is the component's config key `runtime` for .onnx models.

Only the standard library is imported at module level so each mode pays only for its own imports.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ultralytics.engine.results import Results

MODES = ("pipeline", "serial", "bare", "ultralytics")
STAGES = ("preprocess", "inference", "postprocess", "total", "message", "frame")
FEED_TIMEOUT_S = 30.0


class Recorder:
    """Collects per-frame stage times after the warm-up, and the end-to-end frame intervals."""

    def __init__(self, warmup: int, frames: int, spawned_at: float) -> None:
        self.warmup = warmup
        self.frames = frames
        self.spawned_at = spawned_at
        self.samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.results = 0
        self.first_result_s: float | None = None
        self.detections = 0
        self._last: float | None = None
        self._measure_start: float | None = None
        self._cpu_start = 0.0
        self.measured_s = 0.0
        self.cpu_s = 0.0
        self._system_start: float | None = None
        self._system_end: float | None = None

    @property
    def done(self) -> bool:
        return self.results >= self.warmup + self.frames

    def result(self, stages: dict[str, float], detections: int) -> None:
        """Call once per result, right after it is complete."""
        now = time.perf_counter()
        self.results += 1
        if self.first_result_s is None:
            self.first_result_s = time.time() - self.spawned_at
        if self.results <= self.warmup:
            self._last = now
            if self.results == self.warmup:
                self._start_clock(now)
            return
        measure_start = self._measure_start
        if measure_start is None:  # no warm-up at all
            measure_start = self._start_clock(now)
        for stage, value in stages.items():
            self.samples[stage].append(value)
        if self._last is not None:
            self.samples["frame"].append((now - self._last) * 1000)
        self._last = now
        self.detections += detections
        self.measured_s = now - measure_start
        self.cpu_s = cpu_seconds() - self._cpu_start
        self._system_end = system_busy_seconds()

    def _start_clock(self, now: float) -> float:
        """Start measuring at `now`; returns it."""
        self._measure_start = now
        self._cpu_start = cpu_seconds()
        self._system_start = system_busy_seconds()
        return now

    def summary(self) -> dict[str, Any]:
        measured = len(self.samples["frame"])
        return {
            "frames": measured,
            "warmup": min(self.warmup, self.results),
            "latency_ms": {stage: percentiles(values) for stage, values in self.samples.items() if values},
            "fps": round(measured / self.measured_s, 3) if self.measured_s > 0 else 0.0,
            "frame_ms": round(self.measured_s * 1000 / measured, 3) if measured else 0.0,
            "first_result_s": round(self.first_result_s, 3) if self.first_result_s is not None else None,
            "cpu_ms_per_frame": round(self.cpu_s * 1000 / measured, 3) if measured else 0.0,
            "detections_per_frame": round(self.detections / measured, 2) if measured else 0.0,
            "other_cpu_percent": self.other_cpu_percent(),
        }

    def other_cpu_percent(self) -> float | None:
        """CPU used by other processes while measuring, in % of all cores: how noisy the run was."""
        if self._system_start is None or self._system_end is None or self.measured_s <= 0:
            return None
        return others_percent(self._system_end - self._system_start, self.cpu_s, self.measured_s)


def others_percent(all_busy_s: float, own_cpu_s: float, wall_s: float) -> float:
    """CPU that other processes used over `wall_s`, in % of all cores, from all processes' busy seconds
    (`system_busy_seconds` deltas) and this process' own CPU seconds."""
    cores = os.cpu_count() or 1
    return round(max(0.0, min(100.0, 100 * (all_busy_s - own_cpu_s) / (wall_s * cores))), 1)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:  # linear interpolation, as numpy.percentile's default
        position = (len(ordered) - 1) * q
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"p50": round(at(0.5), 3), "p90": round(at(0.9), 3), "p99": round(at(0.99), 3),
            "mean": round(sum(ordered) / len(ordered), 3), "min": round(ordered[0], 3)}


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def system_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """Peak resident memory of this process image.

    VmHWM, not getrusage's ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across
    fork + exec, so a worker started by a big parent would report the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def config_for(spec: dict[str, Any], **extra: Any):
    """The component's configuration for the spec (every frame published); `extra`: more keys."""
    from yolo_edge.config import Config

    height, width = spec["size"]
    # runtime, precision and performance only where asked: the component's own defaults otherwise
    asked = {key: spec[key] for key in ("runtime", "precision", "performance") if spec.get(key)}
    return Config.from_mapping({
        "model_loc": spec["model"], "camera_id": spec["source"], "MODEL_HEIGHT": height, "MODEL_WIDTH": width,
        "threads": spec.get("threads", 0), "device": spec.get("device", "auto"), "half": spec.get("half", False),
        "task": spec.get("task", "auto"), "max_publish_rate": 0, **asked, **extra})


def _count(result: Any) -> int:
    try:
        return len(result)
    except TypeError:
        return 0


def _message_encoder(spec: dict[str, Any], predictor, source_description: str, live: bool
                     ) -> Callable[[Any, int], float]:
    """Builds and JSON-encodes the frame message of an inferred frame as the controller and publisher do;
    returns its ms (0.0 with messages off)."""
    from yolo_edge import frame_step, messages

    def encode(inferred, seq: int) -> float:
        if not spec.get("messages", True):
            return 0.0
        start = time.perf_counter()
        message = frame_step.frame_message(inferred, seq=seq, info=predictor.info, source=source_description,
                                           live=live)
        messages.encode(message)
        return (time.perf_counter() - start) * 1000

    return encode


def _stages(prediction, message_ms: float) -> dict[str, float]:
    return {"preprocess": prediction.preprocess_ms, "inference": prediction.inference_ms,
            "postprocess": prediction.postprocess_ms, "total": prediction.total_ms, "message": message_ms}


def load_predictor(spec: dict[str, Any]):
    """The component's own loader for the spec's configuration."""
    from yolo_edge.predictor import load_predictor as load

    return load(config_for(spec))


def run_pipeline(spec: dict[str, Any], recorder: Recorder, load: Callable = load_predictor) -> dict[str, Any]:
    """FrameFeeder + the controller's own per-frame step (`yolo_edge.frame_step`), with as many frames in
    flight as the controller keeps (`FramesInFlight`). Every frame is treated as published: segmentation
    polygons are made and counted in post-processing, as the controller does for a published frame; also
    with messages off, so post-processing stays comparable between runs."""
    from yolo_edge.allocator import keep_freed_memory
    from yolo_edge.frame_step import FramesInFlight, finish_frames
    from yolo_edge.limits import PublishGate
    from yolo_edge.metrics import RollingFPS
    from yolo_edge.pipeline import FeedEnded, FeedFailed, FrameFeeder
    from yolo_edge.sources import open_source

    keep_freed_memory()  # as `yolo-edge run` does
    imported = time.time()
    predictor = load(spec)
    loaded = time.time()
    source = open_source(spec["source"], False)
    feeder = FrameFeeder(source, predictor.prepare).start()
    encode = _message_encoder(spec, predictor, source.description, source.live)
    fps, every_frame = RollingFPS(), PublishGate(0)
    in_flight: FramesInFlight[None] = FramesInFlight()

    def record(ended: list) -> None:
        for batch in ended:
            if recorder.done:
                return
            inferred = finish_frames(batch, [fps], every_frame, with_detections=True)[0]
            message_ms = encode(inferred, recorder.results + 1)
            recorder.result(_stages(inferred.prediction, message_ms), _count(inferred.prediction.result))

    try:
        while not recorder.done:
            item = feeder.get(FEED_TIMEOUT_S)
            if item is None:
                raise RuntimeError(f"no frame from the feeder within {FEED_TIMEOUT_S:g} s")
            if isinstance(item, FeedFailed):
                raise item.error
            if isinstance(item, FeedEnded):
                break
            record(in_flight.submit(predictor, [item], None))
        record(in_flight.drain())
    finally:
        feeder.stop()
    return {"imports_s": imported - recorder.spawned_at, "load_s": loaded - imported,
            "info": model_info(predictor.info), **_device_path(predictor)}


def run_serial(spec: dict[str, Any], recorder: Recorder, load: Callable = load_predictor) -> dict[str, Any]:
    """The same Predictor and per-frame step with no feeder thread: read, prepare, infer, decode in turn."""
    from yolo_edge.frame_step import infer_frame
    from yolo_edge.limits import PublishGate
    from yolo_edge.metrics import RollingFPS
    from yolo_edge.pipeline import FeedFrame
    from yolo_edge.sources import open_source

    imported = time.time()
    predictor = load(spec)
    loaded = time.time()
    source = open_source(spec["source"], False)
    encode = _message_encoder(spec, predictor, source.description, source.live)
    fps, every_frame = RollingFPS(), PublishGate(0)
    buffers: dict = {}
    try:
        index = 0
        while not recorder.done:
            frame = source.read()
            if frame is None:
                break
            item = FeedFrame(predictor.prepare(frame, buffers), index, time.monotonic())
            inferred = infer_frame(predictor, item, fps, every_frame, with_detections=True)
            message_ms = encode(inferred, recorder.results + 1)
            recorder.result(_stages(inferred.prediction, message_ms), _count(inferred.prediction.result))
            index += 1
    finally:
        source.close()
    return {"imports_s": imported - recorder.spawned_at, "load_s": loaded - imported,
            "info": model_info(predictor.info), **_device_path(predictor)}


def load_backend(spec: dict[str, Any]):
    """The backend the component's loader would pick, with the same options."""
    from yolo_edge.backends import load_backend as load
    from yolo_edge.predictor import backend_options

    config = config_for(spec)
    return load(config.model_loc, backend_options(config))


def run_bare(spec: dict[str, Any], recorder: Recorder, load: Callable = load_backend) -> dict[str, Any]:
    """Bare runtime calls on one preprocessed real frame, with the same backend options."""
    from yolo_edge.backends.base import ConcurrentBackend
    from yolo_edge.predictor import PostprocessSettings, Predictor
    from yolo_edge.sources import open_source

    imported = time.time()
    backend = load(spec)
    loaded = time.time()
    source = open_source(spec["source"], False)
    try:
        frame = source.read()
    finally:
        source.close()
    if frame is None:
        raise RuntimeError(f"source {spec['source']} has no frame")
    tensor, _ = Predictor(backend, PostprocessSettings()).host_tensor(frame)  # in the layout the backend takes
    session = getattr(backend, "session", None)
    if isinstance(backend, ConcurrentBackend) and backend.concurrency > 1:
        what = f"backend.start ({backend.concurrency} frames at once)"
        for elapsed in side_by_side(backend, tensor, recorder.warmup + recorder.frames - recorder.results):
            recorder.result({"inference": elapsed, "total": elapsed}, 0)
    else:
        if session is not None and hasattr(backend, "output_names"):
            names, feed = backend.output_names, {backend.input_name: tensor}

            def call() -> None:
                session.run(names, feed)
            what = "session.run"
        else:
            def call() -> None:
                backend.infer(tensor)
            what = "backend.infer"
        while not recorder.done:
            start = time.perf_counter()
            call()
            elapsed = (time.perf_counter() - start) * 1000
            recorder.result({"inference": elapsed, "total": elapsed}, 0)
    backend.close()
    return {"imports_s": imported - recorder.spawned_at, "load_s": loaded - imported,
            "info": model_info(backend.info), "bare_call": what}


def side_by_side(backend, tensor, count: int) -> Iterator[float]:
    """`count` inferences of `tensor` on a backend that runs frames side by side, its requests kept full (a
    new job starts as soon as one is taken back); yields each job's own ms, in start order. Run it to the
    end: every job it starts is taken back."""
    from collections import deque

    jobs: deque = deque()
    started = 0
    for _ in range(count):
        while len(jobs) < backend.concurrency and started < count:
            jobs.append((time.perf_counter(), backend.start(tensor)))
            started += 1
        began, job = jobs.popleft()
        job.outputs()
        yield (time.perf_counter() - began) * 1000


def run_ultralytics(spec: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """Ultralytics' predictor on the same model file and video, its own Results.speed per stage."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    from ultralytics import YOLO

    imported = time.time()
    task = spec.get("task", "auto")
    model = YOLO(spec["model"], task=None if task == "auto" else task)
    loaded = time.time()
    with openvino_precision(spec.get("openvino_precision")):
        details = _ultralytics_predict(spec, recorder, model)
    return {"imports_s": imported - recorder.spawned_at, "load_s": loaded - imported, **details}


@contextmanager
def openvino_precision(precision: str | None) -> Iterator[None]:
    """With "f32": every OpenVINO model compiled meanwhile runs in f32 (Ultralytics compiles its IR on the
    first predict and sets no precision, so the CPU plugin's default applies: bf16 on CPUs with bf16).
    None or "default": unchanged."""
    if precision in (None, "default"):
        yield
        return
    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(core: Any, model: Any, device_name: Any = None, config: Any = None, **kwargs: Any) -> Any:
        config = {**(config or {}), "INFERENCE_PRECISION_HINT": precision}
        return original(core, model, device_name, config, **kwargs)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def _ultralytics_predict(spec: dict[str, Any], recorder: Recorder, model: Any) -> dict[str, Any]:
    height, width = spec["size"]
    device = spec.get("device", "auto")
    kwargs: dict[str, Any] = {"device": "cpu"} if device == "cpu" else {"device": device[5:] or 0} \
        if device.startswith("cuda") else {}
    # stream=True makes predict a generator of Results (its declared type also covers stream=False's lists)
    stream = cast("Generator[Results, None, None]", model.predict(
        source=spec["source"], stream=True, imgsz=(height, width), verbose=False, half=spec.get("half", False),
        **kwargs))
    try:
        for result in stream:
            speed = result.speed
            stages = {stage: float(speed.get(stage) or 0.0) for stage in ("preprocess", "inference", "postprocess")}
            stages["total"] = sum(stages.values())
            boxes = result.boxes
            recorder.result(stages, len(boxes) if boxes is not None else 0)
            if recorder.done:
                break
    finally:
        stream.close()
    import ultralytics

    runtime, precision = ultralytics_runtime(model)
    info = {"name": os.path.basename(spec["model"].rstrip("/")), "task": model.task,
            "runtime": f"ultralytics {ultralytics.__version__} · {runtime}", "precision": precision,
            "input_shape": [height, width]}
    return {"info": info}


def ultralytics_runtime(model: Any) -> tuple[str, str | None]:
    """(runtime, precision) Ultralytics' predictor ran on: for OpenVINO the compiled model's own
    INFERENCE_PRECISION_HINT, for ONNX Runtime its providers; ("?", None) where its internals differ."""
    backend = getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None)
    compiled = getattr(backend, "ov_compiled_model", None)
    if compiled is not None:
        import openvino as ov

        devices = ", ".join(compiled.get_property("EXECUTION_DEVICES"))
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())  # "bf16", "f32"
        return f"openvino {str(ov.get_version()).split('-')[0]} ({devices})", precision
    session = getattr(backend, "session", None)
    if session is not None and hasattr(session, "get_providers"):
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__} ({session.get_providers()[0]})", None
    return type(backend).__name__ if backend is not None else "?", None


def _device_path(predictor) -> dict[str, Any]:
    """How a GPU frame path ran (PyTorch on CUDA): CUDA graphs or not, where decoding was done."""
    path = predictor.device_frames
    if path is None:
        return {}
    return {"device_frames": {"cuda_graphs": bool(getattr(path, "graphs", False)),
                              "graph_failures": int(getattr(path, "graph_failures", 0)),
                              "decode": str(getattr(path, "decode_choice", "?"))}}


def model_info(info) -> dict[str, Any]:
    return {"name": info.name, "format": info.format, "task": info.task, "runtime": info.runtime,
            "precision": info.precision, "device": info.device, "input_shape": list(info.input_shape),
            "dtype": info.input_dtype, "concurrency": info.concurrency}


RUNNERS: dict[str, Callable[[dict[str, Any], Recorder], dict[str, Any]]] = {
    "pipeline": run_pipeline, "serial": run_serial, "bare": run_bare, "ultralytics": run_ultralytics}


def measure(spec: dict[str, Any], runners: dict[str, Callable] | None = None) -> dict[str, Any]:
    """Run the spec's mode; `runners` lets an experiment swap in its own (e.g. other session options)."""
    runners = runners or RUNNERS
    mode = spec["mode"]
    if mode not in runners:
        raise ValueError(f"spec field 'mode' is {mode!r}; expected one of {', '.join(runners)}")
    recorder = Recorder(int(spec.get("warmup", 10)), int(spec.get("frames", 100)),
                        float(spec.get("spawned_at") or time.time()))
    load_before = os.getloadavg()[0]
    details = runners[mode](spec, recorder)
    if recorder.results == 0:
        raise RuntimeError(f"no result at all from {spec['source']}")
    summary = recorder.summary()
    summary.update({
        "mode": mode, "model": spec["model"], "size": list(spec["size"]), "threads": spec.get("threads", 0),
        "peak_rss_mb": peak_rss_mb(), "startup": {"imports_s": round(details.pop("imports_s"), 3),
                                                  "load_s": round(details.pop("load_s"), 3)},
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], **details})
    if summary["frames"] < recorder.frames:
        summary["note"] = (f"the source ended after {recorder.results} frames; "
                           f"{summary['frames']} measured instead of {recorder.frames}")
    return summary


def main(argv: list[str] | None = None, runners: dict[str, Callable] | None = None,
         measure_spec: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    """Measure the spec named on the command line: with `measure_spec` (another kind of benchmark, e.g.
    bench_streams), else `measure` with `runners`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    try:
        result = measure_spec(spec) if measure_spec is not None else measure(spec, runners)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent as data
        result = {"mode": spec.get("mode"), "model": spec.get("model"), "size": spec.get("size"),
                  "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    else:
        code = 0
    with open(spec["result"], "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
