"""`Predictor.infer_batch`: frames inferred together give the results the same frames give one by one.

Real models (random weights, see conftest.random_model) exported with a dynamic batch, real frames cut
from Ultralytics' images at different sizes. The ONNX tests are in the runtime subset; the PyTorch ones
(torch on the CPU) are not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from conftest import asset_images

from yolo_edge import processing
from yolo_edge.backends import Backend, BackendOptions, DeviceFrames, ModelInfo, load_backend
from yolo_edge.backends.base import MAX_BATCH
from yolo_edge.backends.onnx import _max_batch
from yolo_edge.predictor import PostprocessSettings, Prediction, Predictor, Prepared

runtime = pytest.mark.runtime

# A class bias that makes the random models find dozens of boxes on every frame below.
MANY_BOXES = -1.5
# ONNX Runtime's batched and one-by-one results were bit-identical here (1.32, x86); other kernels (another
# CPU, another version, a GPU) may pick batch-dependent algorithms that differ in the last bits, so results
# are compared to 1e-4 (pixels for boxes, probability for scores) and no looser.
ATOL = 1e-4
# PyTorch on the CPU is not bit-identical: oneDNN picks other convolution kernels for a batch, which sum
# in another order; raw box outputs then differ by ~30 float32 ulps (measured: up to 2.3e-3 on values
# of ~650, 3.5e-6 relative; scores by < 1e-5), box corners in frame pixels by up to 1.3e-3 px. Boxes are
# compared to 0.01 px for it (scores still to 1e-4): a real difference (another frame, a shifted
# letterbox) moves them by tenths of a pixel or more.
TORCH_BOX_ATOL_PX = 0.01
SIZES = {"detect": 320, "segment": 320, "classify": 224}


class RecordingBackend:
    """A real backend whose `infer` calls are recorded; `max_batch` overrides what the model reports."""

    def __init__(self, backend: Backend, max_batch: int | None = None) -> None:
        self.backend = backend
        self.info: ModelInfo = backend.info if max_batch is None else replace(backend.info, max_batch=max_batch)
        self.calls: list[tuple[int, ...]] = []  # the input shape of each call

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.calls.append(tuple(tensor.shape))
        return self.backend.infer(tensor)

    @property
    def device_frames(self) -> DeviceFrames | None:
        return self.backend.device_frames

    def disable_device_frames(self) -> None:
        self.backend.disable_device_frames()

    def close(self) -> None:
        self.backend.close()


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Whole images and pieces cut from them: five frames of five sizes and three aspect ratios."""
    first, second = (cv2.imread(str(p)) for p in asset_images()[:2])
    pieces = [first, second, first[100:580, 40:680], second[:, 200:1000], first[300:660, :480]]
    return [np.ascontiguousarray(piece) for piece in pieces]


@pytest.fixture(scope="module")
def dynamic_model(random_model: Callable[..., Path]) -> Callable[[str], Path]:
    def get(task: str) -> Path:
        return random_model(task, SIZES[task], class_bias=MANY_BOXES if task != "classify" else -3.0, dynamic=True)

    return get


def predictor_for(path: Path, max_batch: int | None = None, size: int = 320) -> tuple[Predictor, RecordingBackend]:
    backend = RecordingBackend(load_backend(path, BackendOptions(input_size=(size, size))), max_batch)
    return Predictor(backend, PostprocessSettings()), backend


def one_by_one(predictor: Predictor, prepared: list[Prepared]) -> list[Prediction]:
    return [predictor.infer_and_decode(frame).finish() for frame in prepared]


