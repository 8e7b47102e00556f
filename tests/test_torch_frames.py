"""The PyTorch device frame path (torch_frames): letterbox, graphed forward and decoding in torch.

On a GPU the path runs on CUDA; here every piece runs on CPU tensors, which is how it is proven equal
to the numpy path the rest of the suite proves equal to Ultralytics. CUDA graphs cannot exist here:
a fake capture replays the captured forward into the same output tensors (what a graph does), so a
path that wrote a new input tensor instead of the static one, or read outputs after the next replay,
would give wrong detections. Pinned memory, streams and events are CUDA-only and not covered here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import asset_images

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, DeviceFrames, load_backend
from yolo_edge.predictor import PostprocessSettings, Predictor

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("ultralytics")

from yolo_edge.backends import torch_frames  # noqa: E402 - needs torch

SIZE = 320
CPU = torch.device("cpu")


class FakeGraphs:
    """Stands in for capture_cuda_graph: replay re-runs the captured forward into the captured outputs."""

    def __init__(self, fail: bool = False) -> None:
        self.captures = 0
        self.replays = 0
        self.fail = fail

    def __call__(self, forward):
        self.captures += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        outputs = forward()

        def replay() -> None:
            self.replays += 1
            for static, fresh in zip(outputs, forward(), strict=True):
                static.copy_(fresh)

        return replay, outputs


def images() -> list[np.ndarray]:
    return [cv2.imread(str(path)) for path in asset_images()]


def video_frames(count: int = 8) -> list[np.ndarray]:
    """Frames that need no resize at the test models' 320 input, in two shapes (320x320 and 240x320,
    the second padded to a 256x320 rectangle). Frames that do are resized by `stage` (see
    test_frames_that_need_resizing_give_the_numpy_paths_predictions)."""
    frames = []
    for image in images():
        frames += [cv2.resize(image, (SIZE, SIZE)), cv2.resize(image, (SIZE, SIZE * 3 // 4))]
    return (frames * count)[:count]


def device_tensor(frame: np.ndarray, geo: processing.Letterbox, dtype=torch.float32) -> np.ndarray:
    out = torch_frames.fill_padding(torch.empty((1, 3, *geo.input_shape), dtype=dtype))
    torch_frames.letterbox_on_device(torch.from_numpy(frame), geo, out)
    return out.float().numpy()


@pytest.mark.parametrize("stride", [None, 32])
def test_letterbox_without_resize_is_bit_identical(stride):
    frame = np.ascontiguousarray(images()[0][:480, :640])
    numpy_tensor, geo = processing.preprocess(frame, (640, 640), stride=stride)
    assert geo.resized_shape == (480, 640)
    np.testing.assert_array_equal(device_tensor(frame, geo), numpy_tensor)


def resized_for(frame: np.ndarray, geo: processing.Letterbox) -> np.ndarray:
    """`frame` at the letterbox's resized size, as `stage` hands it over."""
    new_h, new_w = geo.resized_shape
    return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def test_a_frame_not_yet_resized_is_refused():
    frame = images()[0]
    geo = processing.letterbox_geometry(frame.shape[:2], (640, 640))
    out = torch_frames.fill_padding(torch.empty((1, 3, 640, 640)))
    with pytest.raises(ValueError, match=r"a 1080x810 frame for a 640x480 letterbox: stage\(\) resizes frames"):
        torch_frames.letterbox_on_device(torch.from_numpy(frame), geo, out)


@pytest.mark.parametrize(("input_shape", "stride"), [((640, 640), None), ((640, 640), 32), ((320, 320), None)])
def test_frames_staged_for_the_device_are_resized_as_the_numpy_path_does(random_model, input_shape, stride):
    """Resized on the feeder thread by OpenCV, staged frames make a device input bit-identical to the
    numpy path's, whatever the frame's size."""
    path = torch_predictor(random_model, "detect", FakeGraphs()).device_frames
    for frame in images():
        numpy_tensor, geo = processing.preprocess(frame, input_shape, stride=stride)
        assert geo.resized_shape != frame.shape[:2]
        staged = path.stage(frame, geo, {})
        assert tuple(staged.shape) == (*geo.resized_shape, 3)
        np.testing.assert_array_equal(device_tensor(staged.numpy(), geo), numpy_tensor)


