"""TensorRT backend against fake tensorrt/CUDA modules that run the real ONNX model (see fake_tensorrt.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import asset_images
from fake_tensorrt import CUDA_STYLES, install, ultralytics_header, write_engine

from yolo_edge import processing
from yolo_edge.backends import Backend, BackendOptions, ModelLoadError, load_backend
from yolo_edge.backends import tensorrt as trt_backend
from yolo_edge.backends.base import MAX_BATCH
from yolo_edge.predictor import PostprocessSettings, Predictor

pytestmark = pytest.mark.runtime

VERSIONS = {8: "8.5.2.2", 10: "10.3.0"}
GENERATIONS = [(g, c) for g in (8, 10) for c in CUDA_STYLES]
OPTIONS_320 = BackendOptions(input_size=(320, 320))


# A class bias that makes the random models find dozens to hundreds of boxes on both asset images.
MANY_BOXES = -1.5


@pytest.fixture(scope="module")
def detect_onnx(random_model) -> Path:
    return random_model("detect", 320, class_bias=MANY_BOXES)


@pytest.fixture(scope="module")
def segment_onnx(random_model) -> Path:
    return random_model("segment", 320, class_bias=MANY_BOXES)


@pytest.fixture(scope="module")
def dynamic_onnx(random_model) -> Path:
    """A detect model exported with a dynamic batch, height and width."""
    return random_model("detect", 320, class_bias=MANY_BOXES, dynamic=True)


@pytest.fixture(scope="module")
def dynamic_segment_onnx(random_model) -> Path:
    return random_model("segment", 320, class_bias=MANY_BOXES, dynamic=True)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in asset_images()]


def engine_for(tmp_path: Path, onnx: Path, generation: int, name: str = "model.engine", header: bool = True,
               **kwargs) -> Path:
    return write_engine(tmp_path / name, onnx, VERSIONS[generation],
                        ultralytics_header(onnx) if header else None, **kwargs)


def predict_all(backend, frames: list[np.ndarray]) -> list:
    predictor = Predictor(backend, PostprocessSettings())
    return [predictor.predict(frame).result for frame in frames]


def assert_same_detections(ours: list, reference: list) -> None:
    assert len(ours) == len(reference)
    for got, want in zip(ours, reference):
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        if want.masks is not None:
            assert len(got.masks) == len(want.masks)
            for got_mask, want_mask in zip(got.masks, want.masks):
                np.testing.assert_array_equal(got_mask, want_mask)


# --- engine file header -------------------------------------------------------------------------

def test_header_layout_matches_ultralytics_reader(tmp_path, detect_onnx):
    BaseBackend = pytest.importorskip("ultralytics.nn.backends.base").BaseBackend  # Ultralytics >= 8.4

    header = ultralytics_header(detect_onnx)
    path = engine_for(tmp_path, detect_onnx, 10)
    data = path.read_bytes()
    meta, engine_bytes = trt_backend.split_engine_file(data)
    offset, theirs = BaseBackend.engine_header(path)  # Ultralytics' own reader agrees on the layout
    assert meta == theirs == header
    assert data[offset:] == engine_bytes and engine_bytes.startswith(b"FAKETRT")
    assert meta["task"] == "detect" and meta["imgsz"] == [320, 320] and meta["names"]["0"] == "0"


@pytest.mark.parametrize("data", [
    b"FAKETRT\n{}",                                   # no header: the length would overrun the file
    (3).to_bytes(4, "little") + b"abcrest-of-engine",  # a length that fits but is not JSON
    (2).to_bytes(4, "little") + b"[]engine",           # JSON, but not an object
    b"\x01\x00",                                       # shorter than a length field
])
def test_files_without_header_are_all_engine(data):
    assert trt_backend.split_engine_file(data) == ({}, data)


# --- equivalence with the ONNX backend ----------------------------------------------------------

@pytest.mark.parametrize(("generation", "cuda"), GENERATIONS)
def test_detect_matches_onnx_backend(monkeypatch, tmp_path, detect_onnx, frames, generation, cuda):
    gpu, trt = install(monkeypatch, generation, cuda, VERSIONS[generation])
    backend = load_backend(engine_for(tmp_path, detect_onnx, generation), OPTIONS_320)
    info = backend.info
    assert (info.format, info.runtime, info.device) == ("tensorrt", f"tensorrt {trt.__version__}", "cuda:0")
    assert (info.task, info.input_shape, info.input_dtype, info.dynamic) == ("detect", (320, 320), "float32", False)
    assert info.num_classes == 80 and info.stride == 32
    assert info.max_batch == 1

    tensors = {entry[1]: entry[2] for entry in gpu.log if entry[0] == "malloc"}
    assert sorted(tensors.values()) == sorted([1 * 3 * 320 * 320 * 4, 1 * 84 * 2100 * 4])
    gpu.log.clear()
    reference_backend = load_backend(detect_onnx, OPTIONS_320)
    ours = predict_all(backend, frames)
    reference = predict_all(reference_backend, frames)
    assert_same_detections(ours, reference)
    assert min(len(r) for r in reference) >= 50, "the random model should give many boxes"

    # Per frame: input copied in, one execution, output copied out, then the stream synchronised.
    assert [e[0] for e in gpu.log] == ["h2d", "execute", "d2h", "sync"] * len(frames)
    assert {e[1] for e in gpu.log if e[0] in ("h2d", "d2h")} == set(tensors), "only the buffers from load"
    tensor, _ = processing.preprocess(frames[0], (320, 320))
    np.testing.assert_array_equal(backend.infer(tensor)[0], reference_backend.infer(tensor)[0])
    backend.close()


@pytest.mark.parametrize(("generation", "cuda"), [(10, "cuda-python"), (8, "pycuda")])
def test_segment_matches_onnx_backend(monkeypatch, tmp_path, segment_onnx, frames, generation, cuda):
    gpu, _ = install(monkeypatch, generation, cuda, VERSIONS[generation])
    backend = load_backend(engine_for(tmp_path, segment_onnx, generation), OPTIONS_320)
    reference_backend = load_backend(segment_onnx, OPTIONS_320)
    assert backend.info.task == "segment" and backend.info.names == reference_backend.info.names
    tensor, _ = processing.preprocess(frames[0], (320, 320))
    raw, want = backend.infer(tensor), reference_backend.infer(tensor)
    assert [r.shape for r in raw] == [(1, 116, 2100), (1, 32, 80, 80)]
    assert len(raw) == len(want)
    for got, expected in zip(raw, want):
        np.testing.assert_array_equal(got, expected)
    assert gpu.count("execute") == 1 and gpu.count("d2h") == 2
    if not hasattr(processing, "postprocess_segment"):
        pytest.skip("segment post-processing is not in processing.py yet; raw outputs were compared")
    ours, reference = predict_all(backend, frames), predict_all(reference_backend, frames)
    assert_same_detections(ours, reference)
    assert min(len(r) for r in reference) >= 50


def test_results_are_only_read_after_the_stream_is_synchronised(monkeypatch, tmp_path, detect_onnx, frames):
    """The fake is strict: a backend that skipped the synchronisation would read undefined memory."""
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    backend = load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)
    tensor, _ = processing.preprocess(frames[0], (320, 320))
    assert np.isfinite(backend.infer(tensor)[0]).all()
    monkeypatch.setattr(trt_backend.CudaRuntimeApi, "stream_sync", lambda self, stream: None)
    assert np.isnan(backend.infer(tensor)[0]).all()


def test_infer_on_another_thread_than_load(monkeypatch, tmp_path, detect_onnx, frames):
    """pycuda contexts are per thread: inference from the pipeline's thread must push it."""
    _, _ = install(monkeypatch, 10, "pycuda", VERSIONS[10])
    backend = load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)
    tensor, _ = processing.preprocess(frames[1], (320, 320))
    results: list = []
    worker = threading.Thread(target=lambda: results.append(backend.infer(tensor)))
    worker.start()
    worker.join(30)
    reference = load_backend(detect_onnx, OPTIONS_320).infer(tensor)
    np.testing.assert_array_equal(results[0][0], reference[0])
    assert sys.modules["pycuda.driver"].context_stack() == []


