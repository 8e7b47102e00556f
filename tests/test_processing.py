"""Unit tests of yolo_edge.processing on synthetic tensors, with expected values worked out by hand
(and, where Ultralytics has the same function, cross-checked against it)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from yolo_edge import processing as P
from yolo_edge.backends import ModelInfo

pytestmark = pytest.mark.runtime

# --- letterbox ---------------------------------------------------------------------------------------

# (frame h, w), (input h, w) -> (resized h, w), (top, left)
LETTERBOX_CASES = [
    ((1080, 810), (320, 320), (320, 240), (0, 40)),     # portrait: pillars left and right
    ((720, 1280), (320, 320), (180, 320), (70, 0)),     # landscape: bars top and bottom
    ((480, 640), (640, 640), (480, 640), (80, 0)),      # no resize, only padding
    ((100, 101), (64, 64), (63, 64), (0, 0)),           # half-pixel padding: 0 on top, 1 below
    ((101, 100), (64, 64), (64, 63), (0, 0)),           # half-pixel padding: 0 left, 1 right
    ((100, 150), (640, 640), (427, 640), (106, 0)),     # upscaling; odd padding 213 -> 106 + 107
    ((1, 1000), (320, 320), (1, 320), (159, 0)),        # a 1-pixel-high frame keeps 1 row; 159.5 -> 159
    ((480, 640), (384, 640), (384, 512), (0, 64)),      # non-square input
]


@pytest.mark.parametrize(("frame_shape", "input_shape", "resized", "offset"), LETTERBOX_CASES)
def test_letterbox_geometry_and_padding(frame_shape, input_shape, resized, offset):
    frame = np.full((*frame_shape, 3), 200, np.uint8)
    boxed, geo = P.letterbox(frame, input_shape)
    assert boxed.shape == (*input_shape, 3)
    assert geo.resized_shape == resized
    assert geo.offset == offset
    top, left = offset
    content = np.zeros(input_shape, bool)
    content[top:top + resized[0], left:left + resized[1]] = True
    assert (boxed[content] == 200).all(), "the frame's content is not where the geometry says"
    assert (boxed[~content] == P.LETTERBOX_FILL).all(), "padding is not grey 114"


@pytest.mark.parametrize(("frame_shape", "input_shape"), [c[:2] for c in LETTERBOX_CASES])
def test_letterbox_equals_ultralytics(frame_shape, input_shape):
    augment = pytest.importorskip("ultralytics.data.augment")
    frame = np.random.default_rng(0).integers(0, 256, (*frame_shape, 3), dtype=np.uint8)
    expected = augment.LetterBox(input_shape, auto=False)(image=frame)
    np.testing.assert_array_equal(P.letterbox(frame, input_shape)[0], expected)


def test_letterbox_reuses_the_buffer_it_is_given():
    frame = np.zeros((48, 64, 3), np.uint8)
    buffers: dict = {}
    tensor, _ = P.preprocess(frame, (32, 32), buffers=buffers)
    again, _ = P.preprocess(frame + 1, (32, 32), buffers=buffers)
    assert again is tensor and buffers["letterbox"].shape == (32, 32, 3)


def test_letterbox_rejects_an_empty_frame():
    with pytest.raises(ValueError, match="no pixels"):
        P.letterbox_geometry((0, 10), (32, 32))


# --- tensor layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_preprocess_layout_is_rgb_chw_in_unit_range(dtype):
    frame = np.empty((32, 32, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 255  # B, G, R
    tensor, _ = P.preprocess(frame, (32, 32), dtype)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == dtype
    assert tensor[0, 0, 0, 0] == dtype(255 / 255)  # channel 0 is red
    assert tensor[0, 1, 0, 0] == dtype(20 / 255)
    assert tensor[0, 2, 0, 0] == dtype(10 / 255)


def test_to_tensor_divides_exactly_like_torch():
    """x / 255 (not x * (1/255)): identical bits to Ultralytics' `.div_(255)` for every byte value."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, 2)
    tensor = P.to_tensor(values)
    expected = values[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(tensor[0], expected)


# --- NMS and decoding --------------------------------------------------------------------------------

def test_nms_keeps_iou_equal_to_the_threshold_and_drops_above_it():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    assert P.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert P.nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_orders_by_score_and_honours_max_keep():
    rng = np.random.default_rng(0)
    corners = np.arange(50, dtype=np.float32)[:, None] * 20  # 50 disjoint boxes
    boxes = np.hstack([corners, corners, corners + 10, corners + 10])
    scores = rng.random(50).astype(np.float32)
    kept = P.nms(boxes, scores, 0.5, max_keep=7)
    assert kept.tolist() == np.argsort(-scores)[:7].tolist()


def random_boxes(rng: np.random.Generator, count: int, integer: bool) -> np.ndarray:
    corners = rng.uniform(0, 100, (count, 2))
    boxes = np.hstack([corners, corners + rng.uniform(0, 40, (count, 2))]).astype(np.float32)
    return np.round(boxes) if integer else boxes  # integer boxes make IoU == threshold ties common


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("tied_scores", [False, True])
def test_nms_equals_torchvision(integer, tied_scores):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(int(integer) * 2 + int(tied_scores))
    for _ in range(30):
        count = int(rng.integers(1, 300))
        boxes = random_boxes(rng, count, integer)
        scores = (rng.choice([0.3, 0.6, 0.9], count) if tied_scores else rng.random(count) + 1e-3).astype(np.float32)
        classes = rng.integers(0, 4, count)
        offset = (boxes + classes[:, None] * P.CLASS_OFFSET).astype(np.float32)
        for threshold in (0.3, 0.5, 0.7):
            expected = torchvision.ops.nms(torch.from_numpy(offset), torch.from_numpy(scores), threshold)[:40]
            np.testing.assert_array_equal(P.nms(offset, scores, threshold, 40, classes), expected.numpy())
            plain = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)[:40]
            np.testing.assert_array_equal(P.nms(boxes, scores, threshold, 40), plain.numpy())