def test_letterbox_in_half_precision():
    frame = images()[1]
    numpy_tensor, geo = processing.preprocess(frame, (640, 640), np.float16, stride=32)
    ours = device_tensor(resized_for(frame, geo), geo, torch.float16)
    assert np.abs(ours - numpy_tensor.astype(np.float32)).max() <= 1 / 255 + 1e-3


def test_padding_is_written_once_per_geometry():
    frame = images()[0]
    geo = processing.letterbox_geometry(frame.shape[:2], (640, 640))
    out = torch_frames.fill_padding(torch.empty((1, 3, 640, 640)))
    out[0, :, 0, 0] = 7.0  # a padding pixel: letterbox_on_device must leave it alone
    torch_frames.letterbox_on_device(torch.from_numpy(resized_for(frame, geo)), geo, out)
    assert float(out[0, 0, 0, 0]) == 7.0


@pytest.fixture(scope="module")
def detect_outputs(random_model):
    """Real head outputs of a random detect model (hundreds of candidates above 0.25 per image)."""
    backend = load_backend(random_model("detect", SIZE, "onnx"), BackendOptions(device="cpu"))
    return [backend.infer(processing.preprocess(frame, (SIZE, SIZE))[0])[0] for frame in images()]


def assert_same_decoding(output: np.ndarray, num_classes: int, conf: float, iou: float, max_det: int) -> int:
    boxes, scores, classes, extra = processing.decode_detections(output, num_classes, conf, iou, max_det,
                                                                 output.shape[0 + 1] - 4 - num_classes)
    rows = torch_frames.decode_on_device(torch.from_numpy(output), num_classes, conf, iou, max_det).numpy()
    assert rows.shape == (len(boxes), 6 + extra.shape[1])
    np.testing.assert_allclose(rows[:, :4], boxes, atol=1e-4)
    np.testing.assert_array_equal(rows[:, 4], scores)
    np.testing.assert_array_equal(rows[:, 5].astype(np.int64), classes)
    np.testing.assert_array_equal(rows[:, 6:], extra)
    return len(boxes)


@pytest.mark.parametrize(("conf", "iou", "max_det"), [(0.25, 0.7, 300), (0.05, 0.5, 1000), (0.3, 0.7, 10)])
def test_device_decoding_equals_numpy_decoding(detect_outputs, conf, iou, max_det):
    kept = [assert_same_decoding(output, 80, conf, iou, max_det) for output in detect_outputs]
    assert max(kept) > 0


def test_device_decoding_caps_candidates_like_numpy(detect_outputs, monkeypatch):
    monkeypatch.setattr(processing, "MAX_NMS_CANDIDATES", 150)
    monkeypatch.setattr(torch_frames, "MAX_NMS_CANDIDATES", 150)
    for output in detect_outputs:
        assert_same_decoding(output, 80, 0.05, 0.7, 300)


def test_device_decoding_with_nothing_above_threshold(detect_outputs):
    rows = torch_frames.decode_on_device(torch.from_numpy(detect_outputs[0]), 80, 1.01, 0.7, 300)
    assert tuple(rows.shape) == (0, 6)
    decoded = processing.decode_detections(rows.numpy(), 80, 1.01, 0.7, 300, end2end=True)
    assert all(len(part) == 0 for part in decoded)


def test_device_decoding_keeps_mask_coefficients(random_model):
    backend = load_backend(random_model("segment", SIZE, "onnx"), BackendOptions(device="cpu"))
    output = backend.infer(processing.preprocess(images()[0], (SIZE, SIZE))[0])[0]
    assert assert_same_decoding(output, 80, 0.25, 0.7, 300) > 0


