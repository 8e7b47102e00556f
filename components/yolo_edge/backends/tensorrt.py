"""TensorRT backend: runs a serialized engine (.engine / .trt) on a CUDA GPU.

`tensorrt` and the CUDA binding (cuda-python or pycuda, whichever is installed) are imported only
when a model is loaded, so importing this module costs nothing on a machine without them. Device
buffers, page-locked host buffers and the CUDA stream are allocated once at load and reused.

An engine whose input has a dynamic batch dimension takes batches of 1 up to its optimisation
profile's largest batch (`ModelInfo.max_batch`): the buffers are sized for that batch at load, a
smaller batch uses their first rows, and the input shape is set again only when the batch size changes.

Both TensorRT API generations work, chosen by what the engine object offers: named I/O tensors
(TensorRT 8.5+ and 10+: `set_tensor_address` + `execute_async_v3`) or the older binding indices
(`execute_async_v2`).

Model facts (task, class names, stride, size) come from the metadata header Ultralytics writes in
front of its engines (4-byte little-endian length, that many bytes of JSON, then the engine), else
from a sidecar `<engine>.json` with the same keys (written by `yolo-edge export` for engines built
with trtexec), else from the configuration. The optional key `tensorrt_version` records which
TensorRT built the engine, so a version mismatch can be reported precisely.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import importlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from .base import (
    MAX_BATCH,
    Backend,
    BackendOptions,
    DeviceFrames,
    InputSize,
    ModelInfo,
    ModelLoadError,
    OptionError,
    checked_input_size,
    checked_precision,
    checked_task,
    options_for,
    precision_refusal,
)
from .metadata import model_task, numbered_names, parse_metadata

log = logging.getLogger(__name__)

BUILT_WITH_KEY = "tensorrt_version"
_HEADER_LENGTH_BYTES = 4


# ---------------------------------------------------------------------------------------------
# Engine file: optional Ultralytics metadata header, optional sidecar JSON
# ---------------------------------------------------------------------------------------------

def split_engine_file(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, engine bytes): strips the Ultralytics header when the file has one."""
    if len(data) > _HEADER_LENGTH_BYTES:
        length = int.from_bytes(data[:_HEADER_LENGTH_BYTES], byteorder="little", signed=True)
        if 0 < length <= len(data) - _HEADER_LENGTH_BYTES:
            # A serialized engine does not start with a plausible length followed by a JSON object.
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                header = json.loads(data[_HEADER_LENGTH_BYTES:_HEADER_LENGTH_BYTES + length].decode("utf-8"))
                if isinstance(header, dict):
                    return header, data[_HEADER_LENGTH_BYTES + length:]
    return {}, data