def partners(a: processing.Detections, b: processing.Detections, box_atol: float) -> np.ndarray:
    """For each detection of `a`, the index of its equal in `b` (same class, score within ATOL, box within
    `box_atol`), each used once; in order unless two nearly tied scores came out swapped (float noise
    between kernels). Fails on a detection without an equal."""
    close = ((a.class_ids[:, None] == b.class_ids[None, :])
             & (np.abs(a.scores[:, None] - b.scores[None, :]) <= ATOL)
             & (np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]) <= box_atol).all(axis=2))
    used = np.zeros(len(b), bool)
    order = np.empty(len(a), np.int64)
    for i in range(len(a)):
        candidates = np.flatnonzero(close[i] & ~used)
        assert len(candidates), f"detection {i} (class {a.class_ids[i]}, score {a.scores[i]:.6f}) has no equal"
        order[i] = i if i in candidates else candidates[0]
        used[order[i]] = True
    return order


def assert_same_results(got: list[Prediction], want: list[Prediction], box_atol: float = ATOL) -> None:
    assert len(got) == len(want)
    for ours, reference in zip(got, want):
        a, b = ours.finish().result, reference.result
        assert type(a) is type(b) and len(a) == len(b)
        if isinstance(a, processing.Detections) and isinstance(b, processing.Detections):
            order = partners(a, b, box_atol)
            if box_atol <= ATOL:  # an exact runtime (ONNX Runtime): the same detections in the same order
                np.testing.assert_array_equal(order, np.arange(len(a)))
            assert (a.polygons is None) == (b.polygons is None)
            for i, j in enumerate(order):
                if a.polygons is not None and b.polygons is not None:
                    np.testing.assert_array_equal(a.polygons[i], b.polygons[j])
        else:
            np.testing.assert_array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=ATOL)


# --- what the backends report ------------------------------------------------------------------------

@runtime
def test_onnx_max_batch_follows_the_batch_dimension(random_model, dynamic_model):
    assert load_backend(random_model("detect", 320), BackendOptions(input_size=(320, 320))).info.max_batch == 1
    assert load_backend(dynamic_model("detect"), BackendOptions(input_size=(320, 320))).info.max_batch == MAX_BATCH
    # A fixed batch above 1 cannot take a single frame: it stays a one-frame model (and fails as it did).
    assert (_max_batch(1), _max_batch(4), _max_batch("batch"), _max_batch(None)) == (1, 1, MAX_BATCH, MAX_BATCH)


# --- batched = one by one (ONNX Runtime) ---------------------------------------------------------------

@runtime
@pytest.mark.parametrize("task", ["detect", "segment", "classify"])
def test_batched_results_equal_one_by_one(dynamic_model, frames, task):
    predictor, backend = predictor_for(dynamic_model(task), size=SIZES[task])
    prepared = [predictor.prepare(frame) for frame in frames]
    want = one_by_one(predictor, prepared)
    backend.calls.clear()

    got = predictor.infer_batch(prepared)

    size = SIZES[task]
    assert backend.calls == [(len(frames), 3, size, size)], "one call for all the frames"
    assert_same_results(got, want)
    if task != "classify":
        assert min(len(p.result) for p in want) >= 5, "the random model should find boxes on every frame"
        assert all(p.finished == (task == "detect") for p in got), "polygons stay pending until finish()"
    assert [p.batch_size for p in got] == [len(frames)] * len(frames)
    assert [p.preprocess_ms for p in got] == [p.preprocess_ms for p in prepared]
    assert len({p.inference_ms for p in got}) == 1 and got[0].inference_ms > 0, "the batch's own time, not a share"
    assert all(p.postprocess_ms > 0 for p in got)
    assert all(p.batch_size == 1 for p in want)


@runtime
def test_frames_of_different_tensor_shapes_are_inferred_in_groups(dynamic_model, frames):
    """A model that takes any size may get tensors of several sizes: each size is its own batch, and
    the results come back in the frames' order."""
    predictor, backend = predictor_for(dynamic_model("detect"))
    sizes = [(320, 320), (256, 320), (320, 320), (256, 320), (320, 320)]
    prepared = []
    for frame, size in zip(frames, sizes):
        tensor, geometry = processing.preprocess(frame, size)
        prepared.append(Prepared(frame, tensor.copy(), geometry, 0.5))
    want = one_by_one(predictor, prepared)
    backend.calls.clear()

    got = predictor.infer_batch(prepared)

    assert backend.calls == [(3, 3, 320, 320), (2, 3, 256, 320)]
    assert [p.batch_size for p in got] == [3, 2, 3, 2, 3]
    assert_same_results(got, want)
    assert got[0].inference_ms == got[2].inference_ms == got[4].inference_ms != got[1].inference_ms