def torch_predictor(random_model, task: str, capture=None, decode: str = "auto") -> Predictor:
    """A CPU PyTorch predictor whose backend uses the device frame path (as it does on CUDA)."""
    backend = load_backend(random_model(task, SIZE, "pt"), BackendOptions(device="cpu", input_size=(SIZE, SIZE)))
    backend.frame_path = torch_frames.DeviceFramePath(backend.model, CPU, torch.float32, backend.info.num_classes,
                                                      capture, decode)
    return Predictor(backend, PostprocessSettings())


def numpy_predictor(random_model, task: str) -> Predictor:
    backend = load_backend(random_model(task, SIZE, "pt"), BackendOptions(device="cpu", input_size=(SIZE, SIZE)))
    assert backend.device_frames is None  # on a CPU the backend keeps the numpy path
    return Predictor(backend, PostprocessSettings())


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_predictions_equal_the_numpy_path(random_model, task):
    graphs = FakeGraphs()
    ours, reference = torch_predictor(random_model, task, graphs), numpy_predictor(random_model, task)
    assert isinstance(ours.device_frames, DeviceFrames)
    buffers = [{}, {}]
    total = 0
    frames = video_frames(2 * torch_frames.DECODE_TRIALS)  # `auto` decodes half of them on each side
    for index, frame in enumerate(frames):
        prepared = ours.prepare(frame, buffers[index % 2])
        assert isinstance(prepared.tensor, torch.Tensor) and prepared.tensor.dtype == torch.uint8
        got = ours.infer_and_decode(prepared).finish()  # the polygon step, as for a published frame
        want = reference.predict(frame).result
        assert len(got.result) == len(want) > 0
        np.testing.assert_array_equal(got.result.class_ids, want.class_ids)
        np.testing.assert_allclose(got.result.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.result.scores, want.scores, atol=1e-5)
        if task == "segment":
            assert len(got.result.masks) == len(want.masks)
            for ours_polygon, their_polygon in zip(got.result.masks, want.masks, strict=True):
                np.testing.assert_allclose(ours_polygon, their_polygon, atol=1e-3)
        assert got.preprocess_ms > 0 and got.inference_ms > 0 and got.postprocess_ms > 0
        total += len(want)
    assert graphs.captures == 2  # two input shapes: 320x320 and 256x320
    assert graphs.replays == len(frames)
    assert ours.device_frames.decode_choice in ("device", "host")
    assert [len(t) for t in ours.device_frames._chooser.timings.values()] == [torch_frames.DECODE_TRIALS] * 2
    assert total > 50


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_frames_that_need_resizing_give_the_numpy_paths_predictions(random_model, task):
    """bus.jpg (1080x810) and zidane.jpg (720x1280) are resized by the letterbox: staged frames are
    resized by OpenCV, so the device path's detections equal the numpy path's here too."""
    ours, reference = torch_predictor(random_model, task, FakeGraphs()), numpy_predictor(random_model, task)
    for frame in images():
        got, want = ours.predict(frame).result, reference.predict(frame).result
        assert len(got) == len(want) > 0
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_a_failed_capture_runs_eagerly(random_model, caplog):
    graphs = FakeGraphs(fail=True)
    ours, reference = torch_predictor(random_model, "detect", graphs), numpy_predictor(random_model, "detect")
    frame = video_frames()[1]
    for _ in range(2):
        got = ours.predict(frame).result
        want = reference.predict(frame).result
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    assert ours.device_frames.graph_failures == 1  # one try per input shape, not one per frame
    assert "CUDA graph capture for input 256x320 failed" in caplog.text


def test_auto_decoding_tries_both_then_keeps_one(random_model):
    ours = torch_predictor(random_model, "detect")
    frame = images()[0]
    for _ in range(2 * torch_frames.DECODE_TRIALS - 1):
        ours.predict(frame)
        assert ours.device_frames.decode_choice == "auto"
    ours.predict(frame)
    assert ours.device_frames.decode_choice in ("device", "host")
    timings = ours.device_frames._chooser.timings
    assert [len(t) for t in timings.values()] == [torch_frames.DECODE_TRIALS] * 2