def test_nms_in_small_blocks_equals_one_block_and_stops_at_max_keep(monkeypatch):
    rng = np.random.default_rng(7)
    boxes, scores = random_boxes(rng, 200, integer=True), rng.random(200).astype(np.float32)
    expected = P.nms(boxes, scores, 0.5)
    monkeypatch.setattr(P, "_NMS_BLOCK", 7)
    np.testing.assert_array_equal(P.nms(boxes, scores, 0.5), expected)
    np.testing.assert_array_equal(P.nms(boxes, scores, 0.5, 5), expected[:5])
    classes = rng.integers(0, 3, 200)
    full = P.nms(boxes, scores, 0.5, None, classes)
    np.testing.assert_array_equal(P.nms(boxes, scores, 0.5, 9, classes), full[:9])


def head_output(rows: list[tuple[float, float, float, float, int, float]], num_classes: int,
                extra: int = 0, anchors: int = 20) -> np.ndarray:
    """A (1, 4 + nc + extra, anchors) YOLOv8 head output; rows are (cx, cy, w, h, class, score),
    extra columns hold the row number, other anchors score 0."""
    out = np.zeros((1, 4 + num_classes + extra, anchors), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, i] = cx, cy, w, h
        out[0, 4 + cls, i] = score
        out[0, 4 + num_classes:, i] = i
    return out


def test_decode_is_class_aware():
    # Two identical boxes of different classes both survive; a same-class twin is suppressed.
    output = head_output([(50, 50, 20, 20, 0, 0.9), (50, 50, 20, 20, 1, 0.8), (51, 50, 20, 20, 0, 0.7)], 3)
    boxes, scores, classes, _ = P.decode_detections(output, 3, 0.25, 0.7, 300)
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(boxes, [[40, 40, 60, 60], [40, 40, 60, 60]])


def test_decode_threshold_is_strict_and_takes_the_best_class():
    output = head_output([(10, 10, 4, 4, 2, 0.25), (30, 30, 4, 4, 1, 0.26)], 3)
    output[0, 4 + 0, 1] = 0.1  # a weaker second class on the same anchor
    _, scores, classes, _ = P.decode_detections(output, 3, 0.25, 0.7, 300)
    assert classes.tolist() == [1] and scores.tolist() == [np.float32(0.26)]


def test_decode_limits_to_max_det_and_keeps_extra_columns_aligned():
    rows = [(i * 30 + 10, 10, 8, 8, 0, 0.3 + i / 100) for i in range(10)]
    boxes, scores, _, extra = P.decode_detections(head_output(rows, 2, extra=3), 2, 0.25, 0.7, 4)
    assert len(scores) == 4
    assert extra[:, 0].tolist() == [9, 8, 7, 6]  # the row numbers of the best four
    np.testing.assert_allclose(boxes[:, 0], [9 * 30 + 6, 8 * 30 + 6, 7 * 30 + 6, 6 * 30 + 6])


