"""`yolo-edge export`: real Ultralytics exports and real ONNX Runtime quantisation of small models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import asset_images
from fake_tensorrt import install, ultralytics_header, write_engine

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, load_backend
from yolo_edge.backends.base import MAX_BATCH
from yolo_edge.cli import main
from yolo_edge.predictor import PostprocessSettings, Predictor

OPTIONS_320 = BackendOptions(input_size=(320, 320))


@pytest.fixture(scope="module")
def checkpoint(random_model) -> Path:
    return random_model("detect", 320, fmt="pt")


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def frame() -> np.ndarray:
    return cv2.imread(str(asset_images()[0]))


# Detections of two exports of one checkpoint agree to ONNX Runtime's rounding (measured: identical); a
# changed model moves boxes by tenths of a pixel or more (the 0.27 px) and changes scores.
BOX_TOLERANCE_PX = 0.05
SCORE_TOLERANCE = 1e-4


def detections(model: Path) -> list[processing.Detections]:
    predictor = Predictor(load_backend(model, OPTIONS_320), PostprocessSettings())
    return [predictor.predict(cv2.imread(str(image))).result for image in asset_images()]


def detection_mismatch(ours: processing.Detections, theirs: processing.Detections) -> str | None:
    """Why two frames' detections (after NMS) differ, or None: one-to-one, same class, every box
    corner within BOX_TOLERANCE_PX and every score within SCORE_TOLERANCE."""
    if len(ours) != len(theirs):
        return f"{len(ours)} detections against {len(theirs)}"
    unmatched = np.ones(len(theirs), bool)
    for box, score, class_id in zip(ours.boxes, ours.scores, ours.class_ids):
        corner_px = np.abs(theirs.boxes - box).max(axis=1)
        close = (unmatched & (theirs.class_ids == class_id) & (corner_px <= BOX_TOLERANCE_PX)
                 & (np.abs(theirs.scores - score) <= SCORE_TOLERANCE))
        if not close.any():
            return (f"no partner for class {class_id} score {score:.5f} box {np.round(box, 2).tolist()} "
                    f"(nearest box off by {corner_px.min():.3f} px)")
        unmatched[np.flatnonzero(close)[0]] = False
    return None


def frames_mismatch(ours: list[processing.Detections], theirs: list[processing.Detections]) -> str | None:
    return next((f"frame {i}: {why}" for i, (a, b) in enumerate(zip(ours, theirs))
                 if (why := detection_mismatch(a, b)) is not None), None)


def test_onnx_export_keeps_metadata_and_prepares_the_engine(tmp_path, random_model, capsys, monkeypatch):
    # Export the very checkpoint the fixture's ONNX came from: two builds of one recipe are not
    # bit-identical (the batch-norm calibration's float sums depend on torch's thread count, and the
    # fp16 checkpoint then rounds a few weights the other way: raw outputs differ by up to ~0.3).
    fixture_onnx = random_model("detect", 320)
    checkpoint = fixture_onnx.parent / "yolov8n.pt"
    assert checkpoint.is_file(), f"make_random_model saves the checkpoint beside {fixture_onnx}"
    beside_checkpoint = sorted(checkpoint.parent.iterdir())
    out = tmp_path / "models" / "det.onnx"
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(checkpoint), "--format", "onnx", "--imgsz", "320", "--output", str(out)]) == 0
    printed = capsys.readouterr().out

    meta = metadata(out)
    assert meta["task"] == "detect" and meta["imgsz"] == "[320, 320]" and "79: '79'" in meta["names"]
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 320, 320]
    # Same checkpoint, same export: the same detections as the fixture's ONNX of it; another model's differ.
    ours = detections(out)
    assert sum(len(d) for d in ours) >= 10
    assert frames_mismatch(ours, detections(fixture_onnx)) is None
    assert frames_mismatch(ours, detections(random_model("detect", 320, class_bias=-1.5))) is not None
    moved = processing.Detections(ours[0].boxes + 0.27, ours[0].scores, ours[0].class_ids)
    assert detection_mismatch(moved, ours[0]) is not None, "the issue's 0.27 px must not pass"
    assert sorted(checkpoint.parent.iterdir()) == beside_checkpoint, "nothing written beside MODEL"

    sidecar = json.loads((tmp_path / "models" / "det.engine.json").read_text())
    assert sidecar["task"] == "detect" and sidecar["imgsz"] == [320, 320] and sidecar["names"]["5"] == "5"
    assert "trtexec --onnx=models/det.onnx --saveEngine=models/det.engine --fp16" in printed
    assert "[1/2] exporting yolov8n.pt to ONNX" in printed
    assert printed.count("done in") == 2 and "wrote" in printed and "RANDOM" not in printed

    # An engine built from that ONNX by trtexec has no Ultralytics header: the sidecar tells our backend.
    install(monkeypatch, 10, "cuda-python", "10.3.0")
    engine = write_engine(tmp_path / "models" / "det.engine", out, "10.3.0")
    info = load_backend(engine, OPTIONS_320).info
    assert (info.task, info.num_classes, info.input_shape) == ("detect", 80, (320, 320))


def test_dynamic_export_prints_shape_ranges(tmp_path, checkpoint, capsys):
    out = tmp_path / "dyn.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--imgsz", "480,640", "--dynamic", "--batch", "4",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    # The profile's opt batch is N (it was 1 while frames were inferred one at a time): several cameras'
    # frames are now inferred as one batch of up to N, and min batch 1 still takes a frame alone.
    assert "--minShapes=images:1x3x32x32 --optShapes=images:4x3x480x640 --maxShapes=images:4x3x480x640" in printed
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value  # symbolic batch
    assert not dims[2].dim_value and not dims[3].dim_value  # symbolic height and width
    backend = load_backend(out, BackendOptions(input_size=(256, 320)))
    assert backend.info.input_shape == (256, 320)
    assert backend.info.max_batch == MAX_BATCH
    assert len(Predictor(backend, PostprocessSettings()).predict(frame()).result) > 0


def test_int8_from_checkpoint_with_calibration_video(tmp_path, checkpoint, sample_video, capsys):
    out = tmp_path / "det-int8.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx-int8", "--imgsz", "320", "--calibration",
                 str(sample_video), "--calibration-frames", "8", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reading 8 calibration frames" in printed and "static, calibrated on 8 frames" in printed
    assert "size: FP32 12." in printed and "-> INT8 3." in printed

    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producer = {o: n for n in model.graph.node for o in n.output}["output0"]
    assert producer.op_type == "Concat", "the head's decoding stays float"
    assert metadata(out)["task"] == "detect" and metadata(out)["imgsz"] == "[320, 320]"
    backend = load_backend(out, OPTIONS_320)
    assert backend.info.task == "detect" and backend.info.num_classes == 80
    detections = Predictor(backend, PostprocessSettings()).predict(frame()).result
    assert len(detections) >= 10
    assert out.stat().st_size < 0.35 * 12.7e6


def test_int8_from_onnx_without_calibration_is_dynamic(tmp_path, random_model, capsys):
    source = random_model("detect", 320)
    out = tmp_path / "dyn-int8.onnx"
    assert main(["export", str(source), "--format", "onnx-int8", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dynamic (no --calibration)" in printed and "give --calibration VIDEO" in printed
    assert "exporting" not in printed  # an .onnx MODEL is quantised as it is
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "DynamicQuantizeLinear" in ops
    backend = load_backend(out, OPTIONS_320)
    assert backend.info.names == load_backend(source, OPTIONS_320).info.names
    assert backend.infer(np.zeros((1, 3, 320, 320), np.float32))[0].shape == (1, 84, 2100)


def test_architecture_yaml_exports_random_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "yolov8n-cls.yaml", "--format", "onnx", "--imgsz", "64"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "meaningless" in printed
    out = tmp_path / "yolov8n-cls.onnx"  # default: the current folder
    assert metadata(out)["task"] == "classify"
    assert load_backend(out, BackendOptions()).info.task == "classify"


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.pt", "--format", "onnx"], "MODEL 'missing.pt': file not found"),
    (["model.h5", "--format", "onnx"], "MODEL 'model.h5': expected a .pt checkpoint"),
    (["{pt}", "--format", "onnx", "--imgsz", "500"], "--imgsz '500': each size must be a multiple of 32"),
    (["{pt}", "--format", "onnx", "--imgsz", "480,640,3"], "--imgsz '480,640,3': expected one size or HEIGHT,WIDTH"),
    (["{pt}", "--format", "onnx", "--batch", "0"], "--batch '0': expected a whole number of at least 1"),
    (["{pt}", "--format", "onnx", "--batch", "4"], "--batch '4': a fixed batch above 1 gives a model yolo-edge "
                                                   "cannot run"),
    (["{pt}", "--format", "onnx-int8", "--half"], "--half True: cannot be combined with --format onnx-int8"),
    (["{pt}", "--format", "onnx", "--calibration", "{pt}"], "only applies to --format onnx-int8"),
    (["{pt}", "--format", "onnx-int8", "--calibration", "nowhere.mp4"], "--calibration 'nowhere.mp4': file or "
                                                                        "folder not found"),
    (["{pt}", "--format", "onnx-int8", "--calibration-frames", "8"], "--calibration-frames '8': needs --calibration"),
    (["{pt}", "--format", "onnx-int8", "--calibration", "{pt}", "--calibration-frames", "-3"],
     "--calibration-frames '-3': expected a whole number"),
    (["{pt}", "--format", "onnx", "--output", "x.engine"], "--output 'x.engine': --format onnx writes a .onnx file"),
    (["{pt}", "--format", "engine", "--output", "x.onnx"], "--format engine writes a .engine or .trt file"),
    (["{onnx}", "--format", "engine"], "cannot be turned into an engine here; on the device run: trtexec --onnx="),
    (["{onnx}", "--format", "onnx"], "is already ONNX"),
    (["{onnx}", "--format", "onnx-int8", "--output", "{onnx}"], "would overwrite MODEL"),
    (["yolov99z.yaml", "--format", "onnx"], "not a file and not an architecture bundled with Ultralytics"),
    (["{onnx}", "--format", "onnx-int8", "--calibration", "{pt}"], "OpenCV cannot open it as a video"),
])
def test_bad_flags_name_the_flag_and_exit_2(tmp_path, checkpoint, random_model, capsys, argv, message):
    paths = {"pt": str(checkpoint), "onnx": str(random_model("detect", 320))}
    argv = [a.format(**paths) for a in argv]
    assert main(["export", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_format_is_an_argparse_error(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(checkpoint), "--format", "tflite"])
    assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


def test_engine_export_refuses_without_cuda(tmp_path, checkpoint, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "m.engine"
    assert main(["export", str(checkpoint), "--format", "engine", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "needs an NVIDIA GPU with CUDA on this machine, and no CUDA device was found" in err
    assert "--format onnx" in err and not out.exists()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["export", str(checkpoint), "--format", "engine", "--output", str(out)]) == 1
    assert "needs the TensorRT Python package" in capsys.readouterr().err and not out.exists()


def test_engine_export_with_gpu_records_the_tensorrt_version(tmp_path, checkpoint, random_model, capsys,
                                                             monkeypatch):
    """Only Ultralytics' TensorRT build is simulated (it needs a GPU): it gets the right arguments, and the
    engine it writes (Ultralytics header + engine) gets a sidecar naming the TensorRT that built it."""
    import importlib.machinery

    import torch

    import yolo_edge_tools.modelgen

    _, trt = install(monkeypatch, 10, "cuda-python", "10.3.0")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    onnx_model = random_model("detect", 320)
    calls = []

    def fake_build(source, fmt, imgsz, output, **kwargs):
        calls.append((Path(source).name, fmt, imgsz, kwargs))
        return write_engine(output, onnx_model, "10.3.0", ultralytics_header(onnx_model))

    monkeypatch.setattr(yolo_edge_tools.modelgen, "export_model", fake_build)
    out = tmp_path / "det.engine"
    assert main(["export", str(checkpoint), "--format", "engine", "--imgsz", "320", "--half", "--output",
                 str(out)]) == 0
    assert calls == [("yolov8n.pt", "engine", (320, 320), {"dynamic": False, "batch": 1, "quantize": 16,
                                                           "device": 0})]
    sidecar = json.loads((tmp_path / "det.engine.json").read_text())
    assert sidecar["tensorrt_version"] == "10.3.0" and sidecar["task"] == "detect"
    printed = capsys.readouterr().out
    assert "runs only on this GPU model with TensorRT 10.3.0" in printed and "trtexec" not in printed
    assert load_backend(out, OPTIONS_320).info.runtime == "tensorrt 10.3.0"