# --- metadata sources ---------------------------------------------------------------------------

def test_sidecar_json_supplies_metadata(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    engine = engine_for(tmp_path, detect_onnx, 10, name="trtexec.engine", header=False)
    names = {str(i): f"thing{i}" for i in range(80)}
    trt_backend.sidecar_path(engine).write_text(json.dumps({"task": "detect", "names": names, "stride": 32,
                                                            "imgsz": [320, 320]}))
    assert trt_backend.sidecar_path(engine).name == "trtexec.engine.json"
    info = load_backend(engine, OPTIONS_320).info
    assert info.label(7) == "thing7" and info.task == "detect"


def test_no_metadata_falls_back_to_outputs_and_config(monkeypatch, tmp_path, segment_onnx):
    install(monkeypatch, 8, "cuda-python", VERSIONS[8])
    engine = engine_for(tmp_path, segment_onnx, 8, header=False)
    info = load_backend(engine, OPTIONS_320).info
    assert info.task == "segment"  # from the two outputs
    assert info.names == {i: str(i) for i in range(80)}
    with pytest.raises(ModelLoadError, match="'task' asks for 'detect'"):
        load_backend(engine_for(tmp_path, segment_onnx, 8, name="h.engine"), BackendOptions(task="detect"))


def test_invalid_sidecar_names_the_file(monkeypatch, tmp_path, detect_onnx):
    gpu, _ = install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    engine = engine_for(tmp_path, detect_onnx, 10, header=False)
    trt_backend.sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"model\.engine\.json is not valid JSON"):
        load_backend(engine, OPTIONS_320)
    assert not gpu.device_memory and all(s.destroyed for s in gpu.streams.values())