def sidecar_path(engine_path: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar metadata of an engine, {} when there is none."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(str(engine_path), f"its metadata file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(str(engine_path), f"its metadata file {path} must hold a JSON object, "
                                               f"not {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# CUDA: one tiny interface over cuda-python and pycuda
# ---------------------------------------------------------------------------------------------

class CudaUnavailable(RuntimeError):
    """No usable CUDA GPU (no driver, no device, or the device index does not exist)."""


class CudaRuntimeApi:
    """cuda-python's runtime bindings (`cuda.bindings.runtime`, formerly `cuda.cudart`)."""

    name = "cuda-python"

    def __init__(self, cudart: Any, device_index: int) -> None:
        self.rt = cudart
        self.device_index = device_index
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            reason = self._error_name(err) if int(err) != 0 else "0 devices"
            raise CudaUnavailable(f"no CUDA GPU is available (cudaGetDeviceCount: {reason})")
        if device_index >= count:
            raise CudaUnavailable(f"CUDA device {device_index} does not exist ({count} device(s) present)")
        self._host_allocations: dict[int, int] = {}  # id(array) -> pointer
        self._call(self.rt.cudaSetDevice, device_index)

    def _error_name(self, err: Any) -> str:
        with contextlib.suppress(Exception):
            _, text = self.rt.cudaGetErrorString(err)
            # an enum member in cuda-python's bindings, whose types vary by release: its name where it has one
            return f"{getattr(err, 'name', err)}: {text.decode() if isinstance(text, bytes) else text}"
        return str(err)

    def _call(self, function: Callable[..., tuple[Any, ...]], *args: Any) -> Any:
        """`function(*args)` of the bindings, which return (error, results...): the results, or raise."""
        result = function(*args)
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise RuntimeError(f"CUDA {function.__name__} failed: {self._error_name(err)}")
        return rest[0] if len(rest) == 1 else rest or None

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # The runtime binds a thread to device 0 unless told otherwise; infer may run on any thread.
        self._call(self.rt.cudaSetDevice, self.device_index)
        yield

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc, nbytes))

    def free(self, pointer: int) -> None:
        self._call(self.rt.cudaFree, pointer)

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array (fast, truly asynchronous copies)."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        pointer = int(self._call(self.rt.cudaMallocHost, nbytes))
        raw = (ctypes.c_uint8 * nbytes).from_address(pointer)
        array = np.ctypeslib.as_array(raw).view(dtype).reshape(shape)
        self._host_allocations[id(array)] = pointer
        return array

    def host_free(self, array: np.ndarray) -> None:
        pointer = self._host_allocations.pop(id(array), None)
        if pointer is not None:
            self._call(self.rt.cudaFreeHost, pointer)

    def copy_to_device_async(self, device_pointer: int, host: np.ndarray, stream: Any) -> None:
        self._call(self.rt.cudaMemcpyAsync, device_pointer, host.ctypes.data, host.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def copy_to_host_async(self, host: np.ndarray, device_pointer: int, stream: Any) -> None:
        self._call(self.rt.cudaMemcpyAsync, host.ctypes.data, device_pointer, host.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def stream_create(self) -> Any:
        return self._call(self.rt.cudaStreamCreate)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamSynchronize, stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call(self.rt.cudaStreamDestroy, stream)

    def close(self) -> None:
        pass


class PyCudaApi:
    """pycuda's driver API, on the device's primary context (the one TensorRT's runtime uses)."""

    name = "pycuda"

    def __init__(self, driver: Any, device_index: int) -> None:
        self.driver = driver
        try:
            driver.init()
            count = driver.Device.count()
        except Exception as exc:  # pycuda.driver.Error and its subclasses
            raise CudaUnavailable(f"no CUDA GPU is available (cuInit: {exc})") from exc
        if count == 0:
            raise CudaUnavailable("no CUDA GPU is available (0 devices)")
        if device_index >= count:
            raise CudaUnavailable(f"CUDA device {device_index} does not exist ({count} device(s) present)")
        self.context = driver.Device(device_index).retain_primary_context()

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        # A pycuda context is current per thread; push it for the calls of this block only.
        self.context.push()
        try:
            yield
        finally:
            self.driver.Context.pop()

    def malloc(self, nbytes: int) -> Any:
        return self.driver.mem_alloc(nbytes)  # a DeviceAllocation; int() of it is the address

    def free(self, pointer: Any) -> None:
        pointer.free()

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        array: np.ndarray = self.driver.pagelocked_empty(shape, dtype)
        return array

    def host_free(self, array: np.ndarray) -> None:
        # pycuda's pagelocked arrays keep their allocation (untyped, with a free()) as the array's base
        free = getattr(array.base, "free", None)
        if callable(free):
            free()

    def copy_to_device_async(self, device_pointer: Any, host: np.ndarray, stream: Any) -> None:
        self.driver.memcpy_htod_async(device_pointer, host, stream)

    def copy_to_host_async(self, host: np.ndarray, device_pointer: Any, stream: Any) -> None:
        self.driver.memcpy_dtoh_async(host, device_pointer, stream)

    def stream_create(self) -> Any:
        return self.driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda frees a stream with its Python object

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.context.detach()


CudaApi = Union[CudaRuntimeApi, PyCudaApi]


def open_cuda(path: Path, device_index: int) -> CudaApi:
    """cuda-python if installed (new module layout first), else pycuda."""
    for module_name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart = importlib.import_module(module_name)
        except ImportError:
            continue
        return _opened(path, CudaRuntimeApi, cudart, device_index)
    try:
        driver = importlib.import_module("pycuda.driver")
    except ImportError:
        raise ModelLoadError(str(path), "TensorRT needs cuda-python or pycuda for GPU memory and neither is "
                                        "installed: pip install cuda-python (matching your CUDA major "
                                        "version), or pycuda") from None
    return _opened(path, PyCudaApi, driver, device_index)


def _opened(path: Path, api: type[CudaRuntimeApi] | type[PyCudaApi], module: Any, device_index: int) -> CudaApi:
    try:
        return api(module, device_index)
    except CudaUnavailable as exc:
        raise ModelLoadError(str(path), f"{exc}. TensorRT engines run only on an NVIDIA GPU; on this "
                                        "machine use the .onnx model instead") from exc
    except RuntimeError as exc:
        raise ModelLoadError(str(path), f"CUDA could not be initialised ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# TensorRT: the two API generations behind one small adapter
# ---------------------------------------------------------------------------------------------

@dataclass
class IOTensor:
    """One engine input or output."""

    name: str
    index: int
    is_input: bool
    shape: tuple[int, ...]  # -1 for a dynamic dimension
    dtype: np.dtype
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # (min, opt, max)


class TensorRTApi(enum.Enum):
    """The two generations of TensorRT's execution API."""

    NAMED_TENSORS = "named tensors"  # TensorRT 8.5+ and 10+: set_tensor_address + execute_async_v3
    BINDINGS = "bindings"  # TensorRT up to 8.x: binding indices + execute_async_v2


def tensorrt_api(engine: Any, context: Any) -> TensorRTApi:
    """Which API generation an engine and its execution context offer, named tensors preferred.

    Read off the objects themselves with hasattr: TensorRT's Python bindings come with no types or
    protocols to check against, and the version number does not say it either (8.5 and 8.6 offer
    both generations, 10 only named tensors).
    """
    if hasattr(engine, "num_io_tensors") and hasattr(context, "execute_async_v3"):
        return TensorRTApi.NAMED_TENSORS
    if hasattr(engine, "num_bindings") and hasattr(context, "execute_async_v2"):
        return TensorRTApi.BINDINGS
    raise RuntimeError("this TensorRT offers neither named I/O tensors (execute_async_v3) nor bindings "
                       "(execute_async_v2)")


class TensorApi(Protocol):
    """One API generation behind the calls the backend makes."""

    generation: TensorRTApi

    def tensors(self, engine: Any) -> list[IOTensor]: ...

    def set_input_shape(self, context: Any, tensor: IOTensor, shape: tuple[int, ...]) -> bool: ...

    def resolved_shape(self, context: Any, tensor: IOTensor) -> tuple[int, ...]: ...

    def bind(self, context: Any, tensors: list[IOTensor], pointers: list[int]) -> None: ...

    def execute(self, context: Any, stream_handle: int) -> bool: ...


class NamedTensorApi:
    """TensorRT 8.5+ / 10+: tensors addressed by name, `execute_async_v3`."""

    generation = TensorRTApi.NAMED_TENSORS

    def __init__(self, trt: Any) -> None:
        self.trt = trt

    def tensors(self, engine: Any) -> list[IOTensor]:
        out = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            profile = _dims3(engine.get_tensor_profile_shape(name, 0)) if is_input and -1 in shape else None
            out.append(IOTensor(name, i, is_input, shape, _np_dtype(self.trt, engine.get_tensor_dtype(name)),
                                profile))
        return out

    def set_input_shape(self, context: Any, tensor: IOTensor, shape: tuple[int, ...]) -> bool:
        return bool(context.set_input_shape(tensor.name, shape))

    def resolved_shape(self, context: Any, tensor: IOTensor) -> tuple[int, ...]:
        return tuple(int(d) for d in context.get_tensor_shape(tensor.name))

    def bind(self, context: Any, tensors: list[IOTensor], pointers: list[int]) -> None:
        for tensor, pointer in zip(tensors, pointers):
            if context.set_tensor_address(tensor.name, pointer) is False:
                raise RuntimeError(f"TensorRT refused the buffer address for tensor {tensor.name!r}")

    def execute(self, context: Any, stream_handle: int) -> bool:
        return bool(context.execute_async_v3(stream_handle))


class BindingApi:
    """TensorRT up to 8.x: tensors addressed by binding index, `execute_async_v2`."""

    generation = TensorRTApi.BINDINGS

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.pointers: list[int] = []

    def tensors(self, engine: Any) -> list[IOTensor]:
        out = []
        for i in range(engine.num_bindings):
            is_input = bool(engine.binding_is_input(i))
            shape = tuple(int(d) for d in engine.get_binding_shape(i))
            profile = _dims3(engine.get_profile_shape(0, i)) if is_input and -1 in shape else None
            out.append(IOTensor(engine.get_binding_name(i), i, is_input, shape,
                                _np_dtype(self.trt, engine.get_binding_dtype(i)), profile))
        return out

    def set_input_shape(self, context: Any, tensor: IOTensor, shape: tuple[int, ...]) -> bool:
        return bool(context.set_binding_shape(tensor.index, shape))

    def resolved_shape(self, context: Any, tensor: IOTensor) -> tuple[int, ...]:
        return tuple(int(d) for d in context.get_binding_shape(tensor.index))

    def bind(self, context: Any, tensors: list[IOTensor], pointers: list[int]) -> None:
        by_index = dict(zip((t.index for t in tensors), pointers))
        self.pointers = [by_index[i] for i in range(len(tensors))]

    def execute(self, context: Any, stream_handle: int) -> bool:
        return bool(context.execute_async_v2(bindings=self.pointers, stream_handle=stream_handle))


def tensor_api(trt: Any, engine: Any, context: Any) -> TensorApi:
    """The adapter for the API generation `engine` and `context` offer."""
    if tensorrt_api(engine, context) is TensorRTApi.NAMED_TENSORS:
        return NamedTensorApi(trt)
    return BindingApi(trt)


def _dims3(shapes: Any) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    low, opt, high = (tuple(int(d) for d in s) for s in shapes)
    return low, opt, high


def _np_dtype(trt: Any, trt_dtype: Any) -> np.dtype:
    dtype: np.dtype = np.dtype(trt.nptype(trt_dtype))
    return dtype


class RecordingLogger(Protocol):
    """A TensorRT logger (a trt.ILogger) that keeps the error messages it was given."""

    errors: list[str]


def make_logger(trt: Any) -> RecordingLogger:
    """A TensorRT logger that keeps error messages (to explain a failed load) and forwards warnings."""

    class ErrorKeepingLogger(trt.ILogger):  # trt.ILogger is untyped (Any)
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)

    return ErrorKeepingLogger()


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------

def _import_tensorrt(path: Path) -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise ModelLoadError(str(path), f"the TensorRT Python package is not installed ({exc}). On a Jetson it "
                                        "comes with JetPack (sudo apt install python3-libnvinfer; a virtualenv "
                                        "needs --system-site-packages); elsewhere pip install tensorrt. "
                                        "Without TensorRT, use the .onnx model") from exc


@dataclass(frozen=True)
class TensorRTOptions:
    """What the TensorRT backend takes from the configuration. No `half` or `threads`: an engine runs
    in the precision it was built with, on the GPU."""

    device_index: int = 0  # the CUDA device
    input_size: InputSize = (640, 640)  # (height, width) for an engine with a dynamic input shape
    task: str = "auto"
    precision: str = "auto"  # auto, or the precision the engine's metadata says it was built in

    @classmethod
    def from_request(cls, request: BackendOptions) -> TensorRTOptions:
        """The TensorRT part of `request`, checked; raises OptionError naming the config key and value."""
        return cls(device_index=cuda_device_index(request.device),
                   input_size=checked_input_size(request.input_size), task=checked_task(request.task),
                   precision=checked_precision(request.precision))


def engine_precision(raw_meta: dict[str, Any]) -> str:
    """The precision Ultralytics' metadata (header or sidecar) says the engine was built in: int8, fp16,
    fp32 (`half` false), or 'engine' when the metadata does not say."""
    flags = {key: str(raw_meta[key]).strip().lower() in ("true", "1") for key in ("int8", "half") if key in raw_meta}
    if flags.get("int8"):
        return "int8"
    if flags.get("half"):
        return "fp16"
    return "fp32" if "half" in flags else "engine"


def resolve_engine_precision(configured: str, built: str) -> str:
    """`built` when `configured` is auto or names it; else OptionError: an engine runs as it was built."""
    if configured in ("auto", built):
        return built
    said = (f"the engine was built in {built}" if built != "engine"
            else "the engine's metadata does not say its precision")
    raise OptionError(precision_refusal(configured, f"{said} and runs only so; use auto, or rebuild the engine "
                                        "(yolo-edge export --format engine --half for fp16)"))


def cuda_device_index(device: str) -> int:
    """auto, cuda, gpu -> 0; cuda:N or N -> N; anything else (the CPU) is an OptionError."""
    device = device.strip().lower()
    if device in ("auto", "cuda", "gpu", "0"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if device.isdigit():
        return int(device)
    raise OptionError(f"config key 'device' is {device!r} but TensorRT engines run only on a CUDA GPU; use "
                      "'auto', 'cuda' or 'cuda:N' (or an .onnx model for the CPU)")


class TensorRTBackend:
    """A deserialized engine with its execution context, buffers and stream."""

    # The engine reads host-prepared tensors: there is no device frame path.
    device_frames: DeviceFrames | None = None

    def __init__(self, path: Path, options: TensorRTOptions) -> None:
        self.path = path
        self._device_buffers: list[Any] = []
        self._host_buffers: list[np.ndarray] = []
        self._stream: Any = None
        self.context: Any = None
        self.engine: Any = None
        self.runtime: Any = None
        self.logger: RecordingLogger | None = None
        self.trt = _import_tensorrt(path)
        cuda = open_cuda(path, options.device_index)
        self.cuda: CudaApi | None = cuda
        try:
            with cuda.activate():
                self._load(path, options, cuda)
        except BaseException:
            self.close()
            raise

    def _load(self, path: Path, options: TensorRTOptions, cuda: CudaApi) -> None:
        trt = self.trt
        try:
            header, engine_bytes = split_engine_file(path.read_bytes())
        except OSError as exc:
            raise ModelLoadError(str(path), f"cannot read the file ({exc})") from exc
        raw_meta = {**read_sidecar(path), **header}  # the engine's own header wins
        meta = parse_metadata(raw_meta)
        try:
            self.precision = resolve_engine_precision(options.precision, engine_precision(raw_meta))
        except OptionError as exc:
            raise ModelLoadError(str(path), str(exc)) from exc
        self.logger = logger = make_logger(trt)
        self.runtime = trt.Runtime(logger)
        if raw_meta.get("dla") is not None:
            self.runtime.DLA_core = int(raw_meta["dla"])
        try:
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        except Exception as exc:  # TensorRT 10 may raise instead of returning None
            logger.errors.append(str(exc))
            self.engine = None
        if self.engine is None:
            raise ModelLoadError(str(path), self._deserialize_failure(raw_meta))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ModelLoadError(str(path), "TensorRT could not create an execution context "
                                            f"(out of GPU memory?){self._last_error()}")
        self.api = tensor_api(trt, self.engine, self.context)
        tensors = self.api.tensors(self.engine)
        inputs = [t for t in tensors if t.is_input]
        self.outputs = [t for t in tensors if not t.is_input]
        if len(inputs) != 1 or not self.outputs:
            raise ModelLoadError(str(path), f"expected one input and at least one output, the engine has "
                                            f"{len(inputs)} input(s) and {len(self.outputs)} output(s)")
        self.input = inputs[0]
        self.input_dims = self.input.shape  # as the engine declares them: -1 for a dynamic dimension
        if self.input.dtype not in (np.float32, np.float16):
            raise ModelLoadError(str(path), f"input {self.input.name!r} is {self.input.dtype}; only float32 and "
                                            "float16 inputs are supported")
        shape_to_set = -1 in self.input.shape
        max_batch = batch_limit(self.input)
        if shape_to_set:
            self._set_dynamic_input_shape(path, options.input_size)
        for tensor in tensors:
            tensor.shape = self._resolved(path, tensor) if shape_to_set else tensor.shape
        _, _, height, width = self._check_input_layout(path)
        self._batch = 1  # the batch size the context's input shape is set for
        # Buffers hold the largest batch; a smaller one uses their first rows.
        capacity = self._shapes_for_batch(path, tensors, max_batch) if max_batch > 1 else [t.shape for t in tensors]
        self._output_shapes = {1: [t.shape for t in self.outputs]}  # batch size -> output shapes

        self._stream = cuda.stream_create()
        self._stream_handle = cuda.stream_handle(self._stream)
        pointers = []
        for tensor, shape in zip(tensors, capacity):
            nbytes = int(np.prod(shape)) * tensor.dtype.itemsize
            buffer = cuda.malloc(nbytes)
            self._device_buffers.append(buffer)
            pointers.append(buffer)
        self.api.bind(self.context, tensors, [int(p) for p in pointers])
        self._input_device = pointers[tensors.index(self.input)]
        self._output_device = [pointers[tensors.index(t)] for t in self.outputs]
        self._input_host = self._host(cuda, capacity[tensors.index(self.input)], self.input.dtype)
        self._output_host = [self._host(cuda, capacity[tensors.index(t)], t.dtype) for t in self.outputs]

        output_shapes = [t.shape for t in self.outputs]
        task = model_task(str(path), meta.get("task") or None, options.task, output_shapes)
        self.info = ModelInfo(
            name=path.name, format="tensorrt", runtime=f"tensorrt {trt.__version__}",
            device=f"cuda:{options.device_index}", task=task, input_shape=(height, width),
            names=meta.get("names") or numbered_names(output_shapes, task), stride=int(meta.get("stride", 32)),
            input_dtype=str(self.input.dtype), dynamic=-1 in self.input_dims[2:], max_batch=max_batch,
            precision=self.precision)
        log.info("loaded TensorRT engine %s (TensorRT %s, %s API, CUDA via %s, input %s %s, batches of 1 to %d)",
                 path.name, trt.__version__, self.api.generation.value, cuda.name, self.input.shape,
                 self.input.dtype, max_batch)

    def _host(self, cuda: CudaApi, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        array = cuda.host_empty(shape, dtype)
        self._host_buffers.append(array)
        return array

    def _set_dynamic_input_shape(self, path: Path, input_size: tuple[int, int]) -> None:
        shape = self.input.shape
        if len(shape) != 4:
            raise ModelLoadError(str(path), f"input {self.input.name!r} has shape {shape}, expected (N, 3, H, W)")
        wanted = (1 if shape[0] == -1 else shape[0], 3 if shape[1] == -1 else shape[1],
                  input_size[0] if shape[2] == -1 else shape[2], input_size[1] if shape[3] == -1 else shape[3])
        if self.input.profile is not None:
            low, _, high = self.input.profile
            if wanted[0] < low[0]:
                raise ModelLoadError(str(path), f"the engine's optimisation profile starts at batch {low[0]}, but "
                                                "a single frame is inferred whenever one camera's frame is "
                                                "ready alone; rebuild it with a minimum batch of 1 (--minShapes="
                                                f"{self.input.name}:1x...)")
            if not all(lo <= w <= hi for lo, w, hi in zip(low, wanted, high)):
                raise ModelLoadError(str(path), f"config keys MODEL_HEIGHT/MODEL_WIDTH ask for input {wanted[2]}x"
                                                f"{wanted[3]}, outside the engine's optimisation profile "
                                                f"{low[2]}x{low[3]} .. {high[2]}x{high[3]} (batch {low[0]}.."
                                                f"{high[0]}); pick a size in that range or rebuild the engine")
        if not self.api.set_input_shape(self.context, self.input, wanted):
            raise ModelLoadError(str(path), f"TensorRT refused input shape {wanted}{self._last_error()}")
        self.input.shape = wanted

    def _resolved(self, path: Path, tensor: IOTensor) -> tuple[int, ...]:
        """`tensor`'s shape for the input shape the context is set to."""
        shape = self.api.resolved_shape(self.context, tensor)
        if -1 in shape or len(shape) == 0:
            raise ModelLoadError(str(path), f"tensor {tensor.name!r} has unresolved shape {shape}; "
                                            "data-dependent output shapes are not supported")
        return shape

    def _shapes_for_batch(self, path: Path, tensors: list[IOTensor], batch: int) -> list[tuple[int, ...]]:
        """Every tensor's shape for a batch of `batch` frames; the context is left at batch 1."""
        shapes: list[tuple[int, ...]] = []
        for size in (batch, 1):
            wanted = (size, *self.input.shape[1:])
            if not self.api.set_input_shape(self.context, self.input, wanted):
                raise ModelLoadError(str(path), f"TensorRT refused input shape {wanted}{self._last_error()}")
            if size == batch:
                shapes = [wanted if t is self.input else self._resolved(path, t) for t in tensors]
        return shapes

    def _check_input_layout(self, path: Path) -> tuple[int, int, int, int]:
        shape = self.input.shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelLoadError(str(path), f"input {self.input.name!r} has shape {shape}, expected (1, 3, H, W)")
        if shape[0] != 1:
            raise ModelLoadError(str(path), f"the engine takes only batches of exactly {shape[0]}, but the frames "
                                            "inferred together vary from 1 to the number of cameras; build it "
                                            "with a dynamic batch (yolo-edge export --dynamic --batch N and the "
                                            "trtexec line it prints) or with --batch 1")
        return shape

    def _last_error(self) -> str:
        errors = self.logger.errors if self.logger is not None else []
        return f": {errors[-1]}" if errors else ""

    def _deserialize_failure(self, raw_meta: dict[str, Any]) -> str:
        installed = self.trt.__version__
        built = raw_meta.get(BUILT_WITH_KEY)
        origin = (f"the engine was built with TensorRT {built} and this device has TensorRT {installed}"
                  if built else f"this device has TensorRT {installed}; the engine was most likely built with "
                  "another TensorRT version or for another GPU")
        if built and str(built) == str(installed):
            origin = (f"the engine was built with this TensorRT version ({installed}), so it is damaged or was "
                      "built for another GPU")
        rebuild = (f"rebuild the engine on this device: yolo-edge export MODEL.pt --format engine --output "
                   f"{self.path.name}, or trtexec --onnx=MODEL.onnx --saveEngine={self.path.name} --fp16")
        return f"TensorRT could not deserialize the engine{self._last_error()}. An engine runs only with the " \
               f"TensorRT version and GPU it was built for: {origin}. To fix it, {rebuild}"

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        batch = self._checked_batch(tensor)
        cuda = self.cuda
        if cuda is None or self.context is None:
            raise RuntimeError(f"TensorRT backend for {self.path.name} is closed")
        with cuda.activate():
            output_shapes = self._use_batch(batch)
            host_input = self._input_host[:batch]
            np.copyto(host_input, tensor, casting="same_kind")  # float32 -> float16 when the engine wants it
            cuda.copy_to_device_async(self._input_device, host_input, self._stream)
            if not self.api.execute(self.context, self._stream_handle):
                cuda.stream_sync(self._stream)
                raise RuntimeError(f"TensorRT execution failed{self._last_error()}")
            host_outputs = [_leading(host, shape) for host, shape in zip(self._output_host, output_shapes)]
            for host, device in zip(host_outputs, self._output_device):
                cuda.copy_to_host_async(host, device, self._stream)
            cuda.stream_sync(self._stream)
        # Fresh arrays: the staging buffers are overwritten by the next call.
        return [host.astype(np.float32) if host.dtype == np.float16 else host.copy() for host in host_outputs]

    def _checked_batch(self, tensor: np.ndarray) -> int:
        """The batch size of `tensor`; raises ValueError unless (N, 3, H, W) of the engine's input with
        1 <= N <= max_batch."""
        shape = tuple(tensor.shape)
        batch = int(shape[0]) if shape else 0
        if shape[1:] != self.input.shape[1:] or not 1 <= batch <= self.info.max_batch:
            takes = f" (batches of 1 to {self.info.max_batch})" if self.info.max_batch > 1 else ""
            raise ValueError(f"input tensor shape {shape} does not match the engine input {self.input.name!r} "
                             f"{self.input.shape}{takes}")
        return batch

    def _use_batch(self, batch: int) -> list[tuple[int, ...]]:
        """The context set for `batch` frames (TensorRT keeps the input shape between calls, so only a
        changed batch size is set); the output shapes for it."""
        if batch != self._batch:
            wanted = (batch, *self.input.shape[1:])
            if not self.api.set_input_shape(self.context, self.input, wanted):
                raise RuntimeError(f"TensorRT refused input shape {wanted}{self._last_error()}")
            self._batch = batch
        shapes = self._output_shapes.get(batch)
        if shapes is None:
            shapes = self._output_shapes[batch] = [self.api.resolved_shape(self.context, t) for t in self.outputs]
        return shapes

    def disable_device_frames(self) -> None:
        pass  # there is no device frame path to leave

    def close(self) -> None:
        cuda, self.cuda = self.cuda, None
        if cuda is None:
            return
        with contextlib.suppress(Exception), cuda.activate():
            releases: list[tuple[Callable[[Any], None], Any]] = [(cuda.free, b) for b in self._device_buffers]
            releases += [(cuda.host_free, a) for a in self._host_buffers]
            if self._stream is not None:
                releases = [(cuda.stream_sync, self._stream), *releases, (cuda.stream_destroy, self._stream)]
            for release, item in releases:
                try:
                    release(item)
                except Exception as exc:  # keep releasing the rest
                    log.warning("TensorRT backend: %s failed while closing: %s", release.__name__, exc)
        self._device_buffers, self._host_buffers, self._stream = [], [], None
        # Context before engine before runtime, while nothing else holds them.
        self.context = None
        self.engine = None
        self.runtime = None
        cuda.close()


def batch_limit(model_input: IOTensor) -> int:
    """The most frames an engine takes at once: its optimisation profile's largest batch (at most
    MAX_BATCH) when the input's batch dimension is dynamic and that profile goes above 1; else 1."""
    if model_input.shape[:1] != (-1,) or model_input.profile is None:
        return 1
    _, _, high = model_input.profile
    return max(1, min(int(high[0]), MAX_BATCH))


def _leading(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first elements of a (larger) contiguous staging buffer, viewed as `shape`."""
    return buffer.reshape(-1)[:int(np.prod(shape))].reshape(shape)


def load(path: Path, request: BackendOptions) -> Backend:
    return TensorRTBackend(Path(path), options_for(path, TensorRTOptions.from_request, request))
