"""Our Predictor against Ultralytics' own predictor on the same model file and the same images.

For detect, segment and classify, on the ONNX path (ONNX Runtime) and the PyTorch path (our torch
backend), every frame is run twice: through `yolo_edge.predictor.Predictor` (numpy pre/post-processing)
and through `YOLO(path).predict(...)` with the same conf / iou / max_det / imgsz. Then:

- every Ultralytics box has one of ours with the same class, IoU >= 0.99 and score within 1e-3, and
  the counts are equal (so nothing is missing or extra);
- every segmentation mask has IoU >= 0.95 with Ultralytics' mask of that box at model-input
  resolution (where Ultralytics keeps them), the best 20 per frame also in frame pixels, and the
  published polygons' vertices lie on their masks;
- classification top-5 classes are identical, probabilities within 1e-3.

Making it fair: both sides letterbox the same way. For a `.pt` model Ultralytics' default
(`rect=True`) and our Predictor both use the minimum stride-multiple rectangle (e.g. 256x320 for a
landscape frame); a fixed-shape ONNX model is letterboxed to its full square input by both. A separate
test calls `processing.preprocess(..., stride=32)` directly against `rect=True` and checks that both
portrait and landscape rectangles occur, and another runs a YOLO26 checkpoint (two heads: NMS and
NMS-free) against `nms=None` and `nms=False`. Classification uses Ultralytics' own transform
(short-side resize + centre crop) on both sides.

Making it bite: random models emit near-identical scores unless their batch-norm statistics are
calibrated (the `random_model` fixture does that); detect/segment models use `class_bias=-1.5` so each
frame gives dozens to hundreds of boxes (the test asserts >= 30 per frame and >= 200 per run), and
the classifier's last layer is sharpened so its top-5 probabilities are well apart and depend on
the image. The number of boxes compared and the worst IoU / score difference are printed (run
with `-s`) and recorded as junit properties.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MODEL_CACHE, asset_images

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, load_backend
from yolo_edge.predictor import PostprocessSettings, Predictor

pytestmark = pytest.mark.slow

CONF, IOU, MAX_DET = 0.25, 0.7, 300
# YOLO_EDGE_TEST_DEVICE=cuda runs the .pt comparisons on a GPU: our GPU frame path against Ultralytics on
# the same GPU (the default, the CPU, is where CI runs).
TORCH_DEVICE = os.environ.get("YOLO_EDGE_TEST_DEVICE", "cpu")
DETECT_SIZE, CLASSIFY_SIZE = 320, 224
CLASS_BIAS = -1.5
VIDEO_FRAMES = (0, 7, 13, 24)  # the sample video slides over bus.jpg (0-9, 20-29) and zidane.jpg (10-19)
MIN_BOXES_PER_FRAME, MIN_BOXES_PER_RUN = 30, 200
BOX_IOU, SCORE_TOLERANCE, MASK_IOU = 0.99, 1e-3, 0.95
FRAME_MASKS = 20  # per frame, compared at full frame resolution
CLASSIFIER_SHARPNESS = 30.0  # multiplies the classifier's last layer: logits spread ~2 instead of ~0.08


@pytest.fixture(scope="module")
def frames(sample_video: Path) -> list[tuple[str, np.ndarray]]:
    """bus.jpg, zidane.jpg and a few frames of the sample video, as BGR arrays."""
    out = [(p.name, cv2.imread(str(p))) for p in asset_images()]
    capture = cv2.VideoCapture(str(sample_video))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in VIDEO_FRAMES:
            out.append((f"{sample_video.name}#{index}", frame))
        index += 1
    capture.release()
    assert len(out) == 2 + len(VIDEO_FRAMES), f"expected bus, zidane and {len(VIDEO_FRAMES)} video frames"
    return out


@pytest.fixture(scope="module")
def sharp_classifier() -> Callable[[str], Path]:
    """sharp_classifier(fmt) -> a calibrated random yolov8n-cls whose probabilities are far from uniform.

    Cached beside the `random_model` fixture's models; the .onnx is exported from the cached .pt.
    """
    import torch
    import ultralytics

    from yolo_edge_tools.modelgen import build_model, export_model, save_checkpoint

    directory = MODEL_CACHE / f"sharp-cls-{ultralytics.__version__}-{CLASSIFY_SIZE}-{CLASSIFIER_SHARPNESS}"
    checkpoint = directory / "yolov8n-cls-sharp.pt"
    exported = directory / f"yolov8n-cls-sharp-{CLASSIFY_SIZE}.onnx"
    if not (directory / "DONE").exists():
        directory.mkdir(parents=True, exist_ok=True)
        yolo = build_model("yolov8n-cls.yaml", seed=0, class_bias=None)
        with torch.no_grad():
            yolo.model.model[-1].linear.weight.mul_(CLASSIFIER_SHARPNESS)
        save_checkpoint(yolo, checkpoint)
        export_model(checkpoint, "onnx", CLASSIFY_SIZE, exported)
        (directory / "DONE").write_text("ok")
    return lambda fmt: checkpoint if fmt == "pt" else exported


_ULTRALYTICS_MODELS: dict[str, object] = {}


def _device_for(path: Path) -> str:
    return TORCH_DEVICE if path.suffix == ".pt" else "cpu"


def yolo_model(path: Path, task: str):
    """Ultralytics' YOLO object for a model file, loaded once."""
    from ultralytics import YOLO

    if str(path) not in _ULTRALYTICS_MODELS:
        _ULTRALYTICS_MODELS[str(path)] = YOLO(str(path), task=task)
    return _ULTRALYTICS_MODELS[str(path)]