# --- precision and shapes -----------------------------------------------------------------------

@pytest.mark.parametrize("generation", [8, 10])
def test_fp16_input_and_output(monkeypatch, tmp_path, detect_onnx, frames, generation):
    gpu, _ = install(monkeypatch, generation, "cuda-python", VERSIONS[generation])
    engine = engine_for(tmp_path, detect_onnx, generation, input_dtype="float16", output_dtype="float16")
    backend = load_backend(engine, OPTIONS_320)
    assert backend.info.input_dtype == "float16"
    sizes = sorted(e[2] for e in gpu.log if e[0] == "malloc")
    assert sizes == sorted([3 * 320 * 320 * 2, 84 * 2100 * 2])  # half the float32 sizes
    tensor, _ = processing.preprocess(frames[0], (320, 320))  # float32: the backend converts
    out = backend.infer(tensor)[0]
    assert out.dtype == np.float32
    reference = load_backend(detect_onnx, OPTIONS_320).infer(tensor)[0]
    fp16_input_reference = load_backend(detect_onnx, OPTIONS_320).infer(tensor.astype(np.float16))[0]
    np.testing.assert_array_equal(out, fp16_input_reference.astype(np.float16).astype(np.float32))
    assert np.abs(out - reference).max() < 0.01 * np.abs(reference).max()
    # The Predictor feeds float16 directly when the model asks for it.
    detections = Predictor(backend, PostprocessSettings()).predict(frames[0]).result
    assert len(detections) >= 20


