#!/usr/bin/env python3
"""FP32 ONNX vs INT8 ONNX (ONNX Runtime, CPU): session.run time and how far INT8 detections move.

For each input size it builds yolo_edge_tools.modelgen's random-weights YOLOv8n (batch-norm statistics set
from real images, class bias shifted so it finds many boxes), quantises it with
`yolo_edge_tools.export.quantize_onnx` (the code `yolo-edge export --format onnx-int8` runs) in several
variants, calibrating on frames read from a video through our preprocessing, then on other frames
measures:

- session.run latency: median, p90 and min over --runs runs after --warmup runs (default thread
  settings); the models take turns run by run, so other load on the machine hits them all alike;
- detection drift against FP32 on the same frames (our Predictor, conf 0.25, IoU 0.7): the share of FP32
  boxes that INT8 finds again (same class, IoU >= 0.5), the share of INT8 boxes that FP32 also has,
  the mean IoU of matched pairs and the mean absolute score change;
- the same drift for the FP32 model fed +-1/255 input noise, as a yardstick: random networks react to
  small perturbations far more than trained ones, so their INT8 drift overstates a trained model's.

    python benchmarks/int8_compare.py                      # 640x640 and 480x640, every variant
    python benchmarks/int8_compare.py --sizes 640 --variants qdq-u8,qop-u8 --runs 10
    python benchmarks/int8_compare.py --workdir /tmp/int8 --reuse --no-drift   # re-time kept models
    python benchmarks/int8_compare.py --smoke    # seconds: 64x64, qdq-u8/qop-u8/dynamic, a few frames and runs

--smoke proves the script end to end (build, calibrate, quantise, time, drift); explicit options still win
over its values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "components"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

from yolo_edge import processing  # noqa: E402
from yolo_edge.backends import BackendOptions, load_backend  # noqa: E402
from yolo_edge.predictor import PostprocessSettings, Predictor  # noqa: E402
from yolo_edge_tools.export import Int8Settings, quantize_onnx, read_calibration_tensors  # noqa: E402

# name -> settings. u8 = uint8 activations with reduce_range (ORT's advice for x86 without VNNI).
VARIANTS = {
    "qdq-u8": Int8Settings("qdq", False, "uint8", "head"),
    "qdq-u8-perchannel": Int8Settings("qdq", True, "uint8", "head"),
    "qdq-s8": Int8Settings("qdq", False, "int8", "head"),
    "qop-u8": Int8Settings("qoperator", False, "uint8", "head"),
    "qop-u8-perchannel": Int8Settings("qoperator", True, "uint8", "head"),
    "qop-s8": Int8Settings("qoperator", False, "int8", "head"),
    "qdq-u8-decode-only": Int8Settings("qdq", False, "uint8", "decode"),
    "qdq-u8-conv-only": Int8Settings("qdq", False, "uint8", "non-conv"),
    "dynamic": Int8Settings(),  # no calibration: what the command does without --calibration
}
# --smoke: the smallest input, one variant of each quantisation kind, a few frames and runs.
SMOKE = {"sizes": "64", "variants": "qdq-u8,qop-u8,dynamic", "calibration_frames": 4, "eval_frames": 2,
         "warmup": 1, "runs": 3}


@dataclass
class Row:
    size: str
    variant: str
    size_mb: float
    median_ms: float
    p90_ms: float
    min_ms: float
    recall: float = float("nan")
    precision: float = float("nan")
    mean_iou: float = float("nan")
    score_change: float = float("nan")
    boxes: float = float("nan")


def scene_frames(count: int, size: tuple[int, int], offset: int) -> list[np.ndarray]:
    """Frames cut from Ultralytics' packaged photos at varying zoom and position (real image content)."""
    import ultralytics

    images = [cv2.imread(str(p)) for p in sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg"))]
    h, w = size
    rng = np.random.default_rng(offset)
    frames = []
    for i in range(count):
        image = images[(i + offset) % len(images)]
        scale = max(h / image.shape[0], w / image.shape[1]) * rng.uniform(1.0, 1.6)
        big = cv2.resize(image, None, fx=scale, fy=scale)
        y = int(rng.integers(0, big.shape[0] - h + 1))
        x = int(rng.integers(0, big.shape[1] - w + 1))
        frames.append(np.ascontiguousarray(big[y:y + h, x:x + w]))
    return frames


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def time_sessions(paths: dict[str, Path], tensors: list[np.ndarray], warmup: int, runs: int, threads: int = 0
                  ) -> dict[str, tuple[float, float, float]]:
    """(median, p90, min) ms of session.run per model. The models take turns run by run, in a new random
    order each round, so load from other processes on the machine spreads evenly over them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    name = next(iter(sessions.values())).get_inputs()[0].name
    for session in sessions.values():
        for i in range(warmup):
            session.run(None, {name: tensors[i % len(tensors)]})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    rng = np.random.default_rng(0)
    for i in range(runs):
        rng.shuffle(order)
        for key in order:
            start = time.perf_counter()
            sessions[key].run(None, {name: tensors[i % len(tensors)]})
            times[key].append((time.perf_counter() - start) * 1000)
    out = {}
    for key, values in times.items():
        values.sort()
        out[key] = (statistics.median(values), values[min(len(values) - 1, int(0.9 * len(values)))], values[0])
    return out


def random_model(folder: Path, size: tuple[int, int]) -> Path:
    """yolo_edge_tools.modelgen's random-weights YOLOv8n (batch-norm calibrated on real images), as ONNX."""
    from yolo_edge_tools.modelgen import make_random_model

    existing = sorted(folder.glob("yolov8n-*.onnx"))
    existing = [p for p in existing if "-int8-" not in p.name]
    if existing:
        return existing[0]
    return make_random_model(folder, "detect", size if size[0] != size[1] else size[0])


class InputJitter:
    """Wraps a backend and adds uniform noise of +-`lsb` input steps (1/255) to every tensor: the FP32
    model's own sensitivity, a yardstick for the INT8 drift (random networks are far more sensitive
    to small perturbations than trained ones)."""

    def __init__(self, backend, lsb: float) -> None:
        self.backend = backend
        self.info = backend.info
        self.amplitude = lsb / 255
        self.rng = np.random.default_rng(0)
        self.device_frames = None  # host tensors only: the noise is added to them

    def disable_device_frames(self) -> None:
        pass

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        noise = self.rng.uniform(-self.amplitude, self.amplitude, tensor.shape)
        return self.backend.infer((tensor + noise).astype(tensor.dtype))

    def close(self) -> None:
        self.backend.close()


def detections(path: Path, frames: list[np.ndarray], size: tuple[int, int], jitter_lsb: float = 0.0
               ) -> list[processing.Detections]:
    backend = load_backend(path, BackendOptions(device="cpu", input_size=size))
    if jitter_lsb:
        backend = InputJitter(backend, jitter_lsb)
    predictor = Predictor(backend, PostprocessSettings())
    return [predictor.predict(frame).result for frame in frames]


def drift(reference: list, candidate: list) -> tuple[float, float, float, float, float]:
    """(recall, precision, mean IoU of matches, mean |score change| of matches, mean INT8 boxes)."""
    matched = ref_total = cand_total = 0
    ious, score_changes = [], []
    for ref, cand in zip(reference, candidate, strict=True):
        ref_total += len(ref)
        cand_total += len(cand)
        free = np.ones(len(cand), bool)
        for i in np.argsort(-ref.scores):
            same = np.flatnonzero(free & (cand.class_ids == ref.class_ids[i]))
            if same.size == 0:
                continue
            overlap = processing.box_iou(ref.boxes[i], cand.boxes[same])
            best = int(np.argmax(overlap))
            if overlap[best] >= 0.5:
                free[same[best]] = False
                matched += 1
                ious.append(float(overlap[best]))
                score_changes.append(abs(float(ref.scores[i] - cand.scores[same[best]])))
    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return (matched / max(ref_total, 1), matched / max(cand_total, 1), mean(ious), mean(score_changes),
            cand_total / len(candidate))


def _cell(value: float, spec: str) -> str:
    return "-" if np.isnan(value) else format(value, spec)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=f"a short run proving the script works: {SMOKE}")
    parser.add_argument("--sizes", default="640,480x640", help="input sizes, comma separated (default: %(default)s)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--eval-frames", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workdir", type=Path, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own "
                                                                 "choice, one per core)")
    parser.add_argument("--reuse", action="store_true", help="reuse INT8 models already in --workdir")
    parser.add_argument("--no-drift", action="store_true", help="time only")
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke values become the defaults; options given explicitly keep theirs
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
    unknown = [v for v in variant_names(args.variants) if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def variant_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main() -> int:
    args = parse_args()

    sizes = []
    for text in args.sizes.split(","):
        h, _, w = text.partition("x")
        sizes.append((int(h), int(w or h)))
    variants = variant_names(args.variants)

    import platform

    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.calibration_frames} calibration frames, {args.eval_frames} evaluation "
          f"frames, {args.runs} timed runs per model (interleaved), intra-op threads "
          f"{args.threads or 'default'}", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        calibration_source = scene_frames(args.calibration_frames, (480, 640), offset=0)
        frames = scene_frames(args.eval_frames, (480, 640), offset=1000)  # not used for calibration
        video = write_video(workdir / "calibration.avi", calibration_source)
        for size in sizes:
            label = f"{size[0]}x{size[1]}"
            model_dir = workdir / label
            fp32 = random_model(model_dir, size)
            calibration = read_calibration_tensors(video, args.calibration_frames, size)
            tensors = [processing.preprocess(f, size)[0].copy() for f in frames]
            paths = {"fp32": fp32}
            for name in variants:
                reused = model_dir / f"{fp32.stem}-int8-{name}.onnx"
                if args.reuse and reused.exists():
                    paths[name] = reused
                    continue
                start = time.perf_counter()
                paths[name] = quantize_onnx(fp32, model_dir / f"{fp32.stem}-int8-{name}.onnx",
                                            None if name == "dynamic" else calibration, VARIANTS[name])
                print(f"{label} {name}: quantised in {time.perf_counter() - start:.1f} s", flush=True)
            timings = time_sessions(paths, tensors, args.warmup, args.runs, args.threads)
            reference = None if args.no_drift else detections(fp32, frames, size)
            for name, path in paths.items():
                median, p90, fastest = timings[name]
                moved = () if reference is None else drift(reference, detections(path, frames, size))
                rows.append(Row(label, name, path.stat().st_size / 1e6, median, p90, fastest, *moved))
                print(rows[-1], flush=True)
            if reference is not None:
                nan = float("nan")
                rows.append(Row(label, "fp32, input +-1/255 noise", fp32.stat().st_size / 1e6, nan, nan, nan,
                                *drift(reference, detections(fp32, frames, size, jitter_lsb=1.0))))

    print(f"\nyolov8n (random weights from yolo_edge_tools.modelgen); session.run on this CPU; drift against FP32 on "
          f"{args.eval_frames} frames")
    print("| input | model | size MB | run median ms | run p90 ms | run min ms | FP32 boxes found "
          "| INT8 boxes in FP32 | mean IoU | mean abs score change | boxes/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r.size_mb:.1f}", *(_cell(v, ".1f") for v in (r.median_ms, r.p90_ms, r.min_ms)),
                 *(_cell(v, ".1%") for v in (r.recall, r.precision)), _cell(r.mean_iou, ".3f"),
                 _cell(r.score_change, ".4f"), _cell(r.boxes, ".1f")]
        print(f"| {r.size} | {r.variant} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
