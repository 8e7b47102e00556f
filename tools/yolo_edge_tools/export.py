"""`yolo-edge export`: a YOLO checkpoint (or a bundled architecture, random weights) to ONNX, a TensorRT
engine, or an INT8 ONNX quantised with ONNX Runtime.

Ultralytics does the ONNX and engine exports, so its metadata (task, class names, stride, size) travels
with the model. After an ONNX export the command prints the `trtexec` line that builds an engine from it
on a Jetson, and writes that engine's metadata sidecar (`<engine>.json`) so our TensorRT backend knows
the task and class names of an engine that has no Ultralytics header.

Exit codes: 0 done, 2 a bad flag or input (the message names it), 1 the export cannot be done here
(no GPU for an engine, an export that failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("onnx", "engine", "onnx-int8")
STRIDE = 32
DEFAULT_CALIBRATION_FRAMES = 32
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_HEAD_OUTPUT_CONV = re.compile(r"/cv[234]\.\d+/cv[234]\.\d+\.2/Conv$")


class UsageError(ValueError):
    """A flag or argument that cannot be used; exit code 2."""

    def __init__(self, flag: str, value: Any, reason: str) -> None:
        super().__init__(f"{flag} {value!r}: {reason}")


class ExportFailed(RuntimeError):
    """The export cannot be done on this machine, or a tool failed; exit code 1."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a YOLO model to ONNX, a TensorRT engine or INT8 ONNX",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a YOLO .pt checkpoint with Ultralytics, keeping its metadata (task, class names, "
                    "input size).\n\n"
                    "  onnx       ONNX model; also prints the trtexec command that builds a TensorRT engine from\n"
                    "             it on a Jetson and writes that engine's metadata file (<engine>.json)\n"
                    "  engine     TensorRT engine, built here: needs an NVIDIA GPU and TensorRT on this machine.\n"
                    "             An engine runs only on the GPU model and TensorRT version it was built with\n"
                    "  onnx-int8  INT8 ONNX quantised with ONNX Runtime: static with --calibration (calibrated\n"
                    "             on frames from your video through the same preprocessing as inference),\n"
                    "             otherwise dynamic (smaller file, no faster than FP32 on a CPU)\n\n"
                    "MODEL may also be an architecture YAML bundled with Ultralytics (yolov8n.yaml,\n"
                    "yolov8n-seg.yaml, yolo11n.yaml, ...): the model then has RANDOM weights, useful to\n"
                    "measure speed without trained weights, useless for real detections. For onnx-int8,\n"
                    "MODEL may be an .onnx file.",
        epilog="examples:\n"
               "  yolo-edge export yolov8n.pt --format onnx --imgsz 480,640\n"
               "  yolo-edge export yolov8n.pt --format engine --half            # on the Jetson\n"
               "  yolo-edge export yolov8n.pt --format onnx-int8 --calibration site.mp4\n"
               "  yolo-edge export yolov8n.yaml --format onnx                   # random weights\n\n"
               "exit status: 0 done, 2 a bad flag or input, 1 the export cannot be done here or failed")
    parser.add_argument("model", metavar="MODEL", help=".pt checkpoint, architecture .yaml, or .onnx (onnx-int8)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to produce")
    parser.add_argument("--imgsz", metavar="H,W | SIZE",
                        help="input size, multiples of 32: 640 or 480,640 (default: 640; for an .onnx MODEL "
                             "its own size)")
    parser.add_argument("--half", action="store_true", help="FP16 weights (onnx, engine)")
    parser.add_argument("--dynamic", action="store_true", help="accept other input sizes at run time")
    parser.add_argument("--batch", default="1", metavar="N",
                        help="the most frames inferred in one call: with several cameras, one frame per camera "
                             "(above 1 it needs --dynamic: the model then takes batches of 1 to N, and the "
                             "trtexec line printed builds an engine for them; default: %(default)s)")
    parser.add_argument("--output", metavar="PATH", help="where to write the model (default: beside MODEL, or "
                                                         "in the current folder for a .yaml)")
    parser.add_argument("--calibration", metavar="VIDEO", help="onnx-int8: a video file or image folder whose "
                                                               "frames calibrate the INT8 ranges")
    parser.add_argument("--calibration-frames", metavar="N", help="onnx-int8: frames to calibrate on, spread "
                                                                  f"over the video (default: "
                                                                  f"{DEFAULT_CALIBRATION_FRAMES})")
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class ExportRequest:
    model: str  # a path, or a bundled architecture name for .yaml
    kind: str  # pt | yaml | onnx
    format: str
    imgsz: tuple[int, int]
    imgsz_given: bool
    half: bool
    dynamic: bool
    batch: int
    output: Path
    calibration: Path | None
    calibration_frames: int