@pytest.mark.parametrize("generation", [8, 10])
def test_dynamic_input_shape_from_config(monkeypatch, tmp_path, dynamic_onnx, frames, generation):
    gpu, trt = install(monkeypatch, generation, "cuda-python", VERSIONS[generation])
    profile = ((1, 3, 32, 32), (1, 3, 320, 320), (1, 3, 640, 640))
    engine = engine_for(tmp_path, dynamic_onnx, generation, dynamic=True, profile=profile)
    options = BackendOptions(input_size=(256, 320))
    backend = load_backend(engine, options)
    assert backend.info.input_shape == (256, 320) and backend.info.dynamic
    assert backend.info.max_batch == 1  # the profile's batch is 1 to 1
    context = backend.context
    assert context.input_shapes_set == [(1, 3, 256, 320)]
    anchors = (256 // 8) * (320 // 8) + (256 // 16) * (320 // 16) + (256 // 32) * (320 // 32)
    sizes = sorted(e[2] for e in gpu.log if e[0] == "malloc")
    assert sizes == sorted([3 * 256 * 320 * 4, 84 * anchors * 4])
    ours = predict_all(backend, frames)
    assert_same_detections(ours, predict_all(load_backend(dynamic_onnx, options), frames))

    with pytest.raises(ModelLoadError, match=r"MODEL_HEIGHT/MODEL_WIDTH ask for input 704x704, outside .* "
                                             r"32x32 \.\. 640x640"):
        load_backend(engine, BackendOptions(input_size=(704, 704)))


# --- batches (an engine with a dynamic batch dimension) ----------------------------------------------

BATCH_PROFILE = ((1, 3, 32, 32), (4, 3, 320, 320), (4, 3, 320, 320))  # what `yolo-edge export --batch 4` prints


def prepared_tensors(frames: list[np.ndarray], count: int) -> np.ndarray:
    """`count` frames (the assets, then mirrored copies) letterboxed to 320x320, as one batch."""
    pool = frames + [np.ascontiguousarray(f[:, ::-1]) for f in frames]
    return np.concatenate([processing.preprocess(pool[i % len(pool)], (320, 320))[0] for i in range(count)])


@pytest.mark.parametrize(("generation", "cuda"), [(10, "cuda-python"), (8, "pycuda")])
def test_dynamic_batch_engine_takes_batches_up_to_its_profile(monkeypatch, tmp_path, dynamic_onnx, frames,
                                                               generation, cuda):
    gpu, _ = install(monkeypatch, generation, cuda, VERSIONS[generation])
    engine = engine_for(tmp_path, dynamic_onnx, generation, dynamic=True, profile=BATCH_PROFILE)
    backend = load_backend(engine, OPTIONS_320)
    reference = load_backend(dynamic_onnx, OPTIONS_320)
    assert backend.info.max_batch == 4 and backend.info.input_shape == (320, 320)
    frame_bytes, output_bytes = 3 * 320 * 320 * 4, 84 * 2100 * 4
    # Buffers for the largest batch, allocated once at load; the context is left at batch 1.
    assert sorted(e[2] for e in gpu.log if e[0] == "malloc") == sorted([4 * frame_bytes, 4 * output_bytes])
    assert backend.context.input_shapes_set == [(1, 3, 320, 320), (4, 3, 320, 320), (1, 3, 320, 320)]

    for batch in (3, 3, 1, 4, 2):
        gpu.log.clear()
        tensor = prepared_tensors(frames, batch)
        outputs = backend.infer(tensor)
        assert [o.shape for o in outputs] == [(batch, 84, 2100)]
        np.testing.assert_array_equal(outputs[0], reference.infer(tensor)[0])
        # Only the batch's bytes move, each way.
        assert [e[2] for e in gpu.log if e[0] in ("h2d", "d2h")] == [batch * frame_bytes, batch * output_bytes]
        assert [e[2] for e in gpu.log if e[0] == "execute"] == [(batch, 3, 320, 320)]
    # The batch size is set when it changes, not on every call.
    assert backend.context.input_shapes_set[3:] == [(3, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320),
                                                    (2, 3, 320, 320)]
    with pytest.raises(ValueError, match=r"\(5, 3, 320, 320\) does not match the engine input 'images' "
                                         r"\(1, 3, 320, 320\) \(batches of 1 to 4\)"):
        backend.infer(prepared_tensors(frames, 5))
    backend.close()
    assert not gpu.device_memory


def test_predictor_batches_on_a_dynamic_batch_engine(monkeypatch, tmp_path, dynamic_segment_onnx, frames):
    """Six frames on an engine that takes four: a batch of 4 and one of 2, each frame's result the ONNX
    model's for that frame alone (segmentation: boxes, masks' polygons)."""
    gpu, _ = install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    engine = engine_for(tmp_path, dynamic_segment_onnx, 10, dynamic=True, profile=BATCH_PROFILE)
    predictor = Predictor(load_backend(engine, OPTIONS_320), PostprocessSettings())
    reference = Predictor(load_backend(dynamic_segment_onnx, OPTIONS_320), PostprocessSettings())
    pool = frames + [np.ascontiguousarray(f[:, ::-1]) for f in frames] + [np.ascontiguousarray(f[::2, ::2])
                                                                          for f in frames]
    gpu.log.clear()

    got = [p.finish() for p in predictor.infer_batch([predictor.prepare(f) for f in pool])]

    assert [e[2][0] for e in gpu.log if e[0] == "execute"] == [4, 2]
    assert [p.batch_size for p in got] == [4, 4, 4, 4, 2, 2]
    want = [reference.predict(frame) for frame in pool]
    assert_same_detections([p.result for p in got], [p.result for p in want])
    for ours, theirs in zip(got, want):
        assert len(ours.result.polygons) == len(theirs.result.polygons) > 0
        for a, b in zip(ours.result.polygons, theirs.result.polygons):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("generation", [8, 10])
def test_engine_with_only_the_batch_dynamic(monkeypatch, tmp_path, dynamic_onnx, frames, generation):
    """(-1, 3, 320, 320): batches of 1 to 4 at the one size the engine was built for."""
    install(monkeypatch, generation, "cuda-python", VERSIONS[generation])
    profile = ((1, 3, 320, 320), (4, 3, 320, 320), (4, 3, 320, 320))
    engine = engine_for(tmp_path, dynamic_onnx, generation, dynamic=True, profile=profile,
                        input_shape=(-1, 3, 320, 320))
    backend = load_backend(engine, BackendOptions(input_size=(640, 640)))  # the engine's own size wins
    assert (backend.info.input_shape, backend.info.dynamic, backend.info.max_batch) == ((320, 320), False, 4)
    tensor = prepared_tensors(frames, 2)
    np.testing.assert_array_equal(backend.infer(tensor)[0], load_backend(dynamic_onnx, OPTIONS_320).infer(tensor)[0])


def test_profile_above_max_batch_is_capped(monkeypatch, tmp_path, dynamic_onnx):
    gpu, _ = install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    profile = ((1, 3, 64, 64), (8, 3, 64, 64), (256, 3, 64, 64))
    backend = load_backend(engine_for(tmp_path, dynamic_onnx, 10, dynamic=True, profile=profile),
                           BackendOptions(input_size=(64, 64)))
    assert backend.info.max_batch == MAX_BATCH
    anchors = 8 * 8 + 4 * 4 + 2 * 2
    assert sorted(e[2] for e in gpu.log if e[0] == "malloc") == sorted([MAX_BATCH * 3 * 64 * 64 * 4,
                                                                       MAX_BATCH * 84 * anchors * 4])
    assert backend.infer(np.zeros((MAX_BATCH, 3, 64, 64), np.float32))[0].shape == (MAX_BATCH, 84, anchors)


def test_fixed_batch_engine_is_refused(monkeypatch, tmp_path, dynamic_onnx):
    gpu, _ = install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    engine = engine_for(tmp_path, dynamic_onnx, 10, input_shape=(4, 3, 320, 320))
    with pytest.raises(ModelLoadError, match=r"takes only batches of exactly 4, but the frames inferred together "
                                             r"vary from 1 to the number of cameras; build it with a dynamic batch"):
        load_backend(engine, OPTIONS_320)
    assert not gpu.device_memory


def test_profile_without_batch_1_is_refused(monkeypatch, tmp_path, dynamic_onnx):
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    profile = ((2, 3, 320, 320), (4, 3, 320, 320), (4, 3, 320, 320))
    engine = engine_for(tmp_path, dynamic_onnx, 10, dynamic=True, profile=profile)
    with pytest.raises(ModelLoadError, match=r"optimisation profile starts at batch 2.*minimum batch of 1"):
        load_backend(engine, OPTIONS_320)


def test_wrong_input_shape_is_refused(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    backend = load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)
    with pytest.raises(ValueError, match=r"\(1, 3, 640, 640\) does not match the engine input 'images'"):
        backend.infer(np.zeros((1, 3, 640, 640), np.float32))


# --- lifecycle ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cuda", ["cuda-python", "pycuda"])
def test_close_releases_gpu_memory(monkeypatch, tmp_path, detect_onnx, cuda):
    gpu, _ = install(monkeypatch, 10, cuda, VERSIONS[10])
    backend = load_backend(engine_for(tmp_path, detect_onnx, 10, name="m.trt"), OPTIONS_320)
    assert len(gpu.device_memory) == 2
    backend.close()
    backend.close()
    assert not gpu.device_memory and all(s.destroyed or cuda == "pycuda" for s in gpu.streams.values())
    if cuda == "cuda-python":
        assert not gpu.host_memory
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(np.zeros((1, 3, 320, 320), np.float32))


def test_importing_the_backend_imports_no_runtime():
    code = ("import sys, yolo_edge.backends.tensorrt; "
            "bad = [m for m in ('tensorrt', 'cuda', 'pycuda', 'onnxruntime', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- clear errors -------------------------------------------------------------------------------

def test_tensorrt_not_installed(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ModelLoadError, match="TensorRT Python package is not installed.*JetPack.*use the .onnx"):
        load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)


def test_no_cuda_binding(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 10, "none", VERSIONS[10])
    with pytest.raises(ModelLoadError, match="needs cuda-python or pycuda"):
        load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)


