"""The `precision` config key: validation, what each runtime accepts and refuses, and the precision a
loaded model reports (ModelInfo.precision, the messages' model block)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MODEL_CACHE, asset_images

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, ModelLoadError, load_backend
from yolo_edge.backends.base import PRECISIONS, OptionError, checked_precision
from yolo_edge.backends.onnx import OnnxOptions, model_precision
from yolo_edge.backends.onnx import resolve_precision as onnx_precision
from yolo_edge.backends.tensorrt import TensorRTOptions, engine_precision, resolve_engine_precision
from yolo_edge.config import PRECISIONS as CONFIG_PRECISIONS
from yolo_edge.config import Config, ConfigError
from yolo_edge.messages import model_block

SIZE = 320


@pytest.fixture(scope="module")
def int8_model(random_model: Callable[..., Path]) -> Path:
    return make_int8_model(random_model)


def make_int8_model(random_model: Callable[..., Path]) -> Path:
    """A statically quantized (QDQ) copy of the random 320 detect model, calibrated on bus and zidane."""
    pytest.importorskip("onnx")
    from yolo_edge_tools.export import quantize_onnx

    source = random_model("detect", SIZE, class_bias=-1.5)
    directory = MODEL_CACHE / f"int8-static-{source.parent.name}"
    output = directory / "yolov8n-320-int8.onnx"
    if not (directory / "DONE").exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        tensors = [processing.preprocess(cv2.imread(str(p)), (SIZE, SIZE))[0] for p in asset_images()]
        quantize_onnx(source, output, tensors)
        (directory / "DONE").write_text("ok")
    return output


def test_config_key_default_and_validation() -> None:
    assert Config().precision == "auto"
    assert CONFIG_PRECISIONS == PRECISIONS == ("auto", "fp32", "fp16", "bf16", "int8")
    assert Config.from_mapping({"precision": "BF16"}).precision == "bf16"
    for bad in ("fp8", "", 16):
        with pytest.raises(ConfigError, match="precision"):
            Config.from_mapping({"precision": bad})


def test_checked_precision() -> None:
    assert checked_precision(" FP16 ") == "fp16"
    with pytest.raises(OptionError, match="config key 'precision' is 'half'"):
        checked_precision("half")


def test_load_backend_refuses_an_unknown_precision(random_model: Callable[..., Path]) -> None:
    with pytest.raises(ModelLoadError, match="config key 'precision' is 'fp8'"):
        load_backend(random_model("detect", SIZE), BackendOptions(precision="fp8"))


@pytest.mark.parametrize(("configured", "exported", "expected"), [
    ("auto", "fp32", "fp32"), ("fp32", "fp32", "fp32"), ("auto", "fp16", "fp16"), ("fp16", "fp16", "fp16"),
    ("auto", "int8", "int8"), ("int8", "int8", "int8"),
])
def test_onnxruntime_runs_a_model_as_exported(configured: str, exported: str, expected: str) -> None:
    assert onnx_precision(configured, exported) == expected


@pytest.mark.parametrize(("configured", "exported", "message"), [
    ("fp16", "fp32", "not an fp16 export"),
    ("int8", "fp32", "not quantized .*onnx-int8"),
    ("fp32", "int8", "the model is int8"),
    ("fp32", "fp16", "the model is fp16"),
])
def test_onnxruntime_refuses_another_precision(configured: str, exported: str, message: str) -> None:
    with pytest.raises(OptionError, match=f"config key 'precision' is '{configured}' but .*{message}"):
        onnx_precision(configured, exported)


def test_onnxruntime_refuses_bf16() -> None:
    with pytest.raises(OptionError, match="'precision' is 'bf16'.*runtime openvino"):
        OnnxOptions.from_request(BackendOptions(precision="bf16"))


def test_an_onnx_models_precision_is_read_from_the_file(random_model: Callable[..., Path], int8_model: Path) -> None:
    assert model_precision(random_model("detect", SIZE, class_bias=-1.5), np.dtype("float32")) == "fp32"
    assert model_precision(random_model("detect", SIZE, class_bias=-1.5), np.dtype("float16")) == "fp16"
    assert model_precision(int8_model, np.dtype("float32")) == "int8"


def test_onnxruntime_loads_and_reports_precision(random_model: Callable[..., Path], int8_model: Path) -> None:
    fp32 = load_backend(random_model("detect", SIZE), BackendOptions(precision="fp32"))
    assert fp32.info.precision == "fp32"
    block = model_block(fp32.info)
    assert block["precision"] == "fp32" and list(block)[-4:] == ["runtime", "precision", "concurrency", "device"]
    assert load_backend(int8_model).info.precision == "int8"
    with pytest.raises(ModelLoadError, match="config key 'precision' is 'int8' but the model is not quantized"):
        load_backend(random_model("detect", SIZE), BackendOptions(precision="int8"))
    with pytest.raises(ModelLoadError, match="config key 'precision' is 'fp16'"):
        load_backend(random_model("detect", SIZE), BackendOptions(precision="fp16"))


@pytest.mark.parametrize(("meta", "expected"), [
    ({"half": True}, "fp16"), ({"half": "False"}, "fp32"), ({"int8": True, "half": False}, "int8"), ({}, "engine"),
])
def test_tensorrt_engine_precision_from_its_metadata(meta: dict, expected: str) -> None:
    assert engine_precision(meta) == expected
    assert resolve_engine_precision("auto", expected) == expected


def test_tensorrt_refuses_a_precision_the_engine_was_not_built_in() -> None:
    assert TensorRTOptions.from_request(BackendOptions(precision="FP16")).precision == "fp16"
    assert resolve_engine_precision("fp16", "fp16") == "fp16"
    with pytest.raises(OptionError, match="'precision' is 'fp32' but the engine was built in fp16"):
        resolve_engine_precision("fp32", "fp16")
    with pytest.raises(OptionError, match="'precision' is 'fp16' but the engine's metadata does not say"):
        resolve_engine_precision("fp16", "engine")


def test_torch_precision_options() -> None:
    pytest.importorskip("torch")
    from yolo_edge.backends.torch import TorchOptions

    assert TorchOptions.from_request(BackendOptions(precision="fp16")).half is True
    assert TorchOptions.from_request(BackendOptions(half=True)).half is True
    with pytest.raises(OptionError, match="'precision' is 'fp32' but config key 'half' is true"):
        TorchOptions.from_request(BackendOptions(half=True, precision="fp32"))
    for precision in ("bf16", "int8"):
        with pytest.raises(OptionError, match=f"'precision' is '{precision}' but the PyTorch backend"):
            TorchOptions.from_request(BackendOptions(precision=precision))


def test_torch_fp16_is_refused_on_the_cpu(random_model: Callable[..., Path]) -> None:
    pytest.importorskip("ultralytics")
    path = random_model("detect", SIZE, "pt")
    backend = load_backend(path, BackendOptions(device="cpu", input_size=(SIZE, SIZE)))
    assert backend.info.precision == "fp32"
    with pytest.raises(ModelLoadError, match="'precision' is 'fp16' but .* CUDA GPU only"):
        load_backend(path, BackendOptions(device="cpu", precision="fp16", input_size=(SIZE, SIZE)))
