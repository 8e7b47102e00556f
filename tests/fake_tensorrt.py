"""Fake `tensorrt` (both API generations) and fake CUDA bindings (cuda-python and pycuda styles).

There is no GPU here, so these stand-ins check what the TensorRT backend does with them and compute
real results:

- `FakeGpu` is the device: allocations (device memory is a bytearray per allocation, host memory
  is real page-locked-style memory at real addresses), streams whose operations run only when the
  stream is synchronised, and a log of every call.
- A copy or an engine execution checks that each address is one the backend allocated and that the
  buffer holds at least shape x dtype size (a buffer sized for the largest batch serves smaller ones,
  as on a real GPU); the log records the bytes each copy moved. Host destinations are poisoned (0xFF bytes) when a
  device-to-host copy is queued, so results read before the stream is synchronised are NaN.
- A fake engine is a small JSON spec naming a real ONNX model: executing it reads the input bytes from
  "device" memory, runs the model with ONNX Runtime on the CPU and writes the real outputs back, in the
  engine's dtypes (float16 I/O included). A dynamic engine has an optimisation profile (min, opt, max
  input shapes, batch included) and takes any input shape within it; its declared input shape may fix
  some dimensions (e.g. (-1, 3, 320, 320): dynamic batch only), which then must match.

`install(monkeypatch, ...)` puts the fakes into sys.modules (hiding any real cuda/pycuda/tensorrt).
"""

from __future__ import annotations

import ast
import ctypes
import enum
import itertools
import json
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ENGINE_MAGIC = b"FAKETRT\n"


class FakeCudaError(AssertionError):
    """The backend used the fake GPU wrongly (an address it did not allocate, a wrong size, ...)."""


# ---------------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------------

class FakeStream:
    def __init__(self, gpu: FakeGpu, handle: int) -> None:
        self.gpu = gpu
        self.handle = handle
        self.pending: list[Callable[[], None]] = []
        self.destroyed = False

    def enqueue(self, operation: Callable[[], None]) -> None:
        if self.destroyed:
            raise FakeCudaError(f"work queued on destroyed stream {self.handle:#x}")
        self.pending.append(operation)

    def synchronize(self) -> None:
        self.gpu.log.append(("sync", self.handle))
        operations, self.pending = self.pending, []
        for operation in operations:
            operation()