def run(args: argparse.Namespace) -> int:
    try:
        request = validate(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        export(request)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def parse_imgsz(text: str) -> tuple[int, int]:
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise UsageError("--imgsz", text, "expected one size or HEIGHT,WIDTH, e.g. 640 or 480,640")
    sizes = [int(p) for p in parts]
    if any(s < STRIDE or s % STRIDE for s in sizes):
        raise UsageError("--imgsz", text, f"each size must be a multiple of {STRIDE} (the model stride) and at "
                                          f"least {STRIDE}, e.g. 480,640")
    return (sizes[0], sizes[-1])


def _positive_int(flag: str, text: str) -> int:
    if not str(text).strip().isdigit() or int(text) < 1:
        raise UsageError(flag, text, "expected a whole number of at least 1")
    return int(text)


def validate(args: argparse.Namespace) -> ExportRequest:
    """Every flag checked before any slow work starts."""
    model = str(args.model)
    suffix = Path(model).suffix.lower()
    kinds = {".pt": "pt", ".yaml": "yaml", ".yml": "yaml", ".onnx": "onnx"}
    if suffix not in kinds:
        raise UsageError("MODEL", model, "expected a .pt checkpoint, an architecture .yaml, or (for onnx-int8) "
                                         "an .onnx file")
    kind = kinds[suffix]
    if kind != "yaml" and not Path(model).is_file():
        raise UsageError("MODEL", model, "file not found")
    if kind == "onnx" and args.format != "onnx-int8":
        reason = "is already ONNX" if args.format == "onnx" else \
            f"cannot be turned into an engine here; on the device run: {trtexec_command(Path(model))}"
        raise UsageError("MODEL", model, f"{reason} (only --format onnx-int8 takes an .onnx MODEL)")
    imgsz = parse_imgsz(args.imgsz) if args.imgsz is not None else (640, 640)
    batch = _positive_int("--batch", args.batch)
    if batch > 1 and not args.dynamic:
        raise UsageError("--batch", args.batch, "a fixed batch above 1 gives a model yolo-edge cannot run (with "
                                                "several cameras it infers the frames ready together, 1 up to "
                                                "one per camera, so the model must take any batch up to its "
                                                f"largest); add --dynamic to allow batches of 1 to {batch}")
    if args.half and args.format == "onnx-int8":
        raise UsageError("--half", True, "cannot be combined with --format onnx-int8 (INT8 replaces FP16)")
    calibration = Path(args.calibration) if args.calibration else None
    if calibration is not None:
        if args.format != "onnx-int8":
            raise UsageError("--calibration", args.calibration, "only applies to --format onnx-int8")
        if not calibration.exists():
            raise UsageError("--calibration", args.calibration, "file or folder not found")
    if args.calibration_frames is not None and calibration is None:
        raise UsageError("--calibration-frames", args.calibration_frames, "needs --calibration VIDEO")
    frames = _positive_int("--calibration-frames", args.calibration_frames) \
        if args.calibration_frames is not None else DEFAULT_CALIBRATION_FRAMES
    output = Path(args.output) if args.output else default_output(model, kind, args.format)
    wanted = (".engine", ".trt") if args.format == "engine" else (".onnx",)
    if output.suffix.lower() not in wanted:
        raise UsageError("--output", str(output), f"--format {args.format} writes a {' or '.join(wanted)} file")
    if kind != "yaml" and output.resolve() == Path(model).resolve():
        raise UsageError("--output", str(output), "would overwrite MODEL; choose another file name")
    if kind == "yaml":
        _check_architecture(model)
    return ExportRequest(model, kind, args.format, imgsz, args.imgsz is not None, args.half, args.dynamic, batch,
                         output, calibration, frames)


def default_output(model: str, kind: str, fmt: str) -> Path:
    stem = Path(model).stem
    folder = Path.cwd() if kind == "yaml" else Path(model).parent
    name = {"onnx": f"{stem}.onnx", "engine": f"{stem}.engine", "onnx-int8": f"{stem}-int8.onnx"}[fmt]
    return folder / name


def _check_architecture(name: str) -> None:
    from .modelgen import offline_guards

    offline_guards()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(name)
    except (FileNotFoundError, OSError) as exc:
        raise UsageError("MODEL", name, "not a file and not an architecture bundled with Ultralytics "
                                        "(e.g. yolov8n.yaml, yolov8n-seg.yaml, yolov8n-cls.yaml, yolo11n.yaml)"
                         ) from exc


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------

class Progress:
    """Prints numbered steps with their elapsed time."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.perf_counter()

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.done += 1
        print(f"[{self.done}/{self.total}] {text} ...", flush=True)
        start = time.perf_counter()
        yield
        print(f"      done in {time.perf_counter() - start:.1f} s", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# ---------------------------------------------------------------------------------------------
# The exports
# ---------------------------------------------------------------------------------------------

def export(request: ExportRequest) -> Path:
    if request.format == "engine":
        check_engine_build_possible()
    steps = (request.kind == "yaml") + (request.kind != "onnx") + 1 + (request.calibration is not None)
    progress = Progress(steps)
    request.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo-edge-export-") as scratch:
        checkpoint = Path(request.model)
        if request.kind == "yaml":
            checkpoint = build_random_checkpoint(request.model, Path(scratch), progress)
        elif request.kind == "pt":
            # Ultralytics writes beside the checkpoint (the engine export an .onnx too): work on a copy so
            # that files already beside MODEL are never overwritten.
            checkpoint = Path(shutil.copy2(checkpoint, Path(scratch) / checkpoint.name))
        if request.format == "onnx-int8":
            source = Path(request.model) if request.kind == "onnx" else ultralytics_export(
                request, checkpoint, "onnx", Path(scratch) / f"{checkpoint.stem}.onnx", progress)
            written = export_int8(request, source, progress)
        else:
            written = ultralytics_export(request, checkpoint, request.format, request.output, progress)
            if request.format == "onnx":
                _after_onnx(written, request, progress)
            else:
                _after_engine(written, progress)
    size_mb = written.stat().st_size / 1e6
    print(f"wrote {written} ({size_mb:.1f} MB) in {progress.elapsed:.1f} s")
    if request.kind == "yaml":
        print("note: this model has RANDOM weights (built from an architecture, no training): its detections "
              "are meaningless; use it to measure speed only")
    if request.format == "onnx":
        engine = engine_path_for(written)
        print("\nTo build a TensorRT engine from it on the Jetson (JetPack puts trtexec in /usr/src/tensorrt/bin):")
        print(f"  {trtexec_command(written, engine, request.imgsz, request.dynamic, request.batch)}")
        print(f"Keep {sidecar_name(engine)} beside {engine.name}: it carries the task and class names "
              "(drop --fp16 for an FP32 engine).")
    return written


def build_random_checkpoint(architecture: str, folder: Path, progress: Progress) -> Path:
    from .modelgen import build_model, save_checkpoint

    with progress.step(f"building {architecture} with RANDOM weights (no trained weights are used)"):
        return save_checkpoint(build_model(architecture), folder / f"{Path(architecture).stem}.pt")


def ultralytics_export(request: ExportRequest, checkpoint: Path, fmt: str, output: Path,
                       progress: Progress) -> Path:
    from .modelgen import export_model, offline_guards

    offline_guards()  # before Ultralytics is first imported: it reads these at import time
    import ultralytics

    precision = "FP16" if request.half and fmt != "onnx-int8" else "FP32"
    shape = "dynamic" if request.dynamic else "static"
    label = {"onnx": "ONNX", "engine": "TensorRT engine"}[fmt]
    slow = "; building an engine takes minutes on a Jetson" if fmt == "engine" else ""
    kwargs: dict[str, Any] = {"dynamic": request.dynamic, "batch": request.batch}
    if request.half:
        kwargs.update(_half_argument())
    if fmt == "engine":
        kwargs["device"] = 0
    with progress.step(f"exporting {checkpoint.name} to {label} with Ultralytics {ultralytics.__version__} "
                       f"(imgsz {request.imgsz[0]}x{request.imgsz[1]}, batch {request.batch}, {shape}, "
                       f"{precision}){slow}"):
        try:
            return export_model(checkpoint, fmt, request.imgsz, output, **kwargs)
        except Exception as exc:  # Ultralytics raises many kinds; show what it said
            raise ExportFailed(f"Ultralytics could not export {request.model} to {label}: {exc}") from exc


def _half_argument() -> dict[str, Any]:
    """Ultralytics 8.4 replaced half=True with quantize=16; older versions only know half."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


def check_engine_build_possible() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ExportFailed("--format engine builds a TensorRT engine, which needs an NVIDIA GPU with CUDA on this "
                           "machine, and no CUDA device was found. An engine is tied to the GPU and TensorRT "
                           "version it is built on, so build it on the device: export ONNX here "
                           "(--format onnx) and run the trtexec command it prints on the Jetson, or run this "
                           "command there")
    try:
        spec = importlib.util.find_spec("tensorrt")
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        spec = None
    if spec is None:
        raise ExportFailed("--format engine needs the TensorRT Python package, which is not installed; on a "
                           "Jetson it comes with JetPack (sudo apt install python3-libnvinfer), elsewhere "
                           "pip install tensorrt")


# ---------------------------------------------------------------------------------------------
# Metadata, sidecar and trtexec
# ---------------------------------------------------------------------------------------------

def onnx_metadata(path: Path) -> dict[str, Any]:
    """Ultralytics' ONNX metadata as JSON values (it stores Python literals as strings)."""
    import onnx

    from yolo_edge.backends.metadata import _literal

    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: _literal(p.value) for p in model.metadata_props}
    if isinstance(meta.get("names"), dict):
        meta["names"] = {str(k): v for k, v in meta["names"].items()}
    return meta