@pytest.mark.parametrize("cuda", CUDA_STYLES)
def test_no_gpu(monkeypatch, tmp_path, detect_onnx, cuda):
    install(monkeypatch, 10, cuda, VERSIONS[10], device_count=0)
    with pytest.raises(ModelLoadError, match="no CUDA GPU is available.*run only on an NVIDIA GPU"):
        load_backend(engine_for(tmp_path, detect_onnx, 10), OPTIONS_320)


def test_missing_device_index_and_cpu_device(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 10, "cuda-python", VERSIONS[10])
    engine = engine_for(tmp_path, detect_onnx, 10)
    with pytest.raises(ModelLoadError, match=r"CUDA device 1 does not exist \(1 device"):
        load_backend(engine, BackendOptions(device="cuda:1"))
    with pytest.raises(ModelLoadError, match="'device' is 'cpu' but TensorRT engines run only on a CUDA GPU"):
        load_backend(engine, BackendOptions(device="cpu"))


@pytest.mark.parametrize("raises", [False, True])
def test_engine_from_another_tensorrt_version(monkeypatch, tmp_path, detect_onnx, raises):
    gpu, _ = install(monkeypatch, 10, "cuda-python", "10.3.0", raise_on_bad_engine=raises)
    header = {**ultralytics_header(detect_onnx), "tensorrt_version": "8.6.2"}
    engine = write_engine(tmp_path / "old.engine", detect_onnx, "8.6.2", header)
    with pytest.raises(ModelLoadError) as caught:
        load_backend(engine, OPTIONS_320)
    message = str(caught.value)
    assert "built with TensorRT 8.6.2 and this device has TensorRT 10.3.0" in message
    assert "Version tag does not match" in message  # TensorRT's own words
    assert "rebuild the engine on this device" in message and "--saveEngine=old.engine" in message
    assert not gpu.device_memory