def ultralytics_predict(path: Path, task: str, frame: np.ndarray, imgsz: int):
    """Ultralytics' own result for one frame, letterboxed as our Predictor does for that format:
    the minimum rectangle (`rect=True`, Ultralytics' default) for a .pt model, the square otherwise."""
    return yolo_model(path, task).predict(frame, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET,
                                          rect=path.suffix == ".pt", device=_device_for(path), verbose=False)[0].cpu()


def our_predictor(path: Path, task: str, imgsz: int, device: str | None = None) -> Predictor:
    options = BackendOptions(device=device or _device_for(path), input_size=(imgsz, imgsz), task=task)
    backend = load_backend(path, options)
    return Predictor(backend, PostprocessSettings(CONF, IOU, MAX_DET))


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(ours: processing.Detections, boxes: np.ndarray, scores: np.ndarray,
                     classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair every Ultralytics detection with one of ours: same class, IoU >= BOX_IOU, closest score.

    Greedy in Ultralytics' (score) order, each of ours used once; boxes clipped to the frame can
    coincide, so the score picks between equally placed candidates. Returns (our index per theirs,
    IoU per pair, |score difference| per pair) and fails on the first detection without a partner.
    """
    assert len(ours) == len(boxes), f"{len(ours)} detections, Ultralytics has {len(boxes)}"
    iou = pairwise_iou(boxes, ours.boxes.astype(np.float64))
    score_diff = np.abs(scores[:, None] - ours.scores[None, :].astype(np.float64))
    used = np.zeros(len(ours), bool)
    partner = np.empty(len(boxes), np.int64)
    for i in range(len(boxes)):
        valid = ~used & (ours.class_ids == classes[i]) & (iou[i] >= BOX_IOU) & (score_diff[i] <= SCORE_TOLERANCE)
        assert valid.any(), (f"Ultralytics box {boxes[i]} class {classes[i]} score {scores[i]:.5f} has no match; "
                             f"best IoU {iou[i].max():.4f}")
        candidates = np.flatnonzero(valid)
        partner[i] = candidates[score_diff[i, candidates].argmin()]
        used[partner[i]] = True
    rows = np.arange(len(boxes))
    return partner, iou[rows, partner], score_diff[rows, partner]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def report(record_property, label: str, **numbers) -> None:
    text = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items())
    print(f"\n[equivalence] {label}: {text}")
    for key, value in numbers.items():
        record_property(f"{label}:{key}", value)


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_detect_matches_ultralytics(fmt, random_model, frames, record_property):
    path = random_model("detect", DETECT_SIZE, fmt, class_bias=CLASS_BIAS)
    predictor = our_predictor(path, "detect", DETECT_SIZE)
    counts, ious, diffs = [], [], []
    for name, frame in frames:
        ours = predictor.predict(frame).result
        theirs = ultralytics_predict(path, "detect", frame, DETECT_SIZE).boxes
        _, iou, diff = match_detections(ours, theirs.xyxy.numpy().astype(np.float64),
                                        theirs.conf.numpy().astype(np.float64), theirs.cls.numpy().astype(np.int64))
        assert len(ours) >= MIN_BOXES_PER_FRAME, f"{name}: only {len(ours)} boxes, the comparison is too weak"
        counts.append(len(ours))
        ious.append(iou.min())
        diffs.append(diff.max())
    assert sum(counts) >= MIN_BOXES_PER_RUN
    report(record_property, f"detect/{fmt}", frames=len(frames), boxes=sum(counts), fewest_per_frame=min(counts),
           worst_iou=float(min(ious)), worst_score_diff=float(max(diffs)))


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_segment_matches_ultralytics(fmt, random_model, frames, record_property):
    """Boxes as for detect; every mask at model-input resolution (where Ultralytics keeps them), and the
    best FRAME_MASKS masks per frame also at frame resolution and against their published polygon
    (full-frame masks cost N x H x W, so not all 300 of them)."""
    from ultralytics.utils import ops

    path = random_model("segment", DETECT_SIZE, fmt, class_bias=CLASS_BIAS)
    predictor = our_predictor(path, "segment", DETECT_SIZE)
    nc = predictor.info.num_classes
    counts, ious, diffs, input_ious, frame_ious, vertex_distances = [], [], [], [], [], []
    for name, frame in frames:
        # Prepared on the host (on a GPU, prepare() stages frames for the device frame path instead).
        stride = predictor.info.stride if fmt == "pt" else None
        tensor, geometry = processing.preprocess(frame, (DETECT_SIZE, DETECT_SIZE), stride=stride)
        outputs = predictor.backend.infer(tensor)
        ours, regions = processing.decode_segments(outputs, geometry, nc, CONF, IOU, MAX_DET)
        streamed, _ = predictor.decode(outputs, geometry).with_polygons()  # what the component publishes
        np.testing.assert_array_equal(streamed.boxes, ours.boxes)
        theirs = ultralytics_predict(path, "segment", frame, DETECT_SIZE)
        partner, iou, diff = match_detections(
            ours, theirs.boxes.xyxy.numpy().astype(np.float64), theirs.boxes.conf.numpy().astype(np.float64),
            theirs.boxes.cls.numpy().astype(np.int64))
        their_input_masks = theirs.masks.data.numpy().astype(bool)
        our_input_masks = processing.regions_to_masks(regions, geometry.input_shape)
        input_ious.append(min(mask_iou(our_input_masks[j], their_input_masks[i]) for i, j in enumerate(partner)))
        # Frame resolution: Ultralytics' own scale_masks against our masks_to_frame.
        best = partner[:FRAME_MASKS]
        their_frame_masks = ops.scale_masks(theirs.masks.data[None, :FRAME_MASKS].float(), frame.shape[:2])[0]
        our_frame_masks = processing.masks_to_frame(our_input_masks[best], geometry)
        frame_ious.append(min(mask_iou(a, b) for a, b in zip(our_frame_masks, their_frame_masks.numpy() > 0.5,
                                                             strict=True)))
        # A published polygon's vertices are points of the mask outline (Douglas-Peucker keeps a subset
        # of contour pixels), so each must lie on the frame mask, up to resampling (2 px).
        for j, mask in zip(best, our_frame_masks, strict=True):
            polygon = streamed.masks[j]
            assert 3 <= len(polygon) <= processing.MAX_POLYGON_POINTS
            distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
            x = np.clip(np.round(polygon[:, 0]).astype(int), 0, mask.shape[1] - 1)
            y = np.clip(np.round(polygon[:, 1]).astype(int), 0, mask.shape[0] - 1)
            vertex_distances.append(float(distance[y, x].max()))
        assert len(ours) >= MIN_BOXES_PER_FRAME, f"{name}: only {len(ours)} instances, the comparison is too weak"
        counts.append(len(ours))
        ious.append(iou.min())
        diffs.append(diff.max())
    assert sum(counts) >= MIN_BOXES_PER_RUN
    assert min(input_ious) >= MASK_IOU, f"a mask matched at IoU {min(input_ious):.3f} at input resolution"
    assert min(frame_ious) >= MASK_IOU, f"a mask matched at IoU {min(frame_ious):.3f} at frame resolution"
    assert max(vertex_distances) <= 2.0, f"a polygon vertex lies {max(vertex_distances):.1f} px off its mask"
    report(record_property, f"segment/{fmt}", frames=len(frames), boxes=sum(counts), fewest_per_frame=min(counts),
           worst_iou=float(min(ious)), worst_score_diff=float(max(diffs)), masks=sum(counts),
           worst_mask_iou=float(min(input_ious)), frame_masks=len(vertex_distances),
           worst_frame_mask_iou=float(min(frame_ious)), worst_vertex_offset_px=max(vertex_distances))


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_minimum_rectangle_letterbox_matches_ultralytics_default(task, random_model, frames, record_property):
    """A .pt model accepts any multiple of its stride, and Ultralytics' default (`rect=True`) feeds it
    the smallest one that fits (320x256 for bus.jpg). Our `preprocess(..., stride=...)` does the same;
    with it our pipeline equals Ultralytics' default predict, not only the fixed-square mode."""
    path = random_model(task, DETECT_SIZE, "pt", class_bias=CLASS_BIAS)
    predictor = our_predictor(path, task, DETECT_SIZE)
    shapes, counts, worst_mask = set(), [], 1.0
    for name, frame in frames:
        tensor, geometry = processing.preprocess(frame, (DETECT_SIZE, DETECT_SIZE), stride=predictor.info.stride)
        shapes.add(geometry.input_shape)
        outputs = predictor.backend.infer(tensor)
        ours = predictor.decode(outputs, geometry)
        theirs = yolo_model(path, task).predict(  # Ultralytics' default: rect=True
            frame, imgsz=DETECT_SIZE, conf=CONF, iou=IOU, max_det=MAX_DET, device="cpu", verbose=False)[0]
        partner, _, _ = match_detections(ours, theirs.boxes.xyxy.numpy().astype(np.float64),
                                         theirs.boxes.conf.numpy().astype(np.float64),
                                         theirs.boxes.cls.numpy().astype(np.int64))
        if task == "segment":
            _, regions = processing.decode_segments(outputs, geometry, predictor.info.num_classes, CONF, IOU, MAX_DET)
            our_masks = processing.regions_to_masks(regions, geometry.input_shape)
            their_masks = theirs.masks.data.numpy().astype(bool)
            assert their_masks.shape[1:] == geometry.input_shape
            worst_mask = min(worst_mask, min(mask_iou(our_masks[j], their_masks[i]) for i, j in enumerate(partner)))
        assert len(ours) >= MIN_BOXES_PER_FRAME, f"{name}: only {len(ours)} boxes"
        counts.append(len(ours))
    assert worst_mask >= MASK_IOU
    assert {(320, 256), (256, 320)} <= shapes, f"expected portrait and landscape rectangles, got {shapes}"
    masks = {"worst_mask_iou": worst_mask} if task == "segment" else {}
    report(record_property, f"{task}/pt rect", frames=len(frames), boxes=sum(counts), input_shapes=sorted(shapes),
           **masks)


@pytest.fixture(scope="module")
def end2end_checkpoint() -> Callable[[str], Path]:
    """end2end_checkpoint(task) -> a calibrated random YOLO26n .pt whose NMS-free (one-to-one) head is on,
    as in Ultralytics' released YOLO26 weights: its forward returns (1, 300, 6 [+ 32]) rows."""
    import torch
    import ultralytics

    from yolo_edge_tools.modelgen import build_model, save_checkpoint

    def get(task: str) -> Path:
        architecture = {"detect": "yolo26n.yaml", "segment": "yolo26n-seg.yaml"}[task]
        directory = MODEL_CACHE / f"end2end-{ultralytics.__version__}-{task}-{CLASS_BIAS}"
        checkpoint = directory / Path(architecture).with_suffix(".pt").name
        if not (directory / "DONE").exists():
            yolo = build_model(architecture, seed=0, class_bias=CLASS_BIAS)
            head = yolo.model.model[-1]
            with torch.no_grad():
                for branch in head.one2one_cv3:  # build_model biases the one-to-many branch only
                    last = branch[-1]
                    (last if isinstance(last, torch.nn.Conv2d) else last.conv).bias.fill_(CLASS_BIAS)
            head.end2end = True
            save_checkpoint(yolo, checkpoint)
            (directory / "DONE").write_text("ok")
        return checkpoint

    return get


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_yolo26_checkpoint_matches_ultralytics(task, end2end_checkpoint, frames, record_property):
    """A YOLO26 .pt carries two heads. With Ultralytics' default `nms=None` its predictor runs the
    one-to-many head plus NMS, as our torch backend does; with `nms=False` it runs the NMS-free head,
    whose (1, 300, 6 [+ 32]) rows our decoding reads too (fed here from that head's own forward)."""
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    path = end2end_checkpoint(task)
    predictor = our_predictor(path, task, DETECT_SIZE, device="cpu")  # beside the CPU nms-free model
    nms_free, _ = load_checkpoint(str(path))
    nms_free = nms_free.fuse().eval()
    assert nms_free.end2end
    counts = {"nms": [], "nms-free": []}
    worst_mask = 1.0
    for name, frame in frames:
        prepared = predictor.prepare(frame)
        with torch.inference_mode():
            raw = nms_free(torch.from_numpy(prepared.tensor))[0]
        nms_free_outputs = [t.numpy() for t in (raw if isinstance(raw, tuple) else (raw,))]
        assert nms_free_outputs[0].shape[1:] == (MAX_DET, 6 + (32 if task == "segment" else 0))
        for mode, outputs, nms in (("nms", predictor.backend.infer(prepared.tensor), None),
                                   ("nms-free", nms_free_outputs, False)):
            ours = predictor.decode(outputs, prepared.geometry)
            theirs = yolo_model(path, task).predict(frame, imgsz=DETECT_SIZE, conf=CONF, iou=IOU, max_det=MAX_DET,
                                                    rect=True, nms=nms, device="cpu", verbose=False)[0]
            partner, _, _ = match_detections(ours, theirs.boxes.xyxy.numpy().astype(np.float64),
                                             theirs.boxes.conf.numpy().astype(np.float64),
                                             theirs.boxes.cls.numpy().astype(np.int64))
            if task == "segment":
                _, regions = processing.decode_segments(outputs, prepared.geometry, predictor.info.num_classes,
                                                        CONF, IOU, MAX_DET)
                our_masks = processing.regions_to_masks(regions, prepared.geometry.input_shape)
                their_masks = theirs.masks.data.numpy().astype(bool)
                worst_mask = min(worst_mask, *(mask_iou(our_masks[j], their_masks[i]) for i, j in enumerate(partner)))
            assert len(ours) >= MIN_BOXES_PER_FRAME, f"{name} ({mode}): only {len(ours)} boxes"
            counts[mode].append(len(ours))
    assert worst_mask >= MASK_IOU
    masks = {"worst_mask_iou": worst_mask} if task == "segment" else {}
    report(record_property, f"{task}/pt yolo26", frames=len(frames), boxes_nms=sum(counts["nms"]),
           boxes_nms_free=sum(counts["nms-free"]), **masks)


@pytest.mark.parametrize("fmt", ["onnx", "pt"])
def test_classify_matches_ultralytics(fmt, sharp_classifier, frames, record_property):
    path = sharp_classifier(fmt)
    predictor = our_predictor(path, "classify", CLASSIFY_SIZE)
    worst, top1 = 0.0, set()
    for name, frame in frames:
        ours = predictor.predict(frame).result
        probs = ultralytics_predict(path, "classify", frame, CLASSIFY_SIZE).probs
        assert ours.class_ids.tolist() == list(probs.top5), f"{name}: top-5 {ours.class_ids} vs {probs.top5}"
        diff = float(np.abs(ours.scores - probs.top5conf.numpy()).max())
        assert diff <= SCORE_TOLERANCE, f"{name}: probabilities differ by {diff:.2e}"
        # The top-5 must be meaningful: clearly separated and above the uniform 1/nc.
        assert ours.scores[0] > 10 / predictor.info.num_classes
        assert np.diff(ours.scores).max() < 0, "top-5 probabilities tie"
        worst = max(worst, diff)
        top1.add(int(ours.class_ids[0]))
    assert len(top1) >= 2, "every frame gives the same top-1: the model ignores its input"
    report(record_property, f"classify/{fmt}", frames=len(frames), distinct_top1=len(top1),
           worst_score_diff=worst)

