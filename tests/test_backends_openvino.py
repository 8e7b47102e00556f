"""OpenVINO backend: the same results as ONNX Runtime on the same model (f32), Ultralytics' OpenVINO
folders, the `runtime` config key and what `auto` picks. Skipped where openvino is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MODEL_CACHE, asset_images

from yolo_edge import processing
from yolo_edge.backends import RUNTIMES, BackendOptions, ModelLoadError, choose_runtime, format_for, load_backend
from yolo_edge.config import RUNTIMES as CONFIG_RUNTIMES
from yolo_edge.config import Config, ConfigError
from yolo_edge.predictor import PostprocessSettings, Predictor

pytest.importorskip("openvino")

from yolo_edge.backends.openvino import OpenVinoBackend  # noqa: E402  (after the skip)

SIZE = 320
BOX_TOLERANCE_PX = 0.05  # frame pixels
SCORE_TOLERANCE = 1e-3
# Polygons: a mask pixel (model-input resolution) near the 0.5 threshold can flip between runtimes and
# move the outline. Measured on bus.jpg and zidane.jpg: 0 for all but one of 87 polygons, that one 8
# frame px on zidane.jpg (1280 wide, 4 frame px per model pixel at 320) = 2 model pixels.
POLYGON_TOLERANCE_MODEL_PX = 2.0


def predictor(path: Path, runtime: str) -> Predictor:
    backend = load_backend(path, BackendOptions(device="cpu", input_size=(SIZE, SIZE), runtime=runtime))
    return Predictor(backend, PostprocessSettings())


def frames() -> list[np.ndarray]:
    images = [cv2.imread(str(p)) for p in asset_images()]
    return [image for image in images if image is not None]


def polygon_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance from a vertex of either outline to the other outline (a Hausdorff distance
    between the outlines, taken at their vertices)."""
    def farthest(points: np.ndarray, outline: np.ndarray) -> float:
        contour = outline.astype(np.float32).reshape(-1, 1, 2)
        return max((abs(cv2.pointPolygonTest(contour, (float(x), float(y)), True)) for x, y in points),
                   default=0.0)
    return max(farthest(a, b), farthest(b, a))


def matching_order(ours: processing.Detections | processing.Classification,
                   reference: processing.Detections | processing.Classification) -> list[int]:
    """For each reference result, the index of our result of the same class with the nearest score (and
    box): rows of near-equal scores may come out in either order."""
    unused = set(range(len(ours)))
    order = []
    for i in range(len(reference)):
        candidates = [j for j in unused if ours.class_ids[j] == reference.class_ids[i]]
        assert candidates, f"reference result {i} (class {reference.class_ids[i]}) has no counterpart"

        def gap(j: int, i: int = i) -> float:
            box_gap = (float(np.abs(ours.boxes[j] - reference.boxes[i]).max())
                       if isinstance(ours, processing.Detections) and isinstance(reference, processing.Detections)
                       else 0.0)
            return abs(float(ours.scores[j] - reference.scores[i])) + box_gap
        best = min(candidates, key=gap)
        unused.discard(best)
        order.append(best)
    return order


def assert_same(ours: processing.Detections | processing.Classification,
                reference: processing.Detections | processing.Classification,
                frame_px_per_model_px: float) -> dict[str, float]:
    """Same classes, boxes and scores within the tolerances (polygons too); returns the largest gaps."""
    assert len(ours) == len(reference)
    order = matching_order(ours, reference)
    np.testing.assert_array_equal(ours.class_ids[order], reference.class_ids)
    np.testing.assert_allclose(ours.scores[order], reference.scores, atol=SCORE_TOLERANCE, rtol=0)
    gaps = {"score": float(np.abs(ours.scores[order] - reference.scores).max(initial=0.0))}
    if isinstance(ours, processing.Detections) and isinstance(reference, processing.Detections):
        np.testing.assert_allclose(ours.boxes[order], reference.boxes, atol=BOX_TOLERANCE_PX, rtol=0)
        gaps["box_px"] = float(np.abs(ours.boxes[order] - reference.boxes).max(initial=0.0))
        if ours.polygons is not None and reference.polygons is not None:
            distances = [polygon_distance(ours.polygons[j], b) for j, b in zip(order, reference.polygons)]
            gaps["polygon_px"] = max(distances, default=0.0)
            assert gaps["polygon_px"] <= POLYGON_TOLERANCE_MODEL_PX * frame_px_per_model_px
    return gaps