class FakeGpu:
    """Memory, streams and a call log shared by the fake CUDA and TensorRT modules."""

    def __init__(self, device_count: int = 1) -> None:
        self.device_count = device_count
        self.device_memory: dict[int, bytearray] = {}
        self.host_memory: dict[int, Any] = {}  # address -> ctypes buffer (kept alive here)
        self.streams: dict[int, FakeStream] = {}
        self.log: list[tuple] = []
        self.freed_device: list[int] = []
        self.freed_host: list[int] = []
        self._addresses = itertools.count(0x7A00_0000_0000, 0x100_0000)
        self._handles = itertools.count(0x5000, 0x10)

    # device memory
    def malloc(self, nbytes: int) -> int:
        if nbytes <= 0:
            raise FakeCudaError(f"cudaMalloc of {nbytes} bytes")
        address = next(self._addresses)
        self.device_memory[address] = bytearray(b"\xAB" * nbytes)
        self.log.append(("malloc", address, nbytes))
        return address

    def free(self, address: int) -> None:
        if address not in self.device_memory:
            raise FakeCudaError(f"free of {address:#x}, which is not an allocated device buffer")
        del self.device_memory[address]
        self.freed_device.append(address)

    def device_buffer(self, address: int, nbytes: int, what: str) -> bytearray:
        memory = self.device_memory.get(int(address))
        if memory is None:
            raise FakeCudaError(f"{what}: {int(address):#x} is not an allocated device buffer")
        if len(memory) < nbytes:
            raise FakeCudaError(f"{what}: device buffer {int(address):#x} holds {len(memory)} bytes, "
                                f"{nbytes} needed")
        return memory

    # page-locked host memory
    def malloc_host(self, nbytes: int) -> int:
        buffer = ctypes.create_string_buffer(nbytes)
        address = ctypes.addressof(buffer)
        self.host_memory[address] = buffer
        return address

    def free_host(self, address: int) -> None:
        if address not in self.host_memory:
            raise FakeCudaError(f"cudaFreeHost of {address:#x}, which cudaMallocHost did not return")
        del self.host_memory[address]
        self.freed_host.append(address)

    def check_host(self, address: int, nbytes: int, what: str) -> None:
        buffer = self.host_memory.get(int(address))
        if buffer is None:
            raise FakeCudaError(f"{what}: host address {int(address):#x} is not page-locked memory from this GPU")
        if ctypes.sizeof(buffer) < nbytes:
            raise FakeCudaError(f"{what}: {nbytes} bytes overrun a {ctypes.sizeof(buffer)}-byte host buffer")

    # streams
    def create_stream(self) -> FakeStream:
        stream = FakeStream(self, next(self._handles))
        self.streams[stream.handle] = stream
        return stream

    def stream(self, handle: int) -> FakeStream:
        stream = self.streams.get(int(handle))
        if stream is None:
            raise FakeCudaError(f"stream handle {int(handle)!r} was not created on this GPU")
        return stream

    def copy_to_device(self, stream: FakeStream, device_address: int, read_host: Callable[[], bytes],
                       nbytes: int) -> None:
        memory = self.device_buffer(device_address, nbytes, "host-to-device copy")
        self.log.append(("h2d", int(device_address), nbytes))

        def run() -> None:
            data = read_host()
            if len(data) != nbytes:
                raise FakeCudaError(f"host-to-device copy read {len(data)} bytes, {nbytes} were queued")
            memory[:nbytes] = data

        stream.enqueue(run)

    def copy_to_host(self, stream: FakeStream, device_address: int, host_address: int, nbytes: int) -> None:
        memory = self.device_buffer(device_address, nbytes, "device-to-host copy")
        self.log.append(("d2h", int(device_address), nbytes))
        ctypes.memset(host_address, 0xFF, nbytes)  # undefined until the stream is synchronised

        def run() -> None:
            ctypes.memmove(host_address, bytes(memory[:nbytes]), nbytes)

        stream.enqueue(run)

    def count(self, event: str) -> int:
        return sum(1 for entry in self.log if entry[0] == event)


# ---------------------------------------------------------------------------------------------
# cuda-python style: cuda.bindings.runtime (new layout) or cuda.cudart (old layout)
# ---------------------------------------------------------------------------------------------

class cudaError_t(enum.IntEnum):  # noqa: N801 - the real binding's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStream_t:  # noqa: N801
    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream

    def __int__(self) -> int:
        return self.stream.handle


def make_cudart(gpu: FakeGpu, name: str = "cuda.bindings.runtime") -> types.ModuleType:
    rt = types.ModuleType(name)
    ok = (cudaError_t.cudaSuccess,)
    rt.cudaError_t = cudaError_t
    rt.cudaMemcpyKind = cudaMemcpyKind
    rt.cudaStream_t = cudaStream_t
    current = threading.local()

    def cudaGetDeviceCount():  # noqa: N802
        if gpu.device_count == 0:
            return cudaError_t.cudaErrorNoDevice, 0
        return cudaError_t.cudaSuccess, gpu.device_count

    def cudaSetDevice(index):  # noqa: N802
        if not 0 <= index < gpu.device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        current.device = index
        return ok

    def cudaGetErrorString(err):  # noqa: N802
        return cudaError_t.cudaSuccess, f"fake error text for {cudaError_t(err).name}".encode()

    def cudaMalloc(nbytes):  # noqa: N802
        return cudaError_t.cudaSuccess, gpu.malloc(nbytes)

    def cudaFree(address):  # noqa: N802
        gpu.free(address)
        return ok

    def cudaMallocHost(nbytes):  # noqa: N802
        return cudaError_t.cudaSuccess, gpu.malloc_host(nbytes)

    def cudaFreeHost(address):  # noqa: N802
        gpu.free_host(address)
        return ok

    def cudaStreamCreate():  # noqa: N802
        return cudaError_t.cudaSuccess, cudaStream_t(gpu.create_stream())

    def cudaStreamDestroy(stream):  # noqa: N802
        _stream(stream).destroyed = True
        return ok

    def cudaStreamSynchronize(stream):  # noqa: N802
        _stream(stream).synchronize()
        return ok

    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        target = _stream(stream)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            gpu.check_host(src, count, "cudaMemcpyAsync host-to-device source")
            gpu.copy_to_device(target, dst, lambda: ctypes.string_at(src, count), count)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            gpu.check_host(dst, count, "cudaMemcpyAsync device-to-host destination")
            gpu.copy_to_host(target, src, dst, count)
        else:
            raise FakeCudaError(f"unexpected cudaMemcpyKind {kind!r}")
        return ok

    def _stream(stream: Any) -> FakeStream:
        if not isinstance(stream, cudaStream_t):
            raise FakeCudaError(f"expected a cudaStream_t, got {stream!r}")
        return gpu.stream(int(stream))

    for function in (cudaGetDeviceCount, cudaSetDevice, cudaGetErrorString, cudaMalloc, cudaFree, cudaMallocHost,
                     cudaFreeHost, cudaStreamCreate, cudaStreamDestroy, cudaStreamSynchronize, cudaMemcpyAsync):
        setattr(rt, function.__name__, function)
    return rt


