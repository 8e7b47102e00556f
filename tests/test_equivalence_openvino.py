"""The OpenVINO runtime against Ultralytics' own predictor, as tests/test_equivalence.py does for ONNX
Runtime, and what bf16 changes.

Tolerances, per precision:

- fp32 (`precision: auto` or `fp32`), our Predictor with `runtime: openvino` against
  `YOLO(path).predict` on the same `.onnx` file (Ultralytics runs an .onnx in ONNX Runtime): as for
  ONNX Runtime, every Ultralytics box has one of ours of the same class with IoU >= 0.99 and score
  within 1e-3, the counts are equal; every mask IoU >= 0.95 at model-input resolution;
  classification top-5 identical, probabilities within 1e-3. Detect, segment and classify.
- An Ultralytics OpenVINO export folder (`YOLO(pt).export(format="openvino")`) run by our backend
  against `YOLO(folder).predict`: Ultralytics compiles it with OpenVINO's default precision, which is
  bf16 on a CPU with BF16 (this one) and f32 elsewhere, so our side runs `precision: bf16` where the CPU
  has it (else fp32): the same tolerances as fp32 (IoU >= 0.99, scores within 1e-3, equal counts),
  since both sides run the same graph in the same precision (measured: IoU 1.0, score difference 0).
  Classification there: the same top-5 classes, probabilities within 0.02, their order free only
  where two probabilities lie within that (a near-tie swapped on one video frame: bf16 rounding turns
  a 1e-7 preprocessing difference into a visible one). Our fp32 on the folder is also held to
  Ultralytics' fp32 (ONNX Runtime) on the .onnx exported from the same checkpoint.
- bf16 against our own fp32 on the same model (YOLOv8n, random weights, class_bias -1.5: 87-300 boxes
  a frame): only loose bounds hold. Measured on bus.jpg and zidane.jpg at 320 and 640 and on this
  test's 6 frames: 87-98 % of the fp32 boxes have a bf16 box of the same class at IoU >= 0.5 (92 % over
  the 6 frames; the rest are low-score boxes that trade places around the 300-box cut and NMS), 77-98 %
  at IoU >= 0.9 (87 %), median IoU 0.99, score differences 0.04 at the 95th percentile, up to 0.35. The test
  asserts >= 80 % matched at IoU >= 0.5, median IoU of matched boxes >= 0.95, and the 95th percentile of
  score differences <= 0.1. These are not "the same boxes": `precision: auto` therefore stays fp32 in
  OpenVINO, and bf16 is used only when configured.

Marked slow, like tests/test_equivalence.py. The numbers compared are printed (run with -s).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import test_equivalence
from conftest import MODEL_CACHE
from test_equivalence import (
    BOX_IOU,
    CLASS_BIAS,
    CLASSIFY_SIZE,
    CONF,
    DETECT_SIZE,
    IOU,
    MASK_IOU,
    MAX_DET,
    MIN_BOXES_PER_FRAME,
    MIN_BOXES_PER_RUN,
    SCORE_TOLERANCE,
    mask_iou,
    match_detections,
    pairwise_iou,
    report,
    ultralytics_predict,
    yolo_model,
)

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, load_backend
from yolo_edge.predictor import PostprocessSettings, Predictor

pytest.importorskip("openvino")

pytestmark = pytest.mark.slow

# test_equivalence's fixtures, used here under their own names
frames = test_equivalence.frames
sharp_classifier = test_equivalence.sharp_classifier

# bf16 against fp32 (see the docstring)
BF16_MATCH_IOU, BF16_MIN_MATCHED, BF16_MEDIAN_IOU, BF16_SCORE_P95 = 0.5, 0.80, 0.95, 0.1
BF16_CLASS_TOLERANCE = 0.02  # classification in bf16 against Ultralytics' bf16 (see assert_classes_match)


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_predictor(path: Path, task: str, imgsz: int, precision: str = "auto") -> Predictor:
    backend = load_backend(path, BackendOptions(device="cpu", input_size=(imgsz, imgsz), task=task,
                                                runtime="openvino", precision=precision))
    assert backend.info.runtime.startswith("openvino ")
    return Predictor(backend, PostprocessSettings(CONF, IOU, MAX_DET))


def assert_detections_match(predictor: Predictor, reference: Callable[[np.ndarray], object], frames_: list,
                            label: str, record_property) -> None:
    """Boxes (and, for segment, masks at model-input resolution) against Ultralytics' result per frame."""
    counts, ious, diffs, mask_ious = [], [], [], []
    for name, frame in frames_:
        prepared = predictor.prepare(frame)
        outputs = predictor.backend.infer(prepared.tensor)
        ours = predictor.decode(outputs, prepared.geometry)
        theirs = reference(frame)
        partner, iou, diff = match_detections(
            ours, theirs.boxes.xyxy.numpy().astype(np.float64), theirs.boxes.conf.numpy().astype(np.float64),
            theirs.boxes.cls.numpy().astype(np.int64))
        if theirs.masks is not None:
            _, regions = processing.decode_segments(outputs, prepared.geometry, predictor.info.num_classes,
                                                    CONF, IOU, MAX_DET)
            our_masks = processing.regions_to_masks(regions, prepared.geometry.input_shape)
            their_masks = theirs.masks.data.numpy().astype(bool)
            mask_ious.append(min(mask_iou(our_masks[j], their_masks[i]) for i, j in enumerate(partner)))
        assert len(ours) >= MIN_BOXES_PER_FRAME, f"{name}: only {len(ours)} boxes, the comparison is too weak"
        counts.append(len(ours))
        ious.append(iou.min())
        diffs.append(diff.max())
    assert sum(counts) >= MIN_BOXES_PER_RUN
    masks = {}
    if mask_ious:
        assert min(mask_ious) >= MASK_IOU, f"a mask matched at IoU {min(mask_ious):.3f}"
        masks = {"worst_mask_iou": float(min(mask_ious))}
    report(record_property, label, frames=len(frames_), boxes=sum(counts), worst_iou=float(min(ious)),
           worst_score_diff=float(max(diffs)), **masks)