@runtime
def test_more_frames_than_max_batch_are_inferred_in_chunks(dynamic_model, frames):
    predictor, backend = predictor_for(dynamic_model("segment"), max_batch=2)
    prepared = [predictor.prepare(frame) for frame in frames]
    want = one_by_one(predictor, prepared)
    backend.calls.clear()

    got = predictor.infer_batch(prepared)

    assert [shape[0] for shape in backend.calls] == [2, 2, 1]
    assert [p.batch_size for p in got] == [2, 2, 2, 2, 1]
    assert_same_results(got, want)


@runtime
def test_a_one_frame_model_runs_the_frames_one_by_one(random_model, frames):
    predictor, backend = predictor_for(random_model("detect", 320, class_bias=MANY_BOXES))
    assert predictor.info.max_batch == 1
    prepared = [predictor.prepare(frame) for frame in frames[:3]]
    want = one_by_one(predictor, prepared)
    backend.calls.clear()

    got = predictor.infer_batch(prepared)

    assert backend.calls == [(1, 3, 320, 320)] * 3
    assert [p.batch_size for p in got] == [1, 1, 1]
    assert_same_results(got, want)


@runtime
def test_no_frame_one_frame_and_staged_frames(dynamic_model, frames):
    predictor, backend = predictor_for(dynamic_model("detect"))
    assert predictor.infer_batch([]) == []
    prepared = [predictor.prepare(frame) for frame in frames[:4]]
    single = predictor.infer_batch(prepared[:1])
    assert backend.calls == [(1, 3, 320, 320)] and single[0].batch_size == 1
    # A frame staged for a device frame path (here none is left, as after it failed) is prepared again
    # on the host and inferred alone; the host-prepared frames around it are still inferred together.
    staged = Prepared(frames[1], object(), prepared[1].geometry, prepared[1].preprocess_ms)
    mixed = [prepared[0], staged, prepared[2], prepared[3]]
    backend.calls.clear()

    got = predictor.infer_batch(mixed)

    assert sorted(shape[0] for shape in backend.calls) == [1, 3]
    assert [p.batch_size for p in got] == [3, 1, 3, 3]
    assert_same_results(got, one_by_one(predictor, prepared))


@runtime
def test_outputs_without_a_row_per_frame_are_an_error(dynamic_model, frames):
    predictor, backend = predictor_for(dynamic_model("detect"))
    prepared = [predictor.prepare(frame) for frame in frames[:2]]
    backend.infer = lambda tensor: [np.zeros((1, 84, 2100), np.float32)]  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"a batch of 2 frames gave outputs of shapes \[\(1, 84, 2100\)\]"):
        predictor.infer_batch(prepared)


# --- PyTorch (not in the runtime subset) ---------------------------------------------------------------

@pytest.mark.parametrize("task", ["detect", "segment"])
def test_pytorch_batches_frames_of_one_shape(random_model, frames, task):
    """PyTorch letterboxes each frame to the smallest stride-multiple rectangle, so frames of another
    aspect ratio get tensors of another shape: each shape is a batch of its own."""
    predictor, backend = predictor_for(random_model(task, 320, fmt="pt", class_bias=MANY_BOXES))
    assert predictor.info.max_batch == MAX_BATCH
    prepared = [predictor.prepare(frame) for frame in frames]
    shapes = [p.tensor.shape for p in prepared if isinstance(p.tensor, np.ndarray)]
    assert 1 < len(set(shapes)) < len(shapes), shapes
    want = one_by_one(predictor, prepared)
    backend.calls.clear()

    got = predictor.infer_batch(prepared)

    by_shape = {shape: shapes.count(shape) for shape in shapes}
    assert sorted(backend.calls) == sorted((count, *shape[1:]) for shape, count in by_shape.items())
    assert [p.batch_size for p in got] == [by_shape[shape] for shape in shapes]
    assert_same_results(got, want, box_atol=TORCH_BOX_ATOL_PX)
    assert min(len(p.result) for p in want) >= 5