def test_decode_with_nothing_above_threshold():
    boxes, scores, classes, extra = P.decode_detections(head_output([], 4, extra=32), 4, 0.25, 0.7, 300)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,) and extra.shape == (0, 32)


# --- back to the frame -------------------------------------------------------------------------------

def test_boxes_map_back_to_frame_pixels_and_clip():
    geo = P.letterbox_geometry((720, 1280), (320, 320))  # scale 0.25, 70 px bars
    boxes = np.array([[0, 70, 320, 250], [10, 80, 20, 90], [-5, 60, 400, 300]], np.float32)
    np.testing.assert_allclose(P.scale_boxes_to_frame(boxes, geo),
                               [[0, 0, 1280, 720], [40, 40, 80, 80], [0, 0, 1280, 720]])


@pytest.mark.parametrize(("frame_shape", "input_shape"), [c[:2] for c in LETTERBOX_CASES])
def test_box_scaling_equals_ultralytics(frame_shape, input_shape):
    ops = pytest.importorskip("ultralytics.utils.ops")
    boxes = np.random.default_rng(1).uniform(-20, max(input_shape) + 20, (50, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + np.abs(boxes[:, 2:] - boxes[:, :2])
    expected = ops.scale_boxes(input_shape, boxes.copy(), frame_shape)
    ours = P.scale_boxes_to_frame(boxes, P.letterbox_geometry(frame_shape, input_shape))
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-3)


def test_postprocess_detect_returns_frame_pixel_detections():
    geo = P.letterbox_geometry((1080, 810), (320, 320))  # 40 px pillars, scale 320/1080
    output = head_output([(160, 160, 80, 80, 5, 0.8)], 10)
    result = P.postprocess_detect(output, geo, 10, 0.25, 0.7, 300)
    assert len(result) == 1 and result.class_ids.tolist() == [5]
    # input box (120, 120, 200, 200): minus the 40 px pillar, divided by the scale 320/1080
    np.testing.assert_allclose(result.boxes[0], [270, 405, 540, 675], rtol=1e-5)


# --- top-k -------------------------------------------------------------------------------------------

def test_top_k_orders_best_first_and_caps_k():
    probabilities = np.array([[0.1, 0.4, 0.05, 0.3, 0.15]], np.float32)
    result = P.top_k(probabilities, 3)
    assert result.class_ids.tolist() == [1, 3, 4]
    np.testing.assert_allclose(result.scores, [0.4, 0.3, 0.15])
    assert len(P.top_k(probabilities, 50)) == 5


def test_top_k_breaks_ties_by_class_id():
    assert P.top_k(np.array([0.2, 0.3, 0.3, 0.2]), 4).class_ids.tolist() == [1, 2, 0, 3]


# --- classification input ----------------------------------------------------------------------------

@pytest.mark.parametrize("frame_shape", [(1080, 810), (720, 1280), (480, 640), (224, 224), (100, 150), (37, 999)])
@pytest.mark.parametrize("size", [224, 160])
@pytest.mark.parametrize("with_pillow", [True, False])
def test_classify_preprocess_equals_ultralytics(frame_shape, size, with_pillow, monkeypatch):
    """Short side to `size` with Pillow's antialiased bilinear filter, centre crop: bit-identical, with
    Pillow and with the numpy re-implementation used where Pillow is not installed."""
    augment = pytest.importorskip("ultralytics.data.augment")
    image_module = pytest.importorskip("PIL.Image")
    import torchvision.transforms as T

    if not with_pillow:
        monkeypatch.setattr(P, "_pillow_image", lambda: None)

    frame = np.random.default_rng(2).integers(0, 256, (*frame_shape, 3), dtype=np.uint8)
    resize_and_crop = T.Compose(augment.classify_transforms(size).transforms[:2])
    expected = np.asarray(resize_and_crop(image_module.fromarray(frame)))  # BGR in, BGR out
    tensor, geo = P.preprocess_classify(frame, (size, size))
    assert tensor.shape == (1, 3, size, size)
    np.testing.assert_array_equal(P.to_tensor(expected), tensor)
    assert geo.pad_x <= 0 and geo.pad_y <= 0  # a crop, not a letterbox


def test_resize_like_pil_equals_pillow_on_camera_shapes():
    image_module = pytest.importorskip("PIL.Image")
    frame = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for out_h, out_w in [(224, 298), (240, 320), (960, 1280), (100, 100)]:
        expected = np.asarray(image_module.fromarray(frame).resize((out_w, out_h), image_module.BILINEAR))
        np.testing.assert_array_equal(P.resize_like_pil(frame, (out_h, out_w)), expected)


def test_resize_like_pil_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        P.resize_like_pil(np.zeros((4, 4, 3), np.float32), (2, 2))
    with pytest.raises(ValueError, match="outside"):
        P.resize_like_pil(np.zeros((4, 4, 3), np.uint8), (2, 2), crop=(0, 0, 3, 3))


# --- segmentation ------------------------------------------------------------------------------------

def disk_prototypes(size: int = 80, num_masks: int = 32) -> np.ndarray:
    """Prototype 0 is +1 inside a centred disk of radius size/4 and -1 outside; the rest are noise."""
    protos = np.random.default_rng(4).normal(0, 1, (num_masks, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    inside = (xx + 0.5 - size / 2) ** 2 + (yy + 0.5 - size / 2) ** 2 < (size / 4) ** 2
    protos[0] = np.where(inside, 1.0, -1.0)
    return protos


def test_instance_masks_upsample_threshold_and_crop_to_the_box():
    protos = disk_prototypes()
    coef = np.zeros((2, 32), np.float32)
    coef[:, 0] = 1.0  # both instances are the disk: centre (160, 160), radius 80 at 320 x 320
    boxes = np.array([[0, 0, 320, 320], [160, 0, 320, 160.5]], np.float32)
    full, corner = P.regions_to_masks(P.instance_masks(protos, coef, boxes, (320, 320)), (320, 320))
    yy, xx = np.mgrid[:320, :320]
    disk = (xx + 0.5 - 160) ** 2 + (yy + 0.5 - 160) ** 2 < 80 ** 2
    assert (full ^ disk).sum() < 0.02 * disk.sum()  # bilinear edge pixels only
    assert not corner[:, :160].any() and not corner[161:].any()  # columns >= x1, rows < y2 (160.5)
    np.testing.assert_array_equal(corner[:161, 160:], full[:161, 160:])


def test_instance_masks_equal_ultralytics_process_mask():
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("ultralytics.utils.ops")
    rng = np.random.default_rng(5)
    protos = rng.normal(size=(32, 80, 80)).astype(np.float32)
    coef = rng.normal(size=(40, 32)).astype(np.float32)
    corners = rng.uniform(-10, 300, (40, 2))
    boxes = np.hstack([corners, corners + rng.uniform(0.5, 150, (40, 2))]).astype(np.float32)
    expected = ops.process_mask(torch.from_numpy(protos), torch.from_numpy(coef), torch.from_numpy(boxes),
                                (320, 320), upsample=True).numpy().astype(bool)
    ours = P.regions_to_masks(P.instance_masks(protos, coef, boxes, (320, 320)), (320, 320))
    differing = (ours != expected).sum((1, 2))
    assert differing.max() <= 2, "only pixels whose logit is ~0 may differ (float summation order)"


def segment_outputs(instances: list[tuple[float, float, float, float, float]], num_classes: int = 2
                    ) -> list[np.ndarray]:
    """Segmentation outputs whose instances (cx, cy, w, h, disk coefficient) use the disk prototype."""
    rows = [(cx, cy, w, h, 0, 0.9 - i / 100) for i, (cx, cy, w, h, _) in enumerate(instances)]
    det = head_output(rows, num_classes, extra=32, anchors=max(len(rows), 1) + 5)
    det[0, 4 + num_classes:] = 0
    for i, instance in enumerate(instances):
        det[0, 4 + num_classes, i] = instance[4]
    return [det, disk_prototypes()[None]]


def test_postprocess_segment_gives_frame_polygons_and_drops_empty_masks():
    geo = P.letterbox_geometry((720, 1280), (320, 320))  # content rows 70..250, scale 0.25
    # The disk (centre 160, 160, radius 80, input pixels) inside a full box; a box inside the disk with
    # a negative coefficient has an empty mask, which Ultralytics drops, so we do too.
    outputs = segment_outputs([(160, 160, 320, 320, 1.0), (160, 160, 40, 40, -1.0)])
    result = P.postprocess_segment(outputs, geo, 2, 0.25, 0.7, 300)
    assert len(result) == 1 and len(result.masks) == 1
    polygon = result.masks[0]
    assert 8 <= len(polygon) <= P.MAX_POLYGON_POINTS
    # In the frame the disk is centred at (640, 360) with radius 320; the frame clips it top and bottom.
    filled = np.zeros((720, 1280), np.uint8)
    cv2.fillPoly(filled, [np.round(polygon).astype(np.int32)], 1)
    yy, xx = np.mgrid[:720, :1280]
    disk = (xx - 640) ** 2 + (yy - 360) ** 2 < 320 ** 2
    overlap = (filled.astype(bool) & disk).sum() / (filled.astype(bool) | disk).sum()
    assert overlap > 0.95, f"polygon and disk overlap at IoU {overlap:.3f}"
    detections, masks = P.segment_frame_masks(outputs, geo, 2, 0.25, 0.7, 300)
    assert masks.shape == (1, 720, 1280) and masks.dtype == bool
    assert (masks[0] ^ disk).sum() < 0.02 * disk.sum()
    np.testing.assert_array_equal(detections.boxes, result.boxes)


def test_polygon_leaves_out_the_letterbox_padding():
    geo = P.letterbox_geometry((720, 1280), (320, 320))
    region = P.MaskRegion(np.ones((320, 320), bool), 0, 0)  # mask over padding and content alike
    polygon = P.region_polygon(region, geo)
    assert polygon[:, 1].min() == 0 and polygon[:, 1].max() == pytest.approx(716, abs=1)
    assert P.region_polygon(P.MaskRegion(np.ones((20, 20), bool), 10, 10), geo).shape == (0, 2)


def jagged_region(seed: int, size: int = 120) -> P.MaskRegion:
    """A star-like mask whose outline has hundreds of corners."""
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = size / 2 * (0.6 + 0.4 * np.random.default_rng(seed).random(400))
    points = np.stack([size / 2 + radius * np.cos(angles), size / 2 + radius * np.sin(angles)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return P.MaskRegion(mask.astype(bool), 100, 100)


def test_polygons_are_size_bounded():
    geo = P.letterbox_geometry((640, 640), (640, 640))
    contour_points = len(cv2.findContours(jagged_region(0).mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                          cv2.CHAIN_APPROX_SIMPLE)[0][0])
    assert contour_points > 4 * P.MAX_POLYGON_POINTS
    polygon = P.region_polygon(jagged_region(0), geo)
    assert 3 <= len(polygon) <= P.MAX_POLYGON_POINTS
    assert len(P.region_polygon(jagged_region(0), geo, max_points=8)) <= 8
    with pytest.raises(ValueError, match="max_points"):
        P.simplify_polygon(np.zeros((10, 1, 2), np.float32), 2)


def test_a_full_frame_of_jagged_masks_fits_one_iot_message():
    """300 instances with long outlines: the per-frame point budget keeps the frame message < 128 KB."""
    from yolo_edge import messages

    geo = P.letterbox_geometry((1080, 1920), (640, 640))
    regions = [jagged_region(i) for i in range(300)]
    budget = max(P.MIN_POLYGON_POINTS, P.POLYGON_POINT_BUDGET // len(regions))
    polygons = [P.region_polygon(r, geo, min(P.MAX_POLYGON_POINTS, budget)) for r in regions]
    assert sum(len(p) for p in polygons) <= P.POLYGON_POINT_BUDGET
    boxes = np.tile(np.array([[1000.5, 500.5, 1400.5, 900.5]], np.float32), (300, 1))
    detections = P.Detections(boxes, np.full(300, 0.87654, np.float32), np.arange(300) % 80, polygons)
    info = ModelInfo(name="yolov8n-seg.onnx", format="onnx", runtime="onnxruntime", device="cpu",
                     task="segment", input_shape=(640, 640), names={i: f"class-{i}" for i in range(80)})
    message = messages.frame_message(seq=1, info=info, source="camera", frame_shape=(1080, 1920),
                                     result=detections, preprocess_ms=1.0, inference_ms=2.0,
                                     postprocess_ms=3.0, fps=30.0)
    payload = messages.encode(message)
    assert len(payload) < messages.MAX_PAYLOAD_BYTES
    assert json.loads(payload)["truncated"] is False, "the message had to drop detections to fit"
