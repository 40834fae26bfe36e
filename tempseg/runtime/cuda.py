"""A small CUDA interface for the TensorRT runner: device buffers, pinned host arrays, streams, events, graphs.

One ABC (`CudaApi`) with two implementations, chosen by what is installed (`default_cuda_api`, which takes the
binding common.platform.cuda_binding names: the same answer backend auto-selection uses):
- `CudaPythonApi`: cuda-python's runtime bindings (`cuda.bindings.runtime`; `cuda.cudart` before
  cuda-python 12.6). Installs from PyPI anywhere, so it comes first. Every call returns a tuple
  (cudaError_t, *values); a failure raises `CudaError` with the call and CUDA's error name.
- `PyCudaApi`: pycuda's driver API on the device's primary context (the context the CUDA runtime, and
  so TensorRT, uses). pycuda compiles against a CUDA toolkit at install, which is how Jetsons often
  have it. Its errors become `CudaError` with pycuda's message (driver call and CUDA's error string).
  pycuda has no stream capture, so no CUDA graphs.

Both bindings are imported lazily: this module imports on a machine with neither (CI, no GPU), and
`cuda_device_count()` (what the binding sees, for diagnostics) answers 0 there without raising. Whether there
is a GPU at all is common.platform's question (the driver's view, no binding needed), not this module's.

Objects own their memory, allocated once and freed explicitly: `DeviceBuffer` frees in `free()` or on
leaving a `with`; pinned arrays from `host_array` are freed with `free_host`. Nothing frees itself on
garbage collection, so nothing is freed (or synchronized) at an unpredictable moment inside the frame loop.

What the CPU tests cannot run: both implementations against a real device (allocation, copies, events,
graph capture), and pycuda as a whole (it installs only where a CUDA toolkit is). The GPU tests in
tests/test_trt_runner.py (marker `gpu`) and `make gpu-check` (bench/gpu_check.py) run them on an NVIDIA
GPU. Without one, only the no-driver paths run: `cuda_device_count() == 0` and cudaSetDevice's error
becoming a `CudaError`.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tempseg.common.errors import UserError, require
from tempseg.common.platform import cuda_binding

if TYPE_CHECKING:  # imported lazily at run time (module docstring); typings/pycuda stubs it for the checker
    import pycuda.driver

_T = TypeVar("_T")

INSTALL_HINT = (
    "`pip install cuda-python` (any platform), or pycuda (`pip install pycuda`, which compiles against the "
    "CUDA toolkit; on a Jetson it builds against JetPack's)"
)


class CudaError(RuntimeError):
    """A CUDA call failed: `call` is the function, `error` CUDA's error name (or pycuda's message)."""

    def __init__(self, call: str, error: str) -> None:
        self.call, self.error = call, error
        super().__init__(f"{call} failed: {error}")


# ---- handles --------------------------------------------------------------------------------------------


class Stream(abc.ABC):
    """A CUDA stream; `handle` is the cudaStream_t as an int, what TensorRT's execute_async_v3 takes."""

    @property
    @abc.abstractmethod
    def handle(self) -> int: ...

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Block until everything enqueued on this stream has finished."""

    @abc.abstractmethod
    def close(self) -> None:
        """Destroy the stream (idempotent)."""


class Event(abc.ABC):
    """A timing event: record on a stream, synchronize, read the milliseconds to a later event."""

    @abc.abstractmethod
    def record(self, stream: Stream) -> None: ...

    @abc.abstractmethod
    def synchronize(self) -> None: ...

    @abc.abstractmethod
    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds from this event to `end`; both must have completed."""

    @abc.abstractmethod
    def close(self) -> None: ...


class CudaGraph(abc.ABC):
    """An instantiated CUDA graph (captured work that replays with the addresses it was captured with)."""

    @abc.abstractmethod
    def launch(self, stream: Stream) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class CudaApi(abc.ABC):
    """What the TensorRT runner needs from CUDA; sizes in bytes, pointers as ints."""

    name: str = "cuda"

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int:
        """Allocate device memory; returns its address."""

    @abc.abstractmethod
    def free(self, ptr: int) -> None:
        """Free device memory from `malloc`."""

    @abc.abstractmethod
    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A zeroed numpy array in page-locked host memory (async copies need it); free with `free_host`."""

    @abc.abstractmethod
    def free_host(self, array: np.ndarray) -> None:
        """Free an array from `host_array` (the array itself, not a view); it must not be used after."""

    @abc.abstractmethod
    def create_stream(self) -> Stream: ...

    @abc.abstractmethod
    def create_event(self) -> Event: ...

    @abc.abstractmethod
    def memcpy_htod_async(self, dst_ptr: int, host: np.ndarray, stream: Stream) -> None:
        """Enqueue a copy of all of `host` (pinned, contiguous) to device address `dst_ptr`."""

    @abc.abstractmethod
    def memcpy_dtoh_async(self, host: np.ndarray, src_ptr: int, stream: Stream) -> None:
        """Enqueue a copy from device address `src_ptr` into all of `host` (pinned, contiguous)."""

    @abc.abstractmethod
    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Stream) -> None:
        """Enqueue setting `nbytes` bytes at `ptr` to the byte `value`."""

    @abc.abstractmethod
    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""

    @abc.abstractmethod
    def capture_graph(self, stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        """Capture what `enqueue()` puts on `stream` into an instantiated graph (nothing runs during capture).
        `enqueue` may only enqueue stream work: in the global capture mode CUDA refuses allocations, frees and
        synchronizing the capturing stream until the capture ends, and the capture is then lost."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the api itself holds (pycuda: its context); buffers are freed by their owners."""

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, nbytes)