def engine_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".engine")


def sidecar_name(engine: Path) -> str:
    from yolo_edge.backends.tensorrt import sidecar_path

    return sidecar_path(engine).name


def write_sidecar(engine: Path, metadata: dict[str, Any]) -> Path:
    from yolo_edge.backends.tensorrt import sidecar_path

    path = sidecar_path(engine)
    path.write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def trtexec_command(onnx_path: Path, engine: Path | None = None, imgsz: tuple[int, int] | None = None,
                    dynamic: bool = False, batch: int = 1) -> str:
    engine = engine or engine_path_for(onnx_path)
    parts = ["trtexec", f"--onnx={_shown(onnx_path)}", f"--saveEngine={_shown(engine)}", "--fp16"]
    if dynamic and imgsz:
        h, w = imgsz
        # With several cameras the frames ready together are inferred as one batch of 1 to `batch`
        # (one per camera); the profile is tuned for the full batch, the steady state with every camera
        # running, and still takes a single frame (batch 1) when only one is ready.
        parts += [f"--minShapes=images:1x3x{STRIDE}x{STRIDE}", f"--optShapes=images:{batch}x3x{h}x{w}",
                  f"--maxShapes=images:{batch}x3x{h}x{w}"]
    return " ".join(parts)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def _after_onnx(written: Path, request: ExportRequest, progress: Progress) -> None:
    engine = engine_path_for(written)
    with progress.step(f"writing the metadata file {sidecar_name(engine)} for the engine built from it"):
        write_sidecar(engine, onnx_metadata(written))