def test_engine_of_unknown_origin(monkeypatch, tmp_path, detect_onnx):
    install(monkeypatch, 8, "pycuda", "8.6.1")
    engine = write_engine(tmp_path / "x.engine", detect_onnx, "8.5.2.2")  # sidecar-less, header-less
    with pytest.raises(ModelLoadError, match=r"this device has TensorRT 8\.6\.1; the engine was most likely built "
                                             r"with another TensorRT version"):
        load_backend(engine, OPTIONS_320)
    (tmp_path / "garbage.engine").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="Magic tag does not match"):
        load_backend(tmp_path / "garbage.engine", OPTIONS_320)


@pytest.mark.parametrize(("generation", "api"), [(8, trt_backend.TensorRTApi.BINDINGS),
                                                  (10, trt_backend.TensorRTApi.NAMED_TENSORS)])
def test_the_backend_protocol_and_api_generation(monkeypatch, tmp_path, detect_onnx, generation, api):
    install(monkeypatch, generation, "cuda-python", VERSIONS[generation])
    backend = load_backend(engine_for(tmp_path, detect_onnx, generation), OPTIONS_320)
    assert isinstance(backend, Backend)
    assert backend.api.generation is api
    assert backend.device_frames is None  # the engine reads host-prepared tensors
    backend.disable_device_frames()  # a no-op
    assert backend.infer(np.zeros((1, 3, 320, 320), np.float32))[0].shape == (1, 84, 2100)
    backend.close()