def assert_classes_match(predictor: Predictor, reference: Callable[[np.ndarray], object], frames_: list,
                         label: str, record_property) -> None:
    """fp32: the same top-5 in the same order, probabilities within SCORE_TOLERANCE. bf16: the same top-5
    classes, their order free where probabilities differ by < BF16_CLASS_TOLERANCE, the sorted
    probabilities within it (on the sample video a near-tie, 2 and 3 in its top two, swapped places)."""
    bf16 = predictor.info.precision == "bf16"
    tolerance = BF16_CLASS_TOLERANCE if bf16 else SCORE_TOLERANCE
    worst = 0.0
    for name, frame in frames_:
        ours = predictor.predict(frame).result
        probs = reference(frame).probs
        if bf16:
            assert set(ours.class_ids.tolist()) == set(probs.top5), f"{name}: top-5 {ours.class_ids} vs {probs.top5}"
        else:
            assert ours.class_ids.tolist() == list(probs.top5), f"{name}: top-5 {ours.class_ids} vs {probs.top5}"
        diff = float(np.abs(ours.scores - probs.top5conf.numpy()).max())
        assert diff <= tolerance, f"{name}: probabilities differ by {diff:.2e}"
        worst = max(worst, diff)
    report(record_property, label, frames=len(frames_), worst_score_diff=worst)


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_openvino_on_an_onnx_file_matches_ultralytics(task, random_model, frames, record_property):
    path = random_model(task, DETECT_SIZE, "onnx", class_bias=CLASS_BIAS)
    predictor = openvino_predictor(path, task, DETECT_SIZE)
    assert predictor.info.precision == "fp32" and predictor.info.runtime.endswith("(CPU, f32)")
    assert_detections_match(predictor, lambda frame: ultralytics_predict(path, task, frame, DETECT_SIZE), frames,
                            f"{task}/openvino fp32", record_property)


def test_openvino_classifier_matches_ultralytics(sharp_classifier, frames, record_property):
    path = sharp_classifier("onnx")
    predictor = openvino_predictor(path, "classify", CLASSIFY_SIZE, precision="fp32")
    assert_classes_match(predictor, lambda frame: ultralytics_predict(path, "classify", frame, CLASSIFY_SIZE), frames,
                         "classify/openvino fp32", record_property)


@pytest.fixture(scope="module")
def openvino_export(random_model, sharp_classifier) -> Callable[[str], tuple[Path, Path]]:
    """openvino_export(task) -> (Ultralytics' OpenVINO folder, the .onnx exported from the same checkpoint)."""
    import ultralytics

    from yolo_edge_tools.modelgen import export_model

    def get(task: str) -> tuple[Path, Path]:
        size = CLASSIFY_SIZE if task == "classify" else DETECT_SIZE
        directory = MODEL_CACHE / f"openvino-export-{ultralytics.__version__}-{task}-{size}-{CLASS_BIAS}"
        done = directory / "DONE"
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            source = sharp_classifier("pt") if task == "classify" else random_model(task, size, "pt",
                                                                                    class_bias=CLASS_BIAS)
            checkpoint = Path(shutil.copy(source, directory / source.name))
            folder = export_model(checkpoint, "openvino", size)
            onnx_file = export_model(checkpoint, "onnx", size)
            done.write_text(f"{folder}\n{onnx_file}")
        folder_text, onnx_text = done.read_text().split("\n")
        return Path(folder_text), Path(onnx_text)

    return get