def test_the_bench_bare_row_feeds_pytorch_the_pipelines_rectangle(random_model, tmp_path):
    """The bench's *bare* row times the runtime call on the tensor the pipeline gives it: for a PyTorch
    model the smallest stride-multiple rectangle (256x320 for a 240x320 video at 320), not the whole
    input square, so its e2e / bare ratio compares one input size."""
    from conftest import make_video

    from yolo_edge_tools import bench_worker

    video = make_video(tmp_path / "wide.avi", frames=4, size=(240, 320))
    predictor, backend = predictor_for(random_model("detect", 320, fmt="pt"))
    recorder = bench_worker.Recorder(1, 2, 0.0)

    details = bench_worker.run_bare({"source": str(video)}, recorder, load=lambda spec: backend)

    assert details["bare_call"] == "backend.infer"
    assert backend.calls == [(1, 3, 256, 320)] * 3
    frame = cv2.VideoCapture(str(video)).read()[1]
    assert predictor.prepare(frame).tensor.shape == (1, 3, 256, 320)


def cpu_frame_path(backend: Backend) -> list[int]:
    """Give a CPU PyTorch backend the GPU frame path (as on CUDA), its CUDA graphs stood in for by a capture
    whose replay re-runs the forward into the captured outputs (as in test_torch_frames.py); returns the
    list that counts the captures."""
    import torch

    from yolo_edge.backends import torch_frames

    captures: list[int] = []

    def capture(forward):
        outputs = forward()
        captures.append(len(captures))

        def replay() -> None:
            for static, fresh in zip(outputs, forward()):
                static.copy_(fresh)

        return replay, outputs

    backend.frame_path = torch_frames.DeviceFramePath(backend.model, torch.device("cpu"), torch.float32,
                                                      backend.info.num_classes, capture)
    return captures


def test_pytorch_frame_path_infers_single_frames_in_its_graphs_and_batches_eagerly(random_model, frames):
    """Classify keeps host-prepared tensors on a GPU: a batch of them runs eagerly, a frame alone through
    the graph captured for batch 1."""
    pytest.importorskip("torchvision")
    backend = load_backend(random_model("classify", 224, "pt"), BackendOptions(device="cpu", input_size=(224, 224)))
    captures = cpu_frame_path(backend)
    recording = RecordingBackend(backend)
    predictor = Predictor(recording, PostprocessSettings())
    prepared = [predictor.prepare(frame) for frame in frames]
    want = one_by_one(predictor, prepared)
    assert len(captures) == 1

    got = predictor.infer_batch(prepared)

    assert recording.calls[-1] == (len(frames), 3, 224, 224) and len(captures) == 1, "no graph for a batch"
    assert [p.batch_size for p in got] == [len(frames)] * len(frames)
    assert_same_results(got, want)


def test_pytorch_staged_frames_run_one_by_one(random_model, frames):
    """Frames staged for the GPU frame path (detect, segment) are letterboxed and inferred there frame by
    frame: a batch of them is the frames one by one."""
    pytest.importorskip("torchvision")
    backend = load_backend(random_model("detect", 320, "pt", class_bias=MANY_BOXES),
                           BackendOptions(device="cpu", input_size=(320, 320)))
    cpu_frame_path(backend)
    recording = RecordingBackend(backend)
    predictor = Predictor(recording, PostprocessSettings())
    prepared = [predictor.prepare(frame) for frame in frames]
    assert not any(isinstance(p.tensor, np.ndarray) for p in prepared)
    want = one_by_one(predictor, prepared)

    got = predictor.infer_batch(prepared)

    assert recording.calls == [], "the frame path runs the network itself"
    assert [p.batch_size for p in got] == [1] * len(frames)
    assert_same_results(got, want)