class DeviceBuffer:
    """Device memory owned by this object: `ptr` (int address, for set_tensor_address), `nbytes`; free() or `with`."""

    def __init__(self, api: CudaApi, nbytes: int) -> None:
        self.api = api
        self.nbytes = int(nbytes)
        self.ptr = api.malloc(max(1, self.nbytes))  # a 0-byte tensor still needs a valid, distinct address

    def free(self) -> None:
        if self.ptr:
            self.api.free(self.ptr)
            self.ptr = 0

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.free()

    def __repr__(self) -> str:
        return f"DeviceBuffer(ptr=0x{self.ptr:x}, nbytes={self.nbytes})"


def _open(native: _T | None, what: str) -> _T:
    """A handle's binding object, which close() sets to None: RuntimeError for a handle used after close()."""
    return require(native, f"CUDA {what} used after close()")


# ---- cuda-python ----------------------------------------------------------------------------------------


def _import_cudart() -> ModuleType:
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+, 13.x) or the older `cuda.cudart`."""
    try:
        import cuda.bindings.runtime as runtime
    except ImportError:  # cuda-python < 12.6, which has no cuda.bindings
        return importlib.import_module("cuda.cudart")
    return runtime


class CudaPythonApi(CudaApi):
    """cuda-python's runtime API; the device's primary context is the one TensorRT uses too."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        self.rt = _import_cudart()
        self._pinned: dict[int, int] = {}  # host address -> bytes, so free_host can check what it is given
        # CUDA 12+ creates the primary context here, so TensorRT and the runtime cache find a current context
        self.call("cudaSetDevice", device)

    def call(self, function: str, *args: Any) -> Any:
        """Call `cudart.<function>(*args)`; CudaError unless it returns cudaSuccess; the value(s) it returns."""
        err, *values = getattr(self.rt, function)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(function, getattr(err, "name", str(err)))
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", nbytes))

    def free(self, ptr: int) -> None:
        self.call("cudaFree", ptr)

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        ptr = int(self.call("cudaMallocHost", max(1, nbytes)))
        self._pinned[ptr] = nbytes
        raw = (ctypes.c_ubyte * max(1, nbytes)).from_address(ptr)  # numpy view of the pinned block, no copy
        array = np.frombuffer(memoryview(raw), dtype=np.uint8, count=nbytes).view(dtype).reshape(shape)
        array.fill(0)  # cudaMallocHost does not zero
        return array

    def free_host(self, array: np.ndarray) -> None:
        ptr = int(array.ctypes.data)
        if self._pinned.pop(ptr, None) is None:
            raise ValueError(f"free_host: 0x{ptr:x} is not an array from this api's host_array")
        self.call("cudaFreeHost", ptr)

    def create_stream(self) -> Stream:
        # non-blocking: no implicit sync with the legacy default stream (TensorRT advises a non-default stream)
        return _CudartStream(self, self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking))

    def create_event(self) -> Event:
        return _CudartEvent(self, self.call("cudaEventCreate"))  # default flags: timing enabled

    def memcpy_htod_async(self, dst_ptr: int, host: np.ndarray, stream: Stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", dst_ptr, _host_ptr(host), host.nbytes, kind, _cudart_stream(stream))

    def memcpy_dtoh_async(self, host: np.ndarray, src_ptr: int, stream: Stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", _host_ptr(host), src_ptr, host.nbytes, kind, _cudart_stream(stream))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Stream) -> None:
        self.call("cudaMemsetAsync", ptr, value, nbytes, _cudart_stream(stream))

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self.call("cudaMemGetInfo")
        return int(free), int(total)

    def capture_graph(self, stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self.call("cudaStreamBeginCapture", _cudart_stream(stream), mode)
        try:
            enqueue()
        except BaseException:  # the capture must end, or the stream stays unusable; enqueue's error is the cause
            self._abandon_capture(stream)
            raise
        graph = self.call("cudaStreamEndCapture", _cudart_stream(stream))
        try:
            # ...WithFlags has the same signature from CUDA 11.4 to 13; cudaGraphInstantiate's changed in 12
            executable = self.call("cudaGraphInstantiateWithFlags", graph, 0)
        except CudaError:
            self.call("cudaGraphDestroy", graph)
            raise
        return _CudartGraph(self, graph, executable)

    def _abandon_capture(self, stream: Stream) -> None:
        """End a capture whose enqueue failed, keeping no graph; its own error (the capture invalidated by what
        failed) would only hide the cause."""
        err, graph = self.rt.cudaStreamEndCapture(_cudart_stream(stream))
        if err == self.rt.cudaError_t.cudaSuccess and graph:
            self.rt.cudaGraphDestroy(graph)

    def close(self) -> None:
        """Nothing to release: the primary context outlives this object (TensorRT may still use it)."""


def _host_ptr(host: np.ndarray) -> int:
    if not host.flags.c_contiguous:
        raise ValueError("async copies need a contiguous host array")
    return int(host.ctypes.data)


def _cudart_stream(stream: Stream) -> Any:
    """The cudaStream_t of our streams; any other Stream by its int handle (cuda-python takes both)."""
    return stream.native if isinstance(stream, _CudartStream) else stream.handle


class _CudartStream(Stream):
    def __init__(self, api: CudaPythonApi, native: Any) -> None:
        self.api, self.native = api, native

    @property
    def handle(self) -> int:
        return int(_open(self.native, "stream"))

    def synchronize(self) -> None:
        self.api.call("cudaStreamSynchronize", self.native)

    def close(self) -> None:
        if self.native is not None:
            self.api.call("cudaStreamDestroy", self.native)
            self.native = None


class _CudartEvent(Event):
    def __init__(self, api: CudaPythonApi, native: Any) -> None:
        self.api, self.native = api, native

    def record(self, stream: Stream) -> None:
        self.api.call("cudaEventRecord", self.native, _cudart_stream(stream))

    def synchronize(self) -> None:
        self.api.call("cudaEventSynchronize", self.native)

    def elapsed_ms(self, end: Event) -> float:
        if not isinstance(end, _CudartEvent):
            raise TypeError("elapsed_ms: both events must come from the same api")
        return float(self.api.call("cudaEventElapsedTime", self.native, end.native))

    def close(self) -> None:
        if self.native is not None:
            self.api.call("cudaEventDestroy", self.native)
            self.native = None


class _CudartGraph(CudaGraph):
    def __init__(self, api: CudaPythonApi, graph: Any, executable: Any) -> None:
        self.api, self.graph, self.executable = api, graph, executable

    def launch(self, stream: Stream) -> None:
        self.api.call("cudaGraphLaunch", self.executable, _cudart_stream(stream))

    def close(self) -> None:
        if self.executable is not None:
            self.api.call("cudaGraphExecDestroy", self.executable)
            self.api.call("cudaGraphDestroy", self.graph)
            self.executable = self.graph = None


# ---- pycuda ---------------------------------------------------------------------------------------------


class PyCudaApi(CudaApi):
    """pycuda's driver API, on the device's primary context (pushed here, popped in close())."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as driver

        self.driver = driver
        # address -> DeviceAllocation (pycuda frees on GC: keep them alive)
        self._device: dict[int, pycuda.driver.DeviceAllocation] = {}
        self._pinned: dict[int, Any] = {}  # address -> PagelockedHostAllocation
        self.call("cuInit", driver.init)
        # the primary context is the CUDA runtime's, so TensorRT and pycuda share memory and streams
        context = self.call("cuDevicePrimaryCtxRetain", driver.Device(device).retain_primary_context)
        self._context: pycuda.driver.Context | None = context
        self.call("cuCtxPushCurrent", context.push)

    def call(self, name: str, function: Callable[..., _T], *args: Any) -> _T:
        """Run a pycuda function; its `pycuda.driver.Error` becomes a CudaError naming `name`."""
        try:
            return function(*args)
        except self.driver.Error as err:
            raise CudaError(name, str(err)) from err

    def malloc(self, nbytes: int) -> int:
        allocation = self.call("cuMemAlloc", self.driver.mem_alloc, nbytes)
        self._device[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        allocation = self._device.pop(int(ptr), None)
        if allocation is None:
            raise ValueError(f"free: 0x{ptr:x} is not an allocation of this api")
        self.call("cuMemFree", allocation.free)

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        array = self.call("cuMemHostAlloc", self.driver.pagelocked_zeros, shape, np.dtype(dtype))
        self._pinned[int(array.ctypes.data)] = array.base  # the PagelockedHostAllocation that owns it
        return array

    def free_host(self, array: np.ndarray) -> None:
        allocation = self._pinned.pop(int(array.ctypes.data), None)
        if allocation is None:
            raise ValueError("free_host: not an array from this api's host_array")
        self.call("cuMemFreeHost", allocation.free)

    def create_stream(self) -> Stream:
        return _PyCudaStream(self, self.call("cuStreamCreate", self.driver.Stream))

    def create_event(self) -> Event:
        return _PyCudaEvent(self, self.call("cuEventCreate", self.driver.Event))

    def memcpy_htod_async(self, dst_ptr: int, host: np.ndarray, stream: Stream) -> None:
        # pycuda sizes the copy from the buffer; it must be page-locked for a truly async copy
        self.call("cuMemcpyHtoDAsync", self.driver.memcpy_htod_async, dst_ptr, host, _pycuda_stream(stream))

    def memcpy_dtoh_async(self, host: np.ndarray, src_ptr: int, stream: Stream) -> None:
        self.call("cuMemcpyDtoHAsync", self.driver.memcpy_dtoh_async, host, src_ptr, _pycuda_stream(stream))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Stream) -> None:
        self.call("cuMemsetD8Async", self.driver.memset_d8_async, ptr, value, nbytes, _pycuda_stream(stream))

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self.call("cuMemGetInfo", self.driver.mem_get_info)
        return int(free), int(total)

    def capture_graph(self, stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        raise UserError("CUDA graphs need cuda-python (pycuda has no stream capture): `pip install cuda-python`")

    def close(self) -> None:
        if self._context is not None:
            self.call("cuCtxPopCurrent", self.driver.Context.pop)
            self._context = None  # pycuda releases the retained primary context when this object goes


def _pycuda_stream(stream: Stream) -> pycuda.driver.Stream | None:
    if not isinstance(stream, _PyCudaStream):
        raise TypeError("PyCudaApi needs streams from its own create_stream()")
    return stream.native


class _PyCudaStream(Stream):
    def __init__(self, api: PyCudaApi, native: pycuda.driver.Stream) -> None:
        self.api = api
        self.native: pycuda.driver.Stream | None = native

    @property
    def handle(self) -> int:
        return int(_open(self.native, "stream").handle)

    def synchronize(self) -> None:
        self.api.call("cuStreamSynchronize", _open(self.native, "stream").synchronize)

    def close(self) -> None:
        self.native = None  # pycuda destroys the stream when its object goes


class _PyCudaEvent(Event):
    def __init__(self, api: PyCudaApi, native: pycuda.driver.Event) -> None:
        self.api = api
        self.native: pycuda.driver.Event | None = native

    def record(self, stream: Stream) -> None:
        self.api.call("cuEventRecord", _open(self.native, "event").record, _pycuda_stream(stream))

    def synchronize(self) -> None:
        self.api.call("cuEventSynchronize", _open(self.native, "event").synchronize)

    def elapsed_ms(self, end: Event) -> float:
        if not isinstance(end, _PyCudaEvent):
            raise TypeError("elapsed_ms: both events must come from the same api")
        # pycuda's convention: end.time_since(start)
        return float(
            self.api.call("cuEventElapsedTime", _open(end.native, "event").time_since, _open(self.native, "event"))
        )

    def close(self) -> None:
        self.native = None


# ---- choosing ---------------------------------------------------------------------------------------------


def default_cuda_api(device: int = 0) -> CudaApi:
    """An api over the binding common.platform picks (cuda-python, else pycuda); UserError when neither imports."""
    binding = cuda_binding()
    if binding is None:
        why = "neither cuda-python nor pycuda imports"
        raise UserError(f"the TensorRT backend needs a CUDA binding ({why}). Install {INSTALL_HINT}")
    return {"cuda-python": CudaPythonApi, "pycuda": PyCudaApi}[binding](device)


def cuda_device_count() -> int:
    """CUDA devices the binding common.platform picks can see; 0 with no binding, no driver or no GPU. Never raises."""
    try:
        binding = cuda_binding()
        if binding == "cuda-python":
            runtime = _import_cudart()
            err, count = runtime.cudaGetDeviceCount()
            return int(count) if err == runtime.cudaError_t.cudaSuccess else 0
        if binding == "pycuda":
            import pycuda.driver as driver

            driver.init()
            return int(driver.Device.count())
    except Exception:  # a diagnostic: a broken binding or driver counts as no device
        return 0
    return 0
