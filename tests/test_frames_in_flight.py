"""Frames side by side (config key `performance`): OpenVINO's throughput mode, `Predictor.submit`,
`frame_step.FramesInFlight` and the controller, which finishes every batch in flight before an event."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from conftest import asset_images, make_video
from harness import MODEL_SIZE, base_config, is_final_summary, is_state, running_controller

from yolo_edge import messages
from yolo_edge.backends import BackendOptions, ModelLoadError, load_backend
from yolo_edge.backends.base import ConcurrentBackend, ModelInfo
from yolo_edge.config import Config, ConfigError
from yolo_edge.frame_step import FramesInFlight, finish_frames
from yolo_edge.limits import PublishGate
from yolo_edge.metrics import RollingFPS
from yolo_edge.pipeline import FeedFrame
from yolo_edge.predictor import PostprocessSettings, Predictor

pytest.importorskip("openvino")
pytestmark = pytest.mark.runtime


def openvino(model: Path, performance: str) -> Predictor:
    options = BackendOptions(device="cpu", runtime="openvino", performance=performance,
                             input_size=(MODEL_SIZE, MODEL_SIZE))
    return Predictor(load_backend(model, options), PostprocessSettings())


def feed_frames(predictor: Predictor, count: int) -> list[FeedFrame]:
    images = [cv2.imread(str(path)) for path in asset_images()]
    return [FeedFrame(predictor.prepare(images[i % len(images)][i * 7:, i * 5:]), i, time.monotonic())
            for i in range(count)]


def test_throughput_runs_as_many_frames_as_openvino_suggests_with_the_outputs_of_one_at_a_time(
        model: Path) -> None:
    latency, throughput = openvino(model, "latency"), openvino(model, "throughput")
    assert latency.concurrency == 1 and latency.info.concurrency == 1
    backend = throughput.backend
    assert isinstance(backend, ConcurrentBackend)
    compiled = backend.compiled  # type: ignore[attr-defined]
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert throughput.concurrency == int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    if (os.cpu_count() or 1) >= 2:
        assert throughput.concurrency >= 2
    assert messages.model_block(throughput.info)["concurrency"] == throughput.concurrency
    tensors = [frame.prepared.tensor for frame in feed_frames(throughput, throughput.concurrency)]
    jobs = [backend.start(tensor) for tensor in tensors]  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="already running"):
        backend.start(tensors[0])  # type: ignore[arg-type]
    for job, tensor in zip(jobs, tensors):
        side_by_side, alone = job.outputs(), latency.backend.infer(tensor)  # type: ignore[arg-type]
        for ours, theirs in zip(side_by_side, alone):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
        with pytest.raises(RuntimeError, match="already taken"):
            job.outputs()
    assert backend.start(tensors[0]).outputs()[0].shape == side_by_side[0].shape  # the requests came back


def test_throughput_is_refused_where_frames_run_one_at_a_time_and_bad_values_name_the_key(model: Path) -> None:
    with pytest.raises(ModelLoadError, match="config key 'performance' is 'throughput' but the onnx backend"):
        load_backend(model, BackendOptions(runtime="onnxruntime", performance="throughput"))
    with pytest.raises(ModelLoadError, match="config key 'performance' is 'fast'"):
        load_backend(model, BackendOptions(runtime="openvino", performance="fast"))
    with pytest.raises(ConfigError, match="performance"):
        Config.from_mapping({"performance": "fast"})
    assert load_backend(model, BackendOptions(runtime="onnxruntime", performance="auto")).info.concurrency == 1


@pytest.mark.parametrize("batch", [1, 3])
def test_frames_in_flight_stay_within_the_concurrency_and_come_back_in_order_with_the_same_results(
        model: Path, batch: int) -> None:
    """Batches of 3 exceed 2 frames at once: a batch then waits for its own oldest frame."""
    latency, throughput = openvino(model, "latency"), openvino(model, "throughput")
    frames = feed_frames(throughput, 12)
    in_flight: FramesInFlight[int] = FramesInFlight()
    ended = []
    for start in range(0, len(frames), batch):
        ended += in_flight.submit(throughput, frames[start:start + batch], start)
        assert in_flight.frames <= max(throughput.concurrency, batch)
    ended += in_flight.drain()
    assert len(in_flight) == 0 and [b.tag for b in ended] == list(range(0, len(frames), batch))
    finished = [f for b in ended for f in finish_frames(b, [RollingFPS()] * len(b.frames), PublishGate(0), True)]
    assert [f.frame.index for f in finished] == list(range(len(frames)))
    for inferred in finished:
        alone = latency.infer_and_decode(inferred.frame.prepared).result
        ours = inferred.prediction.result
        assert len(ours) == len(alone)
        np.testing.assert_allclose(ours.boxes, alone.boxes, atol=1e-2)  # type: ignore[union-attr]
        assert inferred.prediction.inference_ms > 0 and inferred.prediction.batch_size == 1
    assert sum(len(f.prediction.result) for f in finished) > 0


def test_a_model_that_takes_batches_runs_a_batch_in_as_many_calls_as_run_at_once(
        random_model: Callable[..., Path]) -> None:
    model = random_model("detect", MODEL_SIZE, "onnx", dynamic=True)
    latency, throughput = openvino(model, "latency"), openvino(model, "throughput")
    if throughput.concurrency < 2:
        pytest.skip("OpenVINO runs one frame at a time on this CPU")
    frames = feed_frames(throughput, 5)
    predictions = throughput.submit([frame.prepared for frame in frames]).predictions()
    per_call = -(-5 // throughput.concurrency)
    assert [p.batch_size for p in predictions] == [min(per_call, 5 - i // per_call * per_call) for i in range(5)]
    for frame, prediction in zip(frames, predictions):
        alone = latency.infer_and_decode(frame.prepared).result
        assert len(prediction.result) == len(alone)
        np.testing.assert_allclose(prediction.result.boxes, alone.boxes, atol=1e-2)  # type: ignore[union-attr]


def test_a_runtime_that_runs_one_frame_at_a_time_finishes_each_batch_as_it_is_submitted(model: Path) -> None:
    predictor = Predictor(load_backend(model, BackendOptions(runtime="onnxruntime")), PostprocessSettings())
    assert predictor.concurrency == 1
    in_flight: FramesInFlight[str] = FramesInFlight()
    for i, frame in enumerate(feed_frames(predictor, 3)):
        assert [b.tag for b in in_flight.submit(predictor, [frame], f"batch {i}")] == [f"batch {i}"]
        assert len(in_flight) == 0


class _FailingJob:
    def __init__(self, taken: list[str]) -> None:
        self.taken = taken

    def done(self) -> bool:
        return True

    def outputs(self) -> list[np.ndarray]:
        self.taken.append("failed")
        raise RuntimeError("the device went away")


class _OneFailingBackend:
    """The real OpenVINO backend, except that its second job fails (an inference error cannot be caused
    on demand in a real runtime)."""

    def __init__(self, real: ConcurrentBackend, info: ModelInfo) -> None:
        self.real, self.info, self.concurrency = real, info, real.concurrency
        self.device_frames = None
        self.started = 0
        self.taken: list[str] = []

    def start(self, tensor: np.ndarray) -> object:
        self.started += 1
        return _FailingJob(self.taken) if self.started == 2 else self.real.start(tensor)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.real.start(tensor).outputs()

    def disable_device_frames(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_inference_error_is_raised_by_its_own_batch_only(model: Path) -> None:
    real = openvino(model, "throughput")
    predictor = Predictor(_OneFailingBackend(real.backend, real.info), PostprocessSettings())  # type: ignore[arg-type]
    in_flight: FramesInFlight[int] = FramesInFlight()
    frames = feed_frames(predictor, 3)
    ended = [b for i, frame in enumerate(frames) for b in in_flight.submit(predictor, [frame], i)]
    ended += in_flight.drain()
    outcomes = []
    for batch in ended:
        try:
            batch.submitted.predictions()
            outcomes.append("ok")
        except RuntimeError as exc:
            outcomes.append(str(exc))
    assert outcomes == ["ok", "the device went away", "ok"]
    assert real.backend.start(frames[0].prepared.tensor).outputs()  # type: ignore[attr-defined,arg-type]


def test_the_controller_reports_every_frame_in_order_and_ends_after_the_last(model: Path, tmp_path: Path) -> None:
    video = make_video(tmp_path / "short.avi", frames=9)
    config = base_config(model, video, loop_source=False, max_publish_rate=0, runtime="openvino",
                         performance="throughput")
    with running_controller(config) as (controller, output):
        controller.submit_command(json.dumps({"status": "start"}).encode())
        summary = output.wait_for(is_final_summary, timeout=60)
        frames = [m for m in output.messages if m.get("type") == "frame"]
    assert summary["frames"] == 9 == len(frames)
    assert [m["seq"] for m in frames] == list(range(1, 10))
    assert frames[0]["model"]["concurrency"] == openvino(model, "throughput").concurrency


def test_pause_finishes_the_frames_in_flight_before_it_answers(model: Path, sample_video: Path) -> None:
    config = base_config(model, sample_video, max_publish_rate=0, runtime="openvino", performance="throughput")
    with running_controller(config) as (controller, output):
        controller.submit_command(json.dumps({"status": "start"}).encode())
        output.wait_for(lambda m: m.get("type") == "frame", count=3)
        controller.submit_command(json.dumps({"status": "pause"}).encode())
        paused = output.wait_for(is_state("paused"))
        at_pause = output.messages.index(paused) + 1
        time.sleep(0.5)
        assert output.since(at_pause, lambda m: m.get("type") == "frame") == []