def assert_runtimes_agree(openvino_model: Path, onnx_model: Path) -> None:
    ov, ort = predictor(openvino_model, "openvino"), predictor(onnx_model, "onnxruntime")
    assert ov.backend.info.runtime.startswith("openvino ") and ov.backend.info.runtime.endswith("(CPU, f32)")
    assert (ov.backend.info.task, ov.backend.info.names, ov.backend.info.stride) == \
        (ort.backend.info.task, ort.backend.info.names, ort.backend.info.stride)
    detections = 0
    for frame in frames():
        ours, reference = ov.predict(frame).result, ort.predict(frame).result
        gaps = assert_same(ours, reference, max(frame.shape[:2]) / SIZE)
        detections += len(reference)
        print(f"{openvino_model.name}: {len(reference)} results, largest gaps {gaps}")
    assert detections > 0


@pytest.mark.parametrize("task", ["detect", "segment", "classify"])
def test_openvino_equals_onnxruntime_on_the_same_onnx_file(task: str, random_model: Callable[..., Path]) -> None:
    model = random_model(task, SIZE if task != "classify" else 224, class_bias=-1.5 if task != "classify" else -3.0)
    assert_runtimes_agree(model, model)


@pytest.fixture(scope="module")
def openvino_folder() -> tuple[Path, Path]:
    """(OpenVINO IR folder, ONNX file) exported by Ultralytics from one random detect checkpoint."""
    pytest.importorskip("ultralytics")
    from yolo_edge_tools.modelgen import export_model, make_random_model

    directory = MODEL_CACHE / f"openvino-ir-detect-{SIZE}"
    done = directory / "DONE"
    if not done.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        checkpoint = make_random_model(directory, "detect", SIZE, "pt", class_bias=-1.5)
        folder = export_model(checkpoint, "openvino", SIZE)
        onnx_file = export_model(checkpoint, "onnx", SIZE)
        done.write_text(f"{folder}\n{onnx_file}")
    folder_text, onnx_text = done.read_text().split("\n")
    return Path(folder_text), Path(onnx_text)


def test_an_ultralytics_openvino_folder_loads_and_equals_onnxruntime(openvino_folder: tuple[Path, Path]) -> None:
    folder, onnx_file = openvino_folder
    assert folder.is_dir() and folder.name.endswith("_openvino_model")
    assert format_for(folder) == "openvino"
    backend = load_backend(folder)
    assert backend.info.format == "openvino" and backend.info.task == "detect"
    assert backend.info.names and backend.info.device == "cpu" and backend.device_frames is None
    backend.close()
    assert_runtimes_agree(folder, onnx_file)


def test_a_missing_openvino_folder_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="folder not found"):
        load_backend(tmp_path / "yolov8n_openvino_model")
    empty = tmp_path / "empty_openvino_model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="one .xml file; found 0"):
        load_backend(empty)


def test_openvino_refuses_a_gpu_device(random_model: Callable[..., Path]) -> None:
    with pytest.raises(ModelLoadError, match="config key 'device' is 'cuda'"):
        load_backend(random_model("detect", SIZE), BackendOptions(device="cuda", runtime="openvino"))


def test_runtime_key_default_and_validation() -> None:
    assert Config().runtime == "auto"
    assert CONFIG_RUNTIMES == RUNTIMES
    assert Config.from_mapping({"runtime": "OpenVINO"}).runtime == "openvino"
    assert Config.from_mapping({"runtime": "TensorRT"}).runtime == "tensorrt"
    for bad in ("tvm", "", 3):
        with pytest.raises(ConfigError, match="runtime"):
            Config.from_mapping({"runtime": bad})


def test_load_backend_refuses_an_unknown_runtime(random_model: Callable[..., Path]) -> None:
    with pytest.raises(ModelLoadError, match="config key 'runtime' is 'tvm'"):
        load_backend(random_model("detect", SIZE), BackendOptions(runtime="tvm"))