@pytest.mark.parametrize("decode", ["device", "host"])
def test_decode_can_be_fixed_by_environment(random_model, monkeypatch, decode):
    monkeypatch.setenv(torch_frames.DECODE_VARIABLE, decode)
    path = torch_frames.DeviceFramePath.for_model(torch.nn.Identity(), CPU, torch.float32, 80)
    assert path.decode_choice == decode and not path.graphs  # no graphs on a CPU


def test_a_bad_decode_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv(torch_frames.DECODE_VARIABLE, "gpu")
    with pytest.raises(ValueError, match="YOLO_EDGE_DEVICE_DECODE is 'gpu'; expected one of auto, device, host"):
        torch_frames.DeviceFramePath.for_model(torch.nn.Identity(), CPU, torch.float32, 80)


def test_infer_goes_through_the_graphs_and_old_shapes_are_evicted(random_model, monkeypatch):
    monkeypatch.setattr(torch_frames, "MAX_GRAPHS", 2)
    graphs = FakeGraphs()
    ours = torch_predictor(random_model, "detect", graphs)
    reference = numpy_predictor(random_model, "detect")
    for shape in [(320, 320), (256, 320), (320, 320), (192, 320), (256, 320)]:
        tensor = processing.preprocess(images()[0], shape)[0]
        got, want = ours.backend.infer(tensor), reference.backend.infer(tensor)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-3)
    # 320x320 and 256x320 captured; 320x320 reused; 192x320 evicts 256x320, which is captured again
    assert graphs.captures == 4 and graphs.replays == 5
    assert list(ours.device_frames._slots) == [(192, 320), (256, 320)]


def test_classify_keeps_the_host_crop(random_model):
    backend = load_backend(random_model("classify", 224, "pt"), BackendOptions(device="cpu", input_size=(224, 224)))
    backend.frame_path = torch_frames.DeviceFramePath(backend.model, CPU, torch.float32, backend.info.num_classes,
                                                      FakeGraphs())
    assert backend.device_frames is None
    predictor = Predictor(backend, PostprocessSettings())
    prepared = predictor.prepare(images()[0])
    assert isinstance(prepared.tensor, np.ndarray)
    assert len(predictor.infer_and_decode(prepared).result) == 5


def test_padding_is_refilled_when_the_geometry_changes(random_model):
    """A 256x320 frame fills the 256x320 input; a 240x320 frame then needs its padding rows grey again."""
    ours, reference = torch_predictor(random_model, "detect", FakeGraphs()), numpy_predictor(random_model, "detect")
    image = images()[0]
    for frame in [cv2.resize(image, (SIZE, 256)), cv2.resize(image, (SIZE, 240))]:
        got, want = ours.predict(frame).result, reference.predict(frame).result
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    assert list(ours.device_frames._slots) == [(256, SIZE)]  # one input shape, two geometries


def test_the_frame_feeder_stages_frames_for_the_device_path(random_model, tmp_path):
    """Frames staged on the feeder thread into rotating buffers, run on this thread: every frame of a real
    video gives the numpy path's detections, and the bench reports how the path ran."""
    from conftest import make_video

    from yolo_edge.pipeline import FeedFrame, FrameFeeder
    from yolo_edge.sources import open_source
    from yolo_edge_tools import bench_worker

    video = make_video(tmp_path / "small.avi", frames=16, size=(240, SIZE))
    ours, reference = torch_predictor(random_model, "detect", FakeGraphs()), numpy_predictor(random_model, "detect")
    feeder = FrameFeeder(open_source(str(video)), ours.prepare).start()
    compared = 0
    try:
        while isinstance(item := feeder.get(30.0), FeedFrame):
            got, want = ours.infer_and_decode(item.prepared).result, reference.predict(item.prepared.frame).result
            assert len(got) == len(want)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
            compared += 1
    finally:
        feeder.stop()
    assert compared == 16

    recorder = bench_worker.Recorder(2, 6, 0.0)
    details = bench_worker.run_pipeline({"source": str(video), "size": [SIZE, SIZE]}, recorder,
                                        load=lambda spec: torch_predictor(random_model, "detect", FakeGraphs()))
    assert recorder.results == 8
    assert details["device_frames"] == {"cuda_graphs": True, "graph_failures": 0, "decode": "auto"}