def _after_engine(written: Path, progress: Progress) -> None:
    import tensorrt

    from yolo_edge.backends.tensorrt import BUILT_WITH_KEY, split_engine_file

    with progress.step(f"recording TensorRT {tensorrt.__version__} in {sidecar_name(written)}"):
        header, _ = split_engine_file(written.read_bytes())
        write_sidecar(written, {**header, BUILT_WITH_KEY: tensorrt.__version__})
    print(f"note: {written.name} runs only on this GPU model with TensorRT {tensorrt.__version__}")


# ---------------------------------------------------------------------------------------------
# INT8 with ONNX Runtime
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8Settings:
    """How to quantise. Defaults from benchmarks/int8_compare.py on an x86 CPU without VNNI: uint8
    activations (with reduce_range) ran 1.5x faster than FP32 while int8 activations ran 1.5-2x slower;
    QDQ and QOperator ran alike, and per-channel weights cost nothing and moved detections least. ONNX
    Runtime advises int8 activations on ARM, hence `auto`."""

    quant_format: str = "qdq"  # qdq | qoperator
    per_channel: bool = True
    activations: str = "auto"  # auto | uint8 | int8 (auto: uint8 on x86, int8 on ARM)
    keep_float: str = "head"  # decode | head | non-conv: see float_nodes

    def activation_type(self) -> str:
        if self.activations != "auto":
            return self.activations
        return "uint8" if platform.machine().lower() in ("x86_64", "amd64", "i686") else "int8"


def export_int8(request: ExportRequest, source: Path, progress: Progress, settings: Int8Settings | None = None
                ) -> Path:
    settings = settings or Int8Settings()
    imgsz = request.imgsz if request.imgsz_given else onnx_input_size(source) or request.imgsz
    frames = None
    if request.calibration is not None:
        with progress.step(f"reading {request.calibration_frames} calibration frames from {request.calibration}"):
            frames = read_calibration_tensors(request.calibration, request.calibration_frames, imgsz)
    if frames:
        kind = (f"static, calibrated on {len(frames)} frames, {settings.quant_format.upper()}, "
                f"{settings.activation_type()} activations{', per-channel weights' if settings.per_channel else ''}")
    else:
        kind = "dynamic (no --calibration): weights INT8, activations quantised at run time"
    with progress.step(f"quantising to INT8 with ONNX Runtime ({kind})"):
        quantize_onnx(source, request.output, frames, settings)
    fp32_mb, int8_mb = source.stat().st_size / 1e6, request.output.stat().st_size / 1e6
    print(f"      size: FP32 {fp32_mb:.1f} MB -> INT8 {int8_mb:.1f} MB ({int8_mb / fp32_mb:.0%})")
    if frames is None:
        print("note: dynamic quantisation shrinks the file but runs no faster than FP32 on a CPU; for speed "
              "give --calibration VIDEO (static quantisation)")
    return request.output


