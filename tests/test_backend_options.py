"""Each backend's own options, built from the general BackendOptions request, and the Backend protocol
every backend implements (the device frame path a member, None where there is none)."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

from yolo_edge.backends import Backend, BackendOptions, ModelLoadError, load_backend
from yolo_edge.backends.base import OptionError
from yolo_edge.backends.tensorrt import TensorRTApi, TensorRTOptions, tensorrt_api

pytestmark = pytest.mark.runtime

SIZE = 320


def onnx_options():
    return pytest.importorskip("yolo_edge.backends.onnx").OnnxOptions


def torch_options():
    pytest.importorskip("torch")
    return pytest.importorskip("yolo_edge.backends.torch").TorchOptions


# --- built from the request -------------------------------------------------------------------------

def test_onnx_options_hold_what_onnx_runtime_uses():
    options = onnx_options().from_request(BackendOptions(device=" CUDA:1 ", half=True, threads=2,
                                                         input_size=[256, 320], task="Segment"))
    assert dataclasses.asdict(options) == {"device": "cuda:1", "threads": 2, "input_size": (256, 320),
                                           "task": "segment", "precision": "auto", "tensorrt": False}


def test_torch_options_hold_what_torch_uses():
    options = torch_options().from_request(BackendOptions(device="cpu", half=True, threads=1,
                                                          input_size=(SIZE, SIZE)))
    assert dataclasses.asdict(options) == {"device": "cpu", "half": True, "threads": 1, "input_size": (SIZE, SIZE),
                                           "task": "auto", "precision": "auto"}


@pytest.mark.parametrize(("device", "index"), [("auto", 0), ("cuda", 0), ("gpu", 0), ("cuda:2", 2), ("1", 1)])
def test_tensorrt_options_hold_the_cuda_device_index(device, index):
    options = TensorRTOptions.from_request(BackendOptions(device=device, half=True, threads=3))
    assert dataclasses.asdict(options) == {"device_index": index, "input_size": (640, 640), "task": "auto",
                                           "precision": "auto"}


def test_defaults_match_the_request_defaults():
    assert onnx_options().from_request(BackendOptions()) == onnx_options()()
    assert TensorRTOptions.from_request(BackendOptions()) == TensorRTOptions()


def test_options_are_frozen():
    options = TensorRTOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.task = "detect"  # type: ignore[misc]


# --- validation messages --------------------------------------------------------------------------------

INVALID = [
    (BackendOptions(device="tpu"), "config key 'device' is 'tpu'; expected auto, cpu, cuda or cuda:N"),
    (BackendOptions(device="cuda:x"), "config key 'device' is 'cuda:x'"),
    (BackendOptions(threads=-1), r"config key 'threads' is -1; expected 0 \(the runtime's default\)"),
    (BackendOptions(threads=1.5), "config key 'threads' is 1.5"),  # type: ignore[arg-type]
    (BackendOptions(input_size=(0, 320)), r"config keys MODEL_HEIGHT/MODEL_WIDTH are \(0, 320\); expected two "
                                          "positive sizes"),
    (BackendOptions(input_size=(320,)), r"config keys MODEL_HEIGHT/MODEL_WIDTH are \(320,\)"),  # type: ignore[arg-type]
    (BackendOptions(task="pose"), "config key 'task' is 'pose'; expected auto, detect, segment, classify"),
]


@pytest.mark.parametrize(("request_", "message"), INVALID)
def test_onnx_options_name_the_bad_key_and_value(request_, message):
    with pytest.raises(OptionError, match=message):
        onnx_options().from_request(request_)


@pytest.mark.parametrize(("request_", "message"), [
    *INVALID, (BackendOptions(half="yes"), "config key 'half' is 'yes'; expected true or false")])  # type: ignore[arg-type]
def test_torch_options_name_the_bad_key_and_value(request_, message):
    with pytest.raises(OptionError, match=message):
        torch_options().from_request(request_)


@pytest.mark.parametrize(("request_", "message"), [
    (BackendOptions(device="cpu"), "config key 'device' is 'cpu' but TensorRT engines run only on a CUDA GPU"),
    *[case for case in INVALID if "'device'" not in case[1] and "'threads'" not in case[1]]])
def test_tensorrt_options_name_the_bad_key_and_value(request_, message):
    with pytest.raises(OptionError, match=message):
        TensorRTOptions.from_request(request_)


def test_an_option_error_is_a_value_error():
    assert issubclass(OptionError, ValueError)


def test_load_backend_reports_a_bad_option_as_a_model_load_error(random_model):
    path = random_model("detect", SIZE)
    with pytest.raises(ModelLoadError, match="config key 'threads' is -1") as error:
        load_backend(path, BackendOptions(threads=-1))
    assert str(path) in str(error.value)


# --- the Backend protocol -----------------------------------------------------------------------------

def test_onnx_backend_has_no_device_frame_path(random_model):
    backend = load_backend(random_model("detect", SIZE), BackendOptions(device="cpu"))
    assert isinstance(backend, Backend)
    assert backend.device_frames is None
    backend.disable_device_frames()  # a no-op
    assert backend.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))[0].shape[0] == 1
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))


def test_torch_backend_on_cpu_has_no_device_frame_path(random_model):
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    backend = load_backend(random_model("detect", SIZE, "pt"), BackendOptions(device="cpu", input_size=(SIZE, SIZE)))
    assert isinstance(backend, Backend)
    assert backend.device_frames is None
    backend.disable_device_frames()
    assert backend.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))[0].shape[0] == 1
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))


# --- TensorRT's API generation ------------------------------------------------------------------------

def _objects(**members: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**members)


def test_tensorrt_api_prefers_named_tensors():
    both = _objects(num_io_tensors=2, num_bindings=2)
    context = _objects(execute_async_v3=None, execute_async_v2=None)
    assert tensorrt_api(both, context) is TensorRTApi.NAMED_TENSORS


def test_tensorrt_api_falls_back_to_bindings():
    assert tensorrt_api(_objects(num_bindings=2), _objects(execute_async_v2=None)) is TensorRTApi.BINDINGS
    # an engine with named tensors but a context without execute_async_v3
    assert tensorrt_api(_objects(num_io_tensors=2, num_bindings=2), _objects(execute_async_v2=None)) \
        is TensorRTApi.BINDINGS


def test_tensorrt_api_neither():
    with pytest.raises(RuntimeError, match="neither named I/O tensors"):
        tensorrt_api(_objects(), _objects())