def test_a_captured_shape_keeps_the_heads_cached_anchors_alive(random_model):
    """Ultralytics' head caches anchors per input shape as plain attributes; the next shape replaces
    them. A real graph would still read the old memory, so the slot must hold on to it."""
    ours = torch_predictor(random_model, "detect", FakeGraphs())
    ours.predict(video_frames()[0])  # 320x320
    head = ours.backend.model.model[-1]
    first_anchors = head.anchors
    ours.predict(video_frames()[1])  # 256x320: the head makes new anchors
    assert head.anchors is not first_anchors
    slots = ours.device_frames._slots
    assert any(t is first_anchors for t in slots[(SIZE, SIZE)].keep_alive)
    assert any(t is head.anchors for t in slots[(256, SIZE)].keep_alive)


@pytest.mark.parametrize("slow_side", ["device", "host"])
def test_auto_decoding_keeps_the_faster_side(random_model, monkeypatch, slow_side):
    """The choice is made on the whole post-processing time: the host's numpy decoding counts too."""
    import time

    def slowed(function, when):
        def wrapper(*args, **kwargs):
            if when(kwargs):
                time.sleep(0.02)
            return function(*args, **kwargs)
        return wrapper

    if slow_side == "device":
        monkeypatch.setattr(torch_frames, "decode_on_device", slowed(torch_frames.decode_on_device, lambda kw: True))
    else:  # only the numpy decoding of a raw head output, after the copy back, is slowed
        monkeypatch.setattr(processing, "decode_detections",
                            slowed(processing.decode_detections, lambda kw: kw.get("end2end") is not True))
    ours = torch_predictor(random_model, "detect")
    for _ in range(2 * torch_frames.DECODE_TRIALS):
        ours.predict(video_frames()[0])
    assert ours.device_frames.decode_choice == ("host" if slow_side == "device" else "device")


def test_a_failing_gpu_path_falls_back_to_the_host_path(random_model, monkeypatch, caplog):
    """The GPU-only parts never ran here; if they fail on a real GPU the frame is still inferred, on the
    host path, and so is every later frame (also those the feeder staged before the failure)."""
    ours, reference = torch_predictor(random_model, "detect", FakeGraphs()), numpy_predictor(random_model, "detect")
    frames = video_frames(4)
    staged_early = [ours.prepare(frame, {}) for frame in frames[:2]]

    def broken_run(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ours.device_frames, "run", broken_run)
    results = [ours.infer_and_decode(prepared).result for prepared in staged_early]
    results += [ours.infer_and_decode(ours.prepare(frame, {})).result for frame in frames[2:]]
    for got, frame in zip(results, frames, strict=True):
        want = reference.predict(frame).result
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    assert ours.device_frames is None and ours.backend.frame_path is None
    assert isinstance(ours.prepare(frames[0], {}).tensor, np.ndarray)
    assert caplog.text.count("the GPU frame path failed (RuntimeError: CUDA error: an illegal memory access") == 1


def test_frames_are_staged_in_pageable_memory_when_pinning_fails(random_model, monkeypatch, caplog):
    path = torch_predictor(random_model, "detect", FakeGraphs()).device_frames
    path._pin = True  # as on CUDA
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        if pin_memory:
            raise RuntimeError("CUDA error: out of memory (cudaHostAlloc)")
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    frame = video_frames()[0]
    geometry = processing.letterbox_geometry(frame.shape[:2], (SIZE, SIZE), 32)
    assert geometry.resized_shape == frame.shape[:2]
    first, second = path.stage(frame, geometry, {}), path.stage(frame, geometry, {})
    assert np.array_equal(first.numpy(), frame) and np.array_equal(second.numpy(), frame)
    assert not path._pin and caplog.text.count("cannot pin host memory") == 1