def onnx_input_size(path: Path) -> tuple[int, int] | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].dim_value and dims[3].dim_value:
        return (dims[2].dim_value, dims[3].dim_value)
    imgsz = onnx_metadata(path).get("imgsz")
    return (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 else None


def read_calibration_tensors(source: Path, count: int, imgsz: tuple[int, int]) -> list[np.ndarray]:
    """`count` frames spread over a video (or an image folder), preprocessed exactly as for inference."""
    import cv2

    from yolo_edge.processing import preprocess

    frames: list[np.ndarray] = []
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        picks = files if len(files) <= count else [files[int(i)] for i in np.linspace(0, len(files) - 1, count)]
        frames = [f for f in (cv2.imread(str(p)) for p in picks) if f is not None]
    else:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise UsageError("--calibration", str(source), "OpenCV cannot open it as a video")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = set(np.linspace(0, total - 1, count).astype(int).tolist()) if total > count else None
        index = 0
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if wanted is None or index in wanted:
                frames.append(frame)
            index += 1
        capture.release()
    if not frames:
        raise UsageError("--calibration", str(source), "no frames could be read from it")
    return [preprocess(frame, imgsz)[0].copy() for frame in frames]


def float_nodes(model: Any, keep_float: str) -> list[str]:
    """Names of the nodes to leave in float.

    decode: the detection head's box/score decoding (one INT8 scale cannot cover box pixels and class
    scores at once); head: that plus the last convolution of each head branch (the raw box, class and
    mask-coefficient logits); non-conv: every node but the convolutions and matrix products.
    """
    if keep_float == "non-conv":
        return [n.name for n in model.graph.node if n.op_type not in ("Conv", "Gemm", "MatMul")]
    modules = [int(n.name.split("/")[1][6:]) for n in model.graph.node
               if n.name.startswith("/model.") and n.name.split("/")[1][6:].isdigit()]
    if not modules:
        return []
    head = f"/model.{max(modules)}/"
    branches = ("/cv2.", "/cv3.", "/cv4.", "/proto/")  # box, class, mask-coefficient convs; mask prototypes
    keep = []
    for node in model.graph.node:
        if not node.name.startswith(head):
            continue
        in_branch = any(b in node.name for b in branches)
        last_conv = keep_float == "head" and node.op_type == "Conv" and _HEAD_OUTPUT_CONV.search(node.name)
        if not in_branch or last_conv:
            keep.append(node.name)
    return keep


def quantize_onnx(source: Path, output: Path, tensors: list[np.ndarray] | None,
                  settings: Int8Settings | None = None) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or Int8Settings()
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="yolo-edge-int8-") as scratch, _quiet_root_logger():
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        model = onnx.load(str(prepared))
        excluded = float_nodes(model, settings.keep_float)
        input_name = model.graph.input[0].name
        staged = Path(scratch) / "int8.onnx"
        if tensors:
            class Frames(CalibrationDataReader):
                def __init__(self, frames: list[np.ndarray]) -> None:
                    self.items = iter(frames)

                def get_next(self) -> dict[str, np.ndarray] | None:
                    item = next(self.items, None)
                    return None if item is None else {input_name: item}

            activation = settings.activation_type()
            quantize_static(
                str(prepared), str(staged), Frames(tensors),
                quant_format=QuantFormat.QDQ if settings.quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=settings.per_channel, activation_type=types[activation], weight_type=QuantType.QInt8,
                reduce_range=activation == "uint8", nodes_to_exclude=excluded)
        else:
            quantize_dynamic(str(prepared), str(staged), weight_type=QuantType.QUInt8, nodes_to_exclude=excluded)
        _copy_metadata(onnx.load(str(source), load_external_data=False), staged)
        shutil.move(str(staged), str(output))
    return output


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs a line per tensor on the root logger at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _copy_metadata(original: Any, path: Path) -> None:
    """Keep Ultralytics' metadata (task, names, imgsz) in the quantised model, whatever the tool kept."""
    import onnx

    model = onnx.load(str(path))
    kept = {p.key for p in model.metadata_props}
    for prop in original.metadata_props:
        if prop.key not in kept:
            model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(path))