# ---------------------------------------------------------------------------------------------
# pycuda style: pycuda.driver
# ---------------------------------------------------------------------------------------------

def make_pycuda_driver(gpu: FakeGpu) -> types.ModuleType:
    driver = types.ModuleType("pycuda.driver")
    local = threading.local()

    class Error(Exception):
        pass

    class PyCudaRuntimeError(Error, RuntimeError):
        pass

    def stack() -> list:
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    def require_context(what: str) -> None:
        if not stack():
            raise FakeCudaError(f"pycuda {what} called with no CUDA context current on thread "
                                f"{threading.current_thread().name}")

    class Context:
        def __init__(self, index: int) -> None:
            self.index = index
            self.detached = False

        def push(self) -> None:
            if self.detached:
                raise FakeCudaError("push of a detached context")
            stack().append(self)

        @staticmethod
        def pop() -> None:
            if not stack():
                raise FakeCudaError("Context.pop with no context current")
            stack().pop()

        def detach(self) -> None:
            self.detached = True

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < gpu.device_count:
                raise PyCudaRuntimeError(f"cuDeviceGet failed: invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count() -> int:
            return gpu.device_count

        def retain_primary_context(self) -> Context:
            return Context(self.index)

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = gpu.malloc(nbytes)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            gpu.free(self.address)

    class Stream:
        def __init__(self) -> None:
            require_context("Stream()")
            self.fake = gpu.create_stream()
            self.handle = self.fake.handle

        def synchronize(self) -> None:
            require_context("Stream.synchronize")
            self.fake.synchronize()

    def init() -> None:
        if gpu.device_count == 0:
            raise PyCudaRuntimeError("cuInit failed: no CUDA-capable device is detected")

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        require_context("mem_alloc")
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        require_context("pagelocked_empty")
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        address = gpu.malloc_host(nbytes)
        raw = (ctypes.c_uint8 * nbytes).from_address(address)
        return np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)

    def memcpy_htod_async(dest, src: np.ndarray, stream: Stream) -> None:
        require_context("memcpy_htod_async")
        gpu.check_host(src.ctypes.data, src.nbytes, "memcpy_htod_async source")
        gpu.copy_to_device(stream.fake, int(dest), src.tobytes, src.nbytes)

    def memcpy_dtoh_async(dest: np.ndarray, src, stream: Stream) -> None:
        require_context("memcpy_dtoh_async")
        gpu.check_host(dest.ctypes.data, dest.nbytes, "memcpy_dtoh_async destination")
        gpu.copy_to_host(stream.fake, int(src), dest.ctypes.data, dest.nbytes)

    driver.Error = Error
    driver.RuntimeError = PyCudaRuntimeError
    driver.Context = Context
    driver.Device = Device
    driver.DeviceAllocation = DeviceAllocation
    driver.Stream = Stream
    driver.init = init
    driver.mem_alloc = mem_alloc
    driver.pagelocked_empty = pagelocked_empty
    driver.memcpy_htod_async = memcpy_htod_async
    driver.memcpy_dtoh_async = memcpy_dtoh_async
    driver.context_stack = stack
    return driver


# ---------------------------------------------------------------------------------------------
# tensorrt
# ---------------------------------------------------------------------------------------------