@pytest.mark.parametrize(("configured", "device", "installed", "machine", "expected"), [
    ("onnxruntime", "auto", True, "x86_64", "onnxruntime"),
    ("openvino", "auto", False, "aarch64", "openvino"),  # configured: loading says what is missing
    ("auto", "auto", True, "x86_64", "openvino"),
    ("auto", "cpu", True, "AMD64", "openvino"),
    ("auto", "auto", False, "x86_64", "onnxruntime"),
    ("auto", "auto", True, "aarch64", "onnxruntime"),
    ("auto", "cuda", True, "x86_64", "onnxruntime"),
    ("auto", "cuda:1", True, "x86_64", "onnxruntime"),
    ("tensorrt", "auto", True, "x86_64", "tensorrt"),
])
def test_auto_runtime_choice(configured: str, device: str, installed: bool, machine: str, expected: str) -> None:
    runtime, why = choose_runtime(configured, device, installed, machine)
    assert runtime == expected and why


@pytest.mark.parametrize(("device", "expected"), [("auto", "onnxruntime"), ("cpu", "openvino")])
def test_auto_prefers_the_gpu_where_onnx_runtime_has_a_gpu_provider(device: str, expected: str) -> None:
    runtime, why = choose_runtime("auto", device, True, "x86_64", ["TensorrtExecutionProvider"])
    assert runtime == expected
    assert device == "cpu" or "TensorrtExecutionProvider" in why


def test_the_tensorrt_runtime_needs_onnx_runtimes_tensorrt_provider(random_model: Callable[..., Path]) -> None:
    import onnxruntime

    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has ONNX Runtime's TensorRT provider")
    with pytest.raises(ModelLoadError, match="config key 'runtime' is 'tensorrt' but ONNX Runtime has no "
                                             "TensorRT provider .*yolo-edge export MODEL --format engine"):
        load_backend(random_model("detect", SIZE), BackendOptions(runtime="tensorrt"))


def test_auto_runtime_loads_openvino_here_on_x86_64(random_model: Callable[..., Path]) -> None:
    import platform

    backend = load_backend(random_model("detect", SIZE), BackendOptions(runtime="auto"))
    expected = "openvino" if platform.machine().lower() in ("x86_64", "amd64") else "onnxruntime"
    assert backend.info.runtime.startswith(expected)