@pytest.mark.parametrize("task", ["detect", "segment", "classify"])
def test_an_ultralytics_openvino_folder_matches_ultralytics(task, openvino_export, frames, record_property):
    """Our backend on Ultralytics' own OpenVINO export against `YOLO(folder).predict`, both in OpenVINO's
    default precision for this CPU; and our fp32 on the folder against Ultralytics' fp32 on the .onnx."""
    folder, onnx_file = openvino_export(task)
    size = CLASSIFY_SIZE if task == "classify" else DETECT_SIZE
    native = "bf16" if cpu_has_bf16() else "fp32"
    comparisons = [(native, folder, f"{task}/openvino folder {native} vs Ultralytics' OpenVINO"),
                   ("fp32", onnx_file, f"{task}/openvino folder fp32 vs Ultralytics' onnx")]
    for precision, reference_model, label in comparisons:
        predictor = openvino_predictor(folder, task, size, precision)
        assert predictor.info.format == "openvino" and predictor.info.precision == precision

        def reference(frame: np.ndarray, model: Path = reference_model):
            return yolo_model(model, task).predict(frame, imgsz=size, conf=CONF, iou=IOU, max_det=MAX_DET,
                                                   rect=False, device="cpu", verbose=False)[0]

        if task == "classify":
            assert_classes_match(predictor, reference, frames, label, record_property)
        else:
            assert_detections_match(predictor, reference, frames, label, record_property)


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_bf16_stays_within_its_stated_bounds_of_fp32(task, random_model, frames, record_property):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no BF16 support in OpenVINO")
    path = random_model(task, DETECT_SIZE, "onnx", class_bias=CLASS_BIAS)
    fp32, bf16 = openvino_predictor(path, task, DETECT_SIZE, "fp32"), openvino_predictor(path, task, DETECT_SIZE,
                                                                                         "bf16")
    assert bf16.info.precision == "bf16" and bf16.info.runtime.endswith("(CPU, bf16)")
    ious, score_diffs, reference_boxes = [], [], 0
    for _, frame in frames:
        ours, reference = bf16.predict(frame).result, fp32.predict(frame).result
        matched_iou, matched_diff = greedy_match(reference, ours)
        ious.extend(matched_iou)
        score_diffs.extend(matched_diff)
        reference_boxes += len(reference)
    matched = np.asarray(ious)
    share = len(matched) / reference_boxes
    assert reference_boxes >= MIN_BOXES_PER_RUN
    assert share >= BF16_MIN_MATCHED, f"only {share:.1%} of the fp32 boxes have a bf16 counterpart"
    assert float(np.median(matched)) >= BF16_MEDIAN_IOU
    assert float(np.percentile(score_diffs, 95)) <= BF16_SCORE_P95
    report(record_property, f"{task}/openvino bf16 vs fp32", boxes=reference_boxes, matched_share=share,
           median_iou=float(np.median(matched)), share_iou_0_9=float((matched >= 0.9).sum() / reference_boxes),
           score_diff_p95=float(np.percentile(score_diffs, 95)), worst_score_diff=float(max(score_diffs)))


def greedy_match(reference: processing.Detections, other: processing.Detections) -> tuple[list[float], list[float]]:
    """In `reference`'s score order, each box's best unused counterpart of the same class at IoU >=
    BF16_MATCH_IOU: (IoU per matched box, |score difference| per matched box)."""
    if not len(reference) or not len(other):
        return [], []
    iou = pairwise_iou(reference.boxes.astype(np.float64), other.boxes.astype(np.float64))
    iou[reference.class_ids[:, None] != other.class_ids[None, :]] = 0.0
    ious, diffs = [], []
    for i in np.argsort(-reference.scores):
        j = int(iou[i].argmax())
        if iou[i, j] < BF16_MATCH_IOU:
            continue
        ious.append(float(iou[i, j]))
        diffs.append(abs(float(reference.scores[i]) - float(other.scores[j])))
        iou[:, j] = 0.0
    return ious, diffs


assert BOX_IOU == 0.99 and SCORE_TOLERANCE == 1e-3  # the fp32 tolerances the docstring states