class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4


_NP_TYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
             DataType.INT32: np.int32, DataType.BOOL: np.bool_}
_TRT_TYPES = {"float32": DataType.FLOAT, "float16": DataType.HALF}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        self.fake_initialised = True

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = tuple(Severity)

    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.messages: list[str] = []

    def log(self, severity: Severity, msg: str) -> None:
        self.messages.append(msg)


class FakeEngine:
    """What both API generations share: the I/O description and the real model behind it."""

    def __init__(self, spec: dict, gpu: FakeGpu, trt: types.ModuleType) -> None:
        self.spec = spec
        self.gpu = gpu
        self.trt = trt
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(spec["onnx"], options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.names = [self.input_name, *self.output_names]
        self.dtypes = {self.input_name: spec.get("input_dtype", "float32")}
        self.dtypes.update({n: spec.get("output_dtype", "float32") for n in self.output_names})
        declared = spec.get("input_shape")
        if spec.get("dynamic"):
            self.shapes = {self.input_name: tuple(declared or (-1, 3, -1, -1))}
            self.profile = tuple(tuple(s) for s in spec["profile"])
            self.shapes.update({o.name: tuple(d if isinstance(d, int) else -1 for d in o.shape)
                                for o in self.session.get_outputs()})
        elif declared:  # a fixed shape other than the ONNX model's own (a dynamic ONNX model's at one size)
            self.shapes = {self.input_name: tuple(declared)}
            self.profile = None
            self.shapes.update(self.output_shapes_for(tuple(declared)))
        else:
            self.shapes = {self.input_name: tuple(model_input.shape)}
            self.profile = None
            self.shapes.update({o.name: tuple(o.shape) for o in self.session.get_outputs()})
        self.contexts: list[FakeContext] = []

    def is_input(self, name: str) -> bool:
        return name == self.input_name

    def output_shapes_for(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """What the model's outputs measure for an input of `input_shape` (it is run once to see)."""
        probe = self.session.run(None, {self.input_name: np.zeros(input_shape, np.float32)})
        return {name: tuple(out.shape) for name, out in zip(self.output_names, probe)}

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """An input shape within the optimisation profile that keeps every declared (fixed) dimension."""
        if self.profile is None:
            return shape == self.shapes[self.input_name]
        low, _, high = self.profile
        declared = self.shapes[self.input_name]
        return (len(shape) == 4 and all(lo <= d <= hi for lo, d, hi in zip(low, shape, high))
                and all(want in (-1, d) for want, d in zip(declared, shape)))

    def trt_dtype(self, name: str) -> DataType:
        return _TRT_TYPES[self.dtypes[name]]

    def _new_context(self) -> FakeContext:
        context = FakeContext(self)
        self.contexts.append(context)
        return context


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes = dict(engine.shapes)
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self.input_shapes_set: list[tuple[int, ...]] = []

    def _set_input_shape(self, shape: tuple[int, ...]) -> bool:
        engine = self.engine
        shape = tuple(int(d) for d in shape)
        self.input_shapes_set.append(shape)
        if not engine.accepts(shape):
            return False
        if engine.profile is not None:
            self.shapes[engine.input_name] = shape
            self.shapes.update(engine.output_shapes_for(shape))
        return True

    def _execute(self, addresses: dict[str, int], stream_handle: int) -> bool:
        engine, gpu = self.engine, self.engine.gpu
        if not isinstance(stream_handle, int):
            raise FakeCudaError(f"stream handle must be an int, got {type(stream_handle).__name__}")
        stream = gpu.stream(stream_handle)
        buffers, sizes = {}, {}
        for name in engine.names:
            shape = self.shapes[name]
            if -1 in shape:
                raise FakeCudaError(f"execute with unresolved shape {shape} for {name!r}")
            if name not in addresses:
                raise FakeCudaError(f"execute without an address for tensor {name!r}")
            sizes[name] = int(np.prod(shape)) * np.dtype(engine.dtypes[name]).itemsize
            buffers[name] = gpu.device_buffer(addresses[name], sizes[name], f"engine tensor {name!r}")
        self.executions += 1
        input_shape = self.shapes[engine.input_name]
        gpu.log.append(("execute", stream_handle, input_shape))

        def run() -> None:
            name = engine.input_name
            data = bytes(buffers[name][:sizes[name]])
            tensor = np.frombuffer(data, engine.dtypes[name]).reshape(input_shape)
            outputs = engine.session.run(engine.output_names, {name: tensor.astype(np.float32)})
            for out_name, value in zip(engine.output_names, outputs):
                written = value.astype(engine.dtypes[out_name]).tobytes()
                if len(written) != sizes[out_name]:
                    raise FakeCudaError(f"output {out_name!r} has {len(written)} bytes, its shape "
                                        f"{self.shapes[out_name]} says {sizes[out_name]}")
                buffers[out_name][:len(written)] = written

        stream.enqueue(run)
        return True


class FakeEngine8(FakeEngine):
    """TensorRT <= 8.x: binding indices."""

    @property
    def num_bindings(self) -> int:
        return len(self.names)

    def get_binding_name(self, index: int) -> str:
        return self.names[index]

    def binding_is_input(self, index: int) -> bool:
        return self.is_input(self.names[index])

    def get_binding_shape(self, index: int) -> tuple[int, ...]:
        return self.shapes[self.names[index]]

    def get_binding_dtype(self, index: int) -> DataType:
        return self.trt_dtype(self.names[index])

    def get_profile_shape(self, profile_index: int, index: int) -> list[tuple[int, ...]]:
        assert profile_index == 0 and self.is_input(self.names[index]) and self.profile is not None
        return list(self.profile)

    def create_execution_context(self) -> FakeContext8:
        context = FakeContext8(self)
        self.contexts.append(context)
        return context


class FakeContext8(FakeContext):
    def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
        if not self.engine.is_input(self.engine.names[index]):
            raise FakeCudaError(f"set_binding_shape on output binding {index}")
        return self._set_input_shape(shape)

    def get_binding_shape(self, index: int) -> tuple[int, ...]:
        return self.shapes[self.engine.names[index]]

    def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
        if len(bindings) != len(self.engine.names):
            raise FakeCudaError(f"execute_async_v2 got {len(bindings)} bindings, the engine has "
                                f"{len(self.engine.names)}")
        return self._execute(dict(zip(self.engine.names, bindings)), stream_handle)


class FakeEngine10(FakeEngine):
    """TensorRT 10+: named I/O tensors."""

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if self.is_input(name) else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.trt_dtype(name)

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        assert profile_index == 0 and self.is_input(name) and self.profile is not None
        return list(self.profile)

    def create_execution_context(self) -> FakeContext10:
        context = FakeContext10(self)
        self.contexts.append(context)
        return context


class FakeContext10(FakeContext):
    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if not self.engine.is_input(name):
            raise FakeCudaError(f"set_input_shape on output {name!r}")
        return self._set_input_shape(shape)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name not in self.engine.names:
            raise FakeCudaError(f"set_tensor_address for unknown tensor {name!r}")
        self.gpu_check(address, name)
        self.addresses[name] = int(address)
        return True

    def gpu_check(self, address: int, name: str) -> None:
        if int(address) not in self.engine.gpu.device_memory:
            raise FakeCudaError(f"set_tensor_address({name!r}, {int(address):#x}): not a device buffer")

    def execute_async_v3(self, stream_handle: int) -> bool:
        return self._execute(self.addresses, stream_handle)


def make_tensorrt(gpu: FakeGpu, generation: int = 10, version: str | None = None,
                  raise_on_bad_engine: bool = False) -> types.ModuleType:
    """A `tensorrt` module of the given API generation (8: bindings, 10: named tensors)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version or ("10.3.0" if generation >= 10 else "8.5.2.2")
    trt.ILogger = ILogger
    trt.Logger = Logger
    trt.DataType = DataType
    trt.nptype = lambda dtype: _NP_TYPES[DataType(dtype)]
    if generation >= 10:
        trt.TensorIOMode = TensorIOMode
    trt.runtimes = []

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            if not isinstance(logger, ILogger) or not getattr(logger, "fake_initialised", False):
                raise TypeError("Runtime needs an initialised tensorrt.ILogger")
            self.logger = logger
            self.DLA_core = -1
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"deserialize_cuda_engine takes bytes, got {type(data).__name__}")
            data = bytes(data)
            if not data.startswith(ENGINE_MAGIC):
                return self._fail("1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
                                  "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not "
                                  "match)")
            spec = json.loads(data[len(ENGINE_MAGIC):])
            if spec["version"] != trt.__version__:
                return self._fail("1: [stdArchiveReader.cpp::StdArchiveReader::42] Error Code 1: Serialization "
                                  "(Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed."
                                  f"Version tag does not match. Current Version: {trt.__version__}, Serialized "
                                  f"Engine Version: {spec['version']})")
            engine_class = FakeEngine10 if generation >= 10 else FakeEngine8
            return engine_class(spec, gpu, trt)

        def _fail(self, message: str) -> None:
            self.logger.log(Severity.ERROR, message)
            if raise_on_bad_engine:
                raise RuntimeError(message)
            return None

    trt.Runtime = Runtime
    return trt


# ---------------------------------------------------------------------------------------------
# Engine files and installation
# ---------------------------------------------------------------------------------------------

def ultralytics_header(onnx_path: str | Path) -> dict[str, Any]:
    """The metadata Ultralytics puts in an engine header, read from the ONNX export of the same model."""
    raw = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    header: dict[str, Any] = {}
    for key, value in raw.custom_metadata_map.items():
        try:
            header[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            header[key] = value
    header["names"] = {str(k): v for k, v in header.get("names", {}).items()}
    return header


def write_engine(path: str | Path, onnx_path: str | Path, version: str, header: dict | None = None,
                 input_dtype: str = "float32", output_dtype: str = "float32", dynamic: bool = False,
                 profile: tuple | None = None, input_shape: tuple | None = None) -> Path:
    """A fake engine file, with an Ultralytics-style metadata header when `header` is given.

    `dynamic` engines take the input shapes `profile` (min, opt, max) allows; `input_shape` is the
    input shape the engine declares (-1 for a dynamic dimension), by default the ONNX model's own (a
    fixed engine) or (-1, 3, -1, -1) (a dynamic one)."""
    spec = {"version": version, "onnx": str(onnx_path), "input_dtype": input_dtype,
            "output_dtype": output_dtype, "dynamic": dynamic, "profile": profile, "input_shape": input_shape}
    payload = ENGINE_MAGIC + json.dumps(spec).encode()
    path = Path(path)
    with path.open("wb") as out:
        if header is not None:
            text = json.dumps(header).encode()
            out.write(len(text).to_bytes(4, byteorder="little", signed=True))
            out.write(text)
        out.write(payload)
    return path


CUDA_STYLES = ("cuda-python", "cuda-python-legacy", "pycuda")
_ALL_CUDA_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver",
                     "pycuda.autoinit")


def install(monkeypatch: Any, generation: int = 10, cuda: str = "cuda-python", version: str | None = None,
            device_count: int = 1, raise_on_bad_engine: bool = False) -> tuple[FakeGpu, types.ModuleType]:
    """Put a fake tensorrt and one fake CUDA binding into sys.modules; returns (gpu, tensorrt module)."""
    import sys

    gpu = FakeGpu(device_count)
    trt = make_tensorrt(gpu, generation, version, raise_on_bad_engine)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name in _ALL_CUDA_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # None makes `import name` fail
    if cuda == "cuda-python":
        runtime = make_cudart(gpu, "cuda.bindings.runtime")
        package, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        package.bindings, bindings.runtime = bindings, runtime
        for name, module in (("cuda", package), ("cuda.bindings", bindings), ("cuda.bindings.runtime", runtime)):
            monkeypatch.setitem(sys.modules, name, module)
    elif cuda == "cuda-python-legacy":
        runtime = make_cudart(gpu, "cuda.cudart")
        package = types.ModuleType("cuda")
        package.cudart = runtime
        monkeypatch.setitem(sys.modules, "cuda", package)
        monkeypatch.setitem(sys.modules, "cuda.cudart", runtime)
    elif cuda == "pycuda":
        driver = make_pycuda_driver(gpu)
        package = types.ModuleType("pycuda")
        package.driver = driver
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    elif cuda != "none":
        raise ValueError(f"cuda style {cuda!r}; expected one of {CUDA_STYLES} or 'none'")
    return gpu, trt