def test_threads_and_batches(random_model: Callable[..., Path]) -> None:
    model = random_model("detect", SIZE, dynamic=True)
    backend = load_backend(model, BackendOptions(threads=1, input_size=(SIZE, SIZE), runtime="openvino",
                                                 performance="latency"))
    reference = load_backend(model, BackendOptions(input_size=(SIZE, SIZE)))
    assert backend.info.max_batch == reference.info.max_batch > 1
    assert isinstance(backend, OpenVinoBackend)
    assert int(backend.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    assert str(backend.compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    planes = np.concatenate([processing.to_tensor(frame) for frame in pixels])
    for ours, theirs in zip(backend.infer(pixels), reference.infer(planes)):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=0.1, rtol=1e-3)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(pixels)


# Run in a fresh Python that imports yolo_edge only: in the test process (torch, Ultralytics and earlier
# sessions loaded) both runtimes took about 95 ms here instead of 45-55.
_LATENCY_SCRIPT = """
import statistics, sys, time
import numpy as np
from yolo_edge.backends import BackendOptions, load_backend
backend = load_backend(sys.argv[1], BackendOptions(device="cpu", runtime=sys.argv[2]))
from yolo_edge.predictor import PostprocessSettings, Predictor
frame = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
tensor, _ = Predictor(backend, PostprocessSettings()).host_tensor(frame)
backend.infer(tensor)  # warm-up
times = []
for _ in range(20):
    start = time.perf_counter()
    backend.infer(tensor)
    times.append((time.perf_counter() - start) * 1000)
print(statistics.median(times))
"""


def median_infer_ms(path: Path, runtime: str) -> float:
    """Median of 20 `infer` calls on a 640x640 frame, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", _LATENCY_SCRIPT, str(path), runtime], capture_output=True,
                            text=True, check=True, timeout=300)
    return float(result.stdout.strip().splitlines()[-1])


def test_latency_onnxruntime_vs_openvino(random_model: Callable[..., Path]) -> None:
    """Printed, not asserted: YOLOv8n 640, median of 20 calls each."""
    model = random_model("detect", 640)
    ort_ms, ov_ms = median_infer_ms(model, "onnxruntime"), median_infer_ms(model, "openvino")
    print(f"YOLOv8n 640 on this CPU: onnxruntime {ort_ms:.1f} ms, openvino f32 {ov_ms:.1f} ms")


# --- the config key `precision` ----------------------------------------------------------------------

@pytest.mark.parametrize(("configured", "quantized", "capabilities", "expected"), [
    ("auto", False, ["BF16", "FP32"], "fp32"),  # auto never picks bf16 (README, Models: precision)
    ("fp32", False, ["FP32"], "fp32"),
    ("bf16", False, ["BF16", "FP32"], "bf16"),
    ("fp16", False, ["FP16", "FP32"], "fp16"),
    ("auto", True, ["FP32", "INT8"], "int8"),
    ("int8", True, ["FP32", "INT8"], "int8"),
])
def test_openvino_precision_choice(configured: str, quantized: bool, capabilities: list, expected: str) -> None:
    from yolo_edge.backends.openvino import resolve_precision

    assert resolve_precision(configured, quantized, capabilities) == expected


@pytest.mark.parametrize(("configured", "quantized", "capabilities", "message"), [
    ("bf16", False, ["FP32"], "this CPU has no BF16 support"),
    ("fp16", False, ["BF16", "FP32"], "this CPU has no FP16 support .*use fp32 or bf16"),
    ("int8", False, ["FP32", "INT8"], "not quantized .*--format onnx-int8"),
    ("fp32", True, ["FP32", "INT8"], "the model is quantized"),
    ("bf16", True, ["BF16", "FP32", "INT8"], "the model is quantized"),
])
def test_openvino_refuses_what_the_model_or_cpu_cannot_run(configured: str, quantized: bool, capabilities: list,
                                                            message: str) -> None:
    from yolo_edge.backends.base import OptionError
    from yolo_edge.backends.openvino import resolve_precision

    with pytest.raises(OptionError, match=f"config key 'precision' is '{configured}' but .*{message}"):
        resolve_precision(configured, quantized, capabilities)


def test_openvino_loads_in_the_configured_precision(random_model: Callable[..., Path]) -> None:
    import openvino as ov

    model = random_model("detect", SIZE)
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for precision, hint in (("bf16", "bf16"), ("fp16", "f16")):
        options = BackendOptions(device="cpu", runtime="openvino", precision=precision)
        if precision.upper() not in capabilities:
            with pytest.raises(ModelLoadError, match=f"config key 'precision' is '{precision}'"):
                load_backend(model, options)
            continue
        backend = load_backend(model, options)
        assert isinstance(backend, OpenVinoBackend) and backend.info.precision == precision
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == hint
        assert backend.info.runtime.endswith(f"(CPU, {hint})")
    assert load_backend(model, BackendOptions(runtime="openvino")).info.precision == "fp32"
    with pytest.raises(ModelLoadError, match="config key 'precision' is 'int8' but the model is not quantized"):
        load_backend(model, BackendOptions(runtime="openvino", precision="int8"))


def test_openvino_runs_a_quantized_model_in_int8(random_model: Callable[..., Path]) -> None:
    from test_precision import make_int8_model

    quantized = make_int8_model(random_model)
    backend = load_backend(quantized, BackendOptions(runtime="openvino"))
    assert backend.info.precision == "int8" and backend.info.runtime.endswith("(CPU, int8)")
    with pytest.raises(ModelLoadError, match="config key 'precision' is 'fp32' but the model is quantized"):
        load_backend(quantized, BackendOptions(runtime="openvino", precision="fp32"))


def test_compiled_models_are_cached_between_starts(random_model, tmp_path, monkeypatch):
    from yolo_edge.backends.openvino import compiled_model_cache

    assert compiled_model_cache({"YOLO_EDGE_CACHE_DIR": "off"}) is None
    assert compiled_model_cache({"YOLO_EDGE_CACHE_DIR": str(tmp_path)}) == tmp_path / "openvino"
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert compiled_model_cache({"YOLO_EDGE_CACHE_DIR": str(blocked)}) is None  # runs on, uncached

    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", str(tmp_path / "cache"))
    path = random_model("detect", 320)
    frame = processing.preprocess_pixels(cv2.imread(str(asset_images()[0])), (320, 320))[0]
    first = load_backend(path, BackendOptions(runtime="openvino", input_size=(320, 320)))
    cached = sorted((tmp_path / "cache" / "openvino").iterdir())
    assert cached, "the first load leaves the compiled model in the cache"
    second = load_backend(path, BackendOptions(runtime="openvino", input_size=(320, 320)))
    assert sorted((tmp_path / "cache" / "openvino").iterdir()) == cached  # read, not compiled again
    for ours, theirs in zip(first.infer(frame), second.infer(frame)):
        np.testing.assert_array_equal(ours, theirs)


_IMPORT_SCRIPT = """
import sys
import yolo_edge.backends.openvino
print("converter" if "openvino.tools.ovc" in sys.modules else "no converter")
print("yaml" if "yaml" in sys.modules else "no yaml")
import openvino
from openvino import convert_model
from openvino.tools.ovc import convert_model as original
print(convert_model is original is openvino.convert_model)
try:
    openvino.no_such_name
except AttributeError:
    print("AttributeError")
"""


def test_the_backend_imports_openvino_without_its_model_converter() -> None:
    """The converter (openvino.tools.ovc) costs 55 ms and 12 MB of a start; it still loads on first use."""
    result = subprocess.run([sys.executable, "-c", _IMPORT_SCRIPT], capture_output=True, text=True, check=True,
                            timeout=120)
    assert result.stdout.split("\n")[:4] == ["no converter", "no yaml", "True", "AttributeError"]


def test_a_cached_model_starts_without_reading_it(random_model, openvino_folder, tmp_path, monkeypatch):
    """The second start of a fixed-size model (ONNX or IR folder) compiles it from the cache without
    read_model, from the facts the first start kept: the same backend, the same results. A changed file
    or a dynamic size is read again."""
    import openvino as ov

    monkeypatch.setenv("YOLO_EDGE_CACHE_DIR", str(tmp_path / "cache"))
    reads: list[str] = []
    original = ov.Core.read_model

    def read_model(core, model, *args, **kwargs):
        reads.append(Path(str(model)).name)
        return original(core, model, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "read_model", read_model)
    copy = tmp_path / "model.onnx"
    shutil.copy(random_model("detect", SIZE), copy)
    frame = processing.preprocess_pixels(cv2.imread(str(asset_images()[0])), (SIZE, SIZE))[0]
    for path in (copy, openvino_folder[0]):
        first = load_backend(path, BackendOptions(runtime="openvino"))
        second = load_backend(path, BackendOptions(runtime="openvino"))
        assert len(reads) == 1, f"{path.name}: read once, then started from the cache"
        assert second.info == first.info and second.input_dtype == first.input_dtype
        for ours, theirs in zip(first.infer(frame), second.infer(frame)):
            np.testing.assert_array_equal(ours, theirs)
        reads.clear()
    assert len(list((tmp_path / "cache" / "openvino" / "facts").glob("*.json"))) == 2
    assert len(list((tmp_path / "cache" / "openvino" / "pixels").glob("*.xml"))) == 2  # the converted models

    stat = copy.stat()  # another modification time: its kept facts no longer apply
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_backend(copy, BackendOptions(runtime="openvino"))
    assert reads == ["model.onnx"]
    dynamic = random_model("detect", SIZE, dynamic=True)
    for _ in range(2):
        load_backend(dynamic, BackendOptions(runtime="openvino", input_size=(SIZE, SIZE)))
    assert reads == ["model.onnx", dynamic.name, dynamic.name]  # a dynamic size is reshaped: read each time


def test_model_facts_that_cannot_be_used_are_ignored(random_model, tmp_path):
    from yolo_edge.backends.openvino_facts import FOLDER, ModelFacts, load_facts, save_facts

    model = tmp_path / "m.onnx"
    shutil.copy(random_model("detect", SIZE), model)
    facts = ModelFacts({"task": "detect"}, [1, 3, SIZE, SIZE], [[1, 84, 2100]], False, "f32")
    assert load_facts(tmp_path, model, "1.0") is None
    save_facts(tmp_path, model, "1.0", facts)
    assert load_facts(tmp_path, model, "1.0") == facts
    assert load_facts(tmp_path, model, "2.0") is None  # another OpenVINO version
    assert load_facts(tmp_path, tmp_path / "missing.onnx", "1.0") is None
    (kept,) = (tmp_path / FOLDER).glob("*.json")
    kept.write_text("{not json")
    assert load_facts(tmp_path, model, "1.0") is None
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    save_facts(blocked, model, "1.0", facts)  # cannot be kept: no error, the next start reads the model
