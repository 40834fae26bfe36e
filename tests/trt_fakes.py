"""The fakes the TensorRT runner's CPU tests drive it through: a numpy-backed CudaApi that logs every call and
keeps CUDA's stream-capture rules (FakeCuda), a fake TensorRT whose engine is the ONNX graph itself and whose
execution context runs it with ONNX Runtime on the arrays at the bound addresses (read with the engine's
tensor dtypes), cuda-python's calling convention over ctypes memory (FakeCudart), and small contract graphs
(a one-conv state graph and an Accel-shaped keyframe pair, made with onnx.helper, no torch).

The fake classes carry only the public names the real APIs have (TensorRT 10.13, TensorRT-RTX 1.7, CudaApi,
cuda-python); what a test needs besides is private (`_name`) or a module-level helper."""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tempseg.common.contract import Contract, StateSpec, TensorSpec, graph_io, read_onnx_contract, set_metadata
from tempseg.common.io import sha256_file
from tempseg.engine.sidecar import SIDECAR_VERSION, sidecar_path, write_sidecar
from tempseg.engine.trt import GpuInfo, TensorRT
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner, onnx_weight_bytes
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tempseg.runtime.cuda import CudaApi, CudaError, CudaGraph, Event, Stream

H, W, CLASSES = 8, 8, 3
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
FAKE_GPU = GpuInfo("Fake RTX", "8.9", 8 << 30)
# the fake clock: milliseconds each logged operation takes, so PhaseTimes are exact
COST_MS = {"htod": 1.0, "execute": 5.0, "launch": 5.0, "dtoh": 2.0}
# one fake per branch the runner feature-detects: (flavour, version) of each
KINDS = {
    "trt86": ("tensorrt", "8.6.1"),  # device_memory_size only, no runtime config
    "trt10": ("tensorrt", "10.3.0"),  # device_memory_size_v2 (JetPack 6's 10.3), no runtime config
    "trt10_config": ("tensorrt", "10.13.0"),  # + create_runtime_config; its IRuntimeConfig: allocation strategy only
    "rtx": ("tensorrt_rtx", "1.7.1.116"),  # + runtime cache, cuda_graph_strategy, get_engine_stat
}
DEVICE_MEMORY = 4096  # a fake execution context's device memory unless a test sets `device_memory`
# CUDA's error names (cuda.bindings.runtime.cudaError_t) for what stream capture refuses
CAPTURE_UNSUPPORTED = "cudaErrorStreamCaptureUnsupported"
CAPTURE_INVALIDATED = "cudaErrorStreamCaptureInvalidated"
CAPTURED_EVENT = "cudaErrorCapturedEvent"


# ---- the test graph --------------------------------------------------------------------------------------


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((CLASSES, 3, 1, 1)).astype(np.float32), np.float32(0.5)


def tiny_contract(model: str = "tiny_state") -> Contract:
    return Contract(
        model=model,
        num_classes=CLASSES,
        image=TensorSpec("image", (1, 3, H, W), "float32"),
        states=(StateSpec("state_in.0", "state_out.0", (1, CLASSES, H, W), "float32"),),
        logits=TensorSpec("logits", (1, CLASSES, H, W), "float32"),
        labels=TensorSpec("labels", (1, H, W), "int32"),
        extra={"params": CLASSES * 3},
    )


def tiny_state_graph(path: Path) -> Contract:
    """logits = conv1x1(image) + 0.5 * state_in.0; labels = int32 argmax; state_out.0 = relu(logits)."""
    weight, mix = _weights()
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["conv"]),
        helper.make_node("Mul", ["state_in.0", "mix"], ["carried"]),
        helper.make_node("Add", ["conv", "carried"], ["logits"]),
    ]
    weights = {"w": weight, "mix": np.array(mix)}
    return save_contract_graph(path, tiny_contract(), nodes, ["image", "state_in.0"], weights)


def save_contract_graph(
    path: Path, contract: Contract, nodes: list, inputs: list[str], weights: dict[str, np.ndarray]
) -> Contract:
    """`nodes` compute `logits` from `inputs`; labels = int32 argmax, state_out.0 = relu(logits) are added here."""
    nodes = [
        *nodes,
        helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.INT32),
        helper.make_node("Relu", ["logits"], ["state_out.0"]),
    ]
    shapes = {"image": contract.image.shape, "state_in.0": contract.states[0].shape}
    shapes.update({contract.flow.name: contract.flow.shape} if contract.flow is not None else {})
    shape = [1, CLASSES, H, W]
    graph = helper.make_graph(
        nodes,
        contract.model,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shapes[name])) for name in inputs],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("labels", TensorProto.INT32, [1, H, W]),
            helper.make_tensor_value_info("state_out.0", TensorProto.FLOAT, shape),
        ],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_metadata(model, contract)
    onnx.save(model, str(path))
    assert read_onnx_contract(path) == contract  # the fixture is a valid contract graph
    return contract


def frames(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 3, H, W)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


# ---- the test pair: a keyframe graph and an update graph over one state (Accel's shape) ---------------------

FLOW = TensorSpec("flow", (1, 2, H, W), "float32")  # dx, dy on the state's grid
KEYFRAME_EVERY = 3


def _pair_weights() -> tuple[np.ndarray, np.ndarray]:
    """The keyframe graph's conv (not the update graph's) and the per-class gain of the flow's sum."""
    rng = np.random.default_rng(11)
    gain = np.array([0.3, 0.0, -0.3], np.float32).reshape(1, CLASSES, 1, 1)
    return rng.standard_normal((CLASSES, 3, 1, 1)).astype(np.float32), gain


def pair_contracts(keyframe_graph: str = "keyframe.onnx") -> tuple[Contract, Contract]:
    """(update, keyframe) contracts, as models/contract.py makes them; the update one names `keyframe_graph`."""
    schedule = {"keyframe_graph": keyframe_graph, "keyframe_every": KEYFRAME_EVERY}
    update = tiny_contract("tiny_pair").with_changes(role="update", flow=FLOW, schedule=schedule)
    return update, update.with_changes(role="keyframe", flow=None, schedule={})


def tiny_pair_graphs(folder: Path) -> tuple[Path, Path]:
    """keyframe.onnx: logits = conv1x1_k(image). model.onnx (update): logits = conv1x1(image) + 0.5 * state_in.0
    + gain * sum(flow), so the state and the flow both reach the labels. Both: state_out.0 = relu(logits)."""
    update, keyframe = pair_contracts()
    weight, mix = _weights()
    keyframe_weight, gain = _pair_weights()
    save_contract_graph(
        folder / "keyframe.onnx",
        keyframe,
        [helper.make_node("Conv", ["image", "wk"], ["logits"])],
        ["image"],
        {"wk": keyframe_weight},
    )
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["conv"]),
        helper.make_node("Mul", ["state_in.0", "mix"], ["carried"]),
        helper.make_node("ReduceSum", ["flow"], ["flow_sum"], keepdims=1),
        helper.make_node("Mul", ["flow_sum", "gain"], ["moved"]),
        helper.make_node("Add", ["conv", "carried"], ["mixed"]),
        helper.make_node("Add", ["mixed", "moved"], ["logits"]),
    ]
    weights = {"w": weight, "mix": np.array(mix), "gain": gain}
    save_contract_graph(folder / "model.onnx", update, nodes, ["image", "flow", "state_in.0"], weights)
    return folder / "model.onnx", folder / "keyframe.onnx"


def flows(n: int, seed: int = 0, shape: tuple[int, ...] = FLOW.shape) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


# ---- a numpy-backed CudaApi that logs every call and keeps CUDA's stream-capture rules ------------------


@dataclass
class _Capture:
    """An open stream capture: the stream's handle, the work it recorded, and whether a refused call broke it."""

    handle: int
    nodes: list[Callable[[], None]] = field(default_factory=list)
    invalidated: bool = False


class FakeStream(Stream):
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        self._cuda, self._index, self._closed = cuda, index, False

    @property
    def handle(self) -> int:
        return 0x5000 + self._index

    def synchronize(self) -> None:
        # a capturing stream holds recorded work, not work that runs: CUDA refuses to wait on it
        self._cuda._refuse_if_capturing("cudaStreamSynchronize", self.handle)
        self._cuda._log.append(("sync",))

    def close(self) -> None:
        self._closed = True


class FakeEvent(Event):
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        self._cuda, self._index, self._time, self._closed = cuda, index, None, False
        self._captured = False  # last recorded in a capturing stream: a graph node, not a point in time

    def record(self, stream: Stream) -> None:
        self._captured = self._cuda._capturing(stream.handle)
        self._cuda._enqueue(stream.handle, self._stamp)
        self._cuda._log.append(("record", self._index))

    def _stamp(self) -> None:
        self._time = self._cuda._clock

    def synchronize(self) -> None:
        self._refuse_if_captured("cudaEventSynchronize")
        self._cuda._log.append(("event_sync", self._index))

    def elapsed_ms(self, end: Event) -> float:
        assert isinstance(end, FakeEvent)
        for event in (self, end):
            event._refuse_if_captured("cudaEventElapsedTime")
        assert self._time is not None
        assert end._time is not None
        return end._time - self._time

    def _refuse_if_captured(self, call: str) -> None:
        if self._captured:
            raise CudaError(call, CAPTURED_EVENT)

    def close(self) -> None:
        self._closed = True


class FakeGraph(CudaGraph):
    """The work a capture recorded, replayed as recorded: with the addresses and sizes of capture time."""

    def __init__(self, cuda: FakeCuda, nodes: list[Callable[[], None]]) -> None:
        self._cuda, self._nodes = cuda, nodes

    def launch(self, stream: Stream) -> None:
        self._cuda._tick("launch")
        self._cuda._log.append(("launch", len(self._nodes)))
        for node in self._nodes:
            node()

    def close(self) -> None:
        self._nodes = []


class FakeCuda(CudaApi):
    """Device memory = numpy byte arrays at made-up addresses; streams run eagerly, except the capturing one,
    whose work is recorded into the graph; `_log` records every call.

    Stream capture as CudaPythonApi begins it (cudaStreamCaptureModeGlobal), by CUDA's rules: work enqueued on
    the capturing stream (copies, memset_async, event records, execute_async_v3) is recorded, not run; calls
    that cannot be recorded (malloc, free, pinned alloc/free, synchronizing the capturing stream or an event
    recorded in it) raise CudaError and invalidate the capture, whose end then raises
    cudaErrorStreamCaptureInvalidated. Work on other streams runs as usual. Each write to a device buffer
    is numbered, so the fake TensorRT can tell a stale state read (FakeContext)."""

    name = "fake"

    def __init__(self, total: int = 1 << 30) -> None:
        self._memory: dict[int, np.ndarray] = {}
        self._host: dict[int, np.ndarray] = {}
        self._log: list[tuple] = []
        self._clock = 0.0
        self._total = total
        self._capture: _Capture | None = None
        self._writes: dict[int, int] = {}  # buffer address -> number of its last write (none: never written)
        self._write_count = 0
        self._closed = False
        self._next = 0x10000

    # ---- helpers the fakes and tests use -------------------------------------------------------------

    def _tick(self, op: str) -> None:
        self._clock += COST_MS.get(op, 0.0)

    def _view(self, ptr: int, nbytes: int) -> np.ndarray:
        """`nbytes` at `ptr`, inside one allocation (a slot of a state buffer is an address inside it); a pointer
        outside every allocation, or a range running past its end, fails as an illegal address would."""
        base = self._base(ptr)
        block = self._memory[base]
        offset = ptr - base
        assert offset + nbytes <= block.nbytes, (ptr, nbytes, block.nbytes)
        return block[offset : offset + nbytes]

    def _base(self, ptr: int) -> int:
        """The allocation holding `ptr` (KeyError for a pointer into none)."""
        if ptr in self._memory:
            return ptr
        for base, block in self._memory.items():
            if base <= ptr < base + block.nbytes:
                return base
        raise KeyError(ptr)

    def _array(self, ptr: int, spec: TensorSpec | StateSpec) -> np.ndarray:
        """The device buffer at `ptr` as a typed array."""
        return self._view(ptr, spec.nbytes).view(np.dtype(spec.dtype)).reshape(spec.shape)

    def _wrote(self, ptr: int) -> None:
        self._write_count += 1
        self._writes[self._base(ptr)] = self._write_count

    def _capturing(self, handle: int) -> bool:
        return self._capture is not None and self._capture.handle == handle

    def _enqueue(self, handle: int, work: Callable[[], None]) -> bool:
        """Run `work` now, or record it into the graph when `handle` is the capturing stream (it then runs at
        each replay, with what it captured). True when recorded."""
        if self._capture is not None and self._capture.handle == handle:
            self._capture.nodes.append(work)
            return True
        work()
        return False

    def _refuse_in_capture(self, call: str) -> None:
        """Global capture mode: a call that is not stream work cannot be recorded, so CUDA refuses it while a
        capture is open (an allocation made once would not be made again at replay) and invalidates it."""
        if self._capture is not None:
            self._capture.invalidated = True
            raise CudaError(call, CAPTURE_UNSUPPORTED)

    def _refuse_if_capturing(self, call: str, handle: int) -> None:
        if self._capturing(handle):
            self._refuse_in_capture(call)

    # ---- CudaApi ---------------------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        self._refuse_in_capture("cudaMalloc")
        ptr, self._next = self._next, self._next + max(nbytes, 1) + 0x1000
        self._memory[ptr] = np.full(nbytes, 0xAB, np.uint8)  # garbage, as cudaMalloc gives
        self._log.append(("malloc", ptr, nbytes))
        return ptr

    def free(self, ptr: int) -> None:
        self._refuse_in_capture("cudaFree")  # cudaFree synchronizes the device
        del self._memory[ptr]
        self._writes.pop(ptr, None)
        self._log.append(("free", ptr))

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        self._refuse_in_capture("cudaMallocHost")
        array = np.zeros(shape, dtype)
        self._host[array.ctypes.data] = array
        self._log.append(("host_alloc", array.nbytes))
        return array

    def free_host(self, array: np.ndarray) -> None:
        self._refuse_in_capture("cudaFreeHost")  # cudaFreeHost synchronizes the device
        del self._host[array.ctypes.data]

    def create_stream(self) -> Stream:
        return FakeStream(self, len(self._log))

    def create_event(self) -> Event:
        self._log.append(("event",))
        return FakeEvent(self, sum(1 for entry in self._log if entry[0] == "event"))

    def memcpy_htod_async(self, dst_ptr: int, host: np.ndarray, stream: Stream) -> None:
        def copy() -> None:  # a captured copy reads the pinned array when the graph replays
            self._view(dst_ptr, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
            self._wrote(dst_ptr)

        captured = self._enqueue(stream.handle, copy)
        if not captured:  # a replayed copy is timed as part of the launch
            self._tick("htod")
        self._log.append(("captured_htod" if captured else "htod", dst_ptr, host.nbytes))

    def memcpy_dtoh_async(self, host: np.ndarray, src_ptr: int, stream: Stream) -> None:
        def copy() -> None:
            host.reshape(-1).view(np.uint8)[:] = self._view(src_ptr, host.nbytes)

        captured = self._enqueue(stream.handle, copy)
        if not captured:
            self._tick("dtoh")
        self._log.append(("captured_dtoh" if captured else "dtoh", src_ptr, host.nbytes))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Stream) -> None:
        # legal inside a capture: cudaMemsetAsync on the capturing stream becomes a memset node of the graph,
        # so it zeroes at every replay, not once now
        def fill() -> None:
            self._view(ptr, nbytes)[:] = value
            self._wrote(ptr)

        captured = self._enqueue(stream.handle, fill)
        self._log.append(("captured_memset" if captured else "memset", ptr, nbytes))

    def mem_get_info(self) -> tuple[int, int]:
        used = sum(block.nbytes for block in self._memory.values())
        return self._total - used, self._total

    def capture_graph(self, stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        if self._capture is not None:
            raise CudaError("cudaStreamBeginCapture", "cudaErrorIllegalState")
        self._capture = _Capture(stream.handle)
        try:
            enqueue()
        finally:  # as CudaPythonApi: the capture always ends, an invalidated one yields no graph
            capture, self._capture = self._capture, None
        if capture.invalidated:  # enqueue's own error, where it raised one, goes up instead (as CudaPythonApi)
            raise CudaError("cudaStreamEndCapture", CAPTURE_INVALIDATED)
        self._log.append(("capture", len(capture.nodes)))
        return FakeGraph(self, capture.nodes)

    def close(self) -> None:
        self._closed = True


# ---- a fake TensorRT: the engine is the ONNX graph, the context runs it with ONNX Runtime -----------------


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


DTYPES = {"float32": DataType.FLOAT, "float16": DataType.HALF, "int8": DataType.INT8, "int32": DataType.INT32}
DTYPES.update({"bool": DataType.BOOL, "uint8": DataType.UINT8, "int64": DataType.INT64})
NUMPY = {member: np.dtype(name) for name, member in DTYPES.items()}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class CudaGraphStrategy(enum.Enum):  # TensorRT-RTX only
    DISABLED = 0
    WHOLE_GRAPH_CAPTURE = 1


class EngineStat(enum.Enum):  # TensorRT-RTX only (10.13 has no get_engine_stat)
    TOTAL_WEIGHTS_SIZE = 0
    STRIPPED_WEIGHTS_SIZE = 1


class ExecutionContextAllocationStrategy(enum.Enum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class FakeLogger:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def errors(self) -> list[str]:
        return self.messages

    def clear(self) -> None:
        self.messages.clear()


class FakeContext:
    """Runs the engine's graph with ONNX Runtime on the arrays at the bound addresses, read and written with
    the engine's dtypes. Like TensorRT, the first execute does deferred setup that cannot be captured; unlike
    it, a state read from a buffer older than the one the frame overwrites fails (the ping-pong out of phase:
    real TensorRT would silently compute from the stale state)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self._cuda: FakeCuda = engine._cuda
        self._addresses: dict[str, int] = {}
        self._shapes = dict(engine._shapes)
        self._set_up = False

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self._shapes:  # as TensorRT: no such tensor in this engine
            return False
        self._cuda._log.append(("set_tensor_address", name, ptr))
        self._addresses[name] = ptr
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int)
        cuda = self._cuda
        if not self._set_up:
            if cuda._capturing(stream_handle):  # TensorRT reports the refused setup by returning False
                assert cuda._capture is not None
                cuda._capture.invalidated = True
                return False
            self._set_up = True
        bound = dict(self._addresses)  # a captured graph keeps the addresses of its capture
        captured = cuda._enqueue(stream_handle, lambda: self._run(bound))
        if not captured:
            cuda._tick("execute")
        cuda._log.append(("captured" if captured else "execute", bound))
        return True

    def _run(self, bound: dict[str, int]) -> None:
        engine, cuda = self.engine, self._cuda
        assert len(set(bound.values())) == len(bound), "two tensors bound to one buffer"
        assert set(bound) == set(self._shapes), "every I/O tensor bound, nothing else"
        _check_state_order(cuda, bound)
        feeds = {name: self._tensor(bound, name) for name in engine._inputs}
        results = engine._session.run(list(engine._outputs), feeds)
        for name, value in zip(engine._outputs, results, strict=True):
            out = self._tensor(bound, name)
            assert value.dtype == out.dtype, (name, value.dtype, out.dtype)
            out[...] = value
            cuda._wrote(bound[name])

    def _tensor(self, bound: dict[str, int], name: str) -> np.ndarray:
        """The buffer bound to `name` as the engine's dtype and the context's shape (an input is copied, so
        ONNX Runtime never aliases device memory)."""
        dtype = NUMPY[self.engine.get_tensor_dtype(name)]
        spec = TensorSpec(name, self._shapes[name], dtype.name)
        return self._cuda._array(bound[name], spec)


def _check_state_order(cuda: FakeCuda, bound: dict[str, int]) -> None:
    """Each state_in.k must hold the newest of its pair: written after (or zeroed after) the buffer state_out.k
    is about to overwrite. Two never-written buffers (the warm-up before capture) pass."""
    for name, ptr in bound.items():
        if not name.startswith("state_in."):
            continue
        out = "state_out." + name.removeprefix("state_in.")
        read, overwritten = cuda._writes.get(ptr, 0), cuda._writes.get(bound[out], 0)
        assert read >= overwritten, f"stale state: {name} reads a buffer older than the one {out} overwrites"


class FakeRuntimeCache:
    def __init__(self, store: dict[str, Any]) -> None:
        self._store = store

    def deserialize(self, blob: bytes) -> bool:
        self._store["loaded"] = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return b"jit-kernels"

    def reset(self) -> bool:
        return True


class FakeRuntimeConfig:
    """IRuntimeConfig: on 10.13 only the allocation strategy; TensorRT-RTX adds the runtime cache and the CUDA
    graph strategy (instance attributes, so a 10.13 config has no such names at all)."""

    def __init__(self, store: dict[str, Any], rtx: bool) -> None:
        self._store = store
        self._strategy = ExecutionContextAllocationStrategy.STATIC
        self._cache: FakeRuntimeCache | None = None
        if rtx:
            self.cuda_graph_strategy = CudaGraphStrategy.DISABLED
            self.create_runtime_cache = self._create_runtime_cache
            self.set_runtime_cache = self._set_runtime_cache
            self.get_runtime_cache = self._get_runtime_cache

    def get_execution_context_allocation_strategy(self) -> ExecutionContextAllocationStrategy:
        return self._strategy

    def set_execution_context_allocation_strategy(
        self, strategy: ExecutionContextAllocationStrategy = ExecutionContextAllocationStrategy.STATIC
    ) -> None:
        self._strategy = strategy

    def _create_runtime_cache(self) -> FakeRuntimeCache:
        return FakeRuntimeCache(self._store)

    def _set_runtime_cache(self, cache: FakeRuntimeCache) -> bool:
        self._cache = self._store["cache"] = cache
        return True

    def _get_runtime_cache(self) -> FakeRuntimeCache | None:
        return self._cache


class FakeEngine:
    """The engine of a plan that is an ONNX graph: its I/O, and a session that runs it. The names each kind
    (KINDS) has are set per instance: device_memory_size (trt86, trt10*), device_memory_size_v2 (all but
    trt86), create_runtime_config (trt10_config, rtx), get_engine_stat (rtx). Store options: `device_memory`
    (bytes per execution context), `retype` ({name: dtype}: an engine whose I/O differs from its record),
    `extra_outputs` ([(name, shape, dtype)])."""

    def __init__(self, cuda: FakeCuda, model: onnx.ModelProto, kind: str, store: dict[str, Any]) -> None:
        import onnxruntime as ort

        self._cuda, self._kind, self._store = cuda, kind, store
        self._weights = onnx_weight_bytes(model)
        inputs, outputs = graph_io(model)
        self._inputs, self._outputs = list(inputs), list(outputs)
        retype = store.get("retype", {})
        io = [(s, TensorIOMode.INPUT) for s in inputs.values()] + [(s, TensorIOMode.OUTPUT) for s in outputs.values()]
        io += [(TensorSpec(n, s, d), TensorIOMode.OUTPUT) for n, s, d in store.get("extra_outputs", [])]
        self._io = [(TensorSpec(s.name, s.shape, retype.get(s.name, s.dtype)), mode) for s, mode in io]
        self._shapes = {s.name: tuple(s.shape) for s, _ in self._io}
        self.num_io_tensors = len(self._io)
        memory = int(store.get("device_memory", DEVICE_MEMORY))
        if kind != "rtx":  # 11.x and RTX removed it; 10.x keeps it, deprecated
            self.device_memory_size = memory
        if kind != "trt86":
            self.device_memory_size_v2 = memory
        if kind in ("trt10_config", "rtx"):
            self.create_runtime_config = self._create_runtime_config
        if kind == "rtx":
            self.get_engine_stat = self._get_engine_stat
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # sessions share 2 cores
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return dict((s.name, m) for s, m in self._io)[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DTYPES[dict((s.name, s.dtype) for s, _ in self._io)[name]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def create_execution_context(self, runtime_config: FakeRuntimeConfig | None = None) -> FakeContext:
        self._store["context_config"] = runtime_config
        return FakeContext(self)

    def _create_runtime_config(self) -> FakeRuntimeConfig:
        return FakeRuntimeConfig(self._store, rtx=self._kind == "rtx")

    def _get_engine_stat(self, stat: EngineStat) -> int:
        return self._weights if stat == EngineStat.TOTAL_WEIGHTS_SIZE else 0


def fake_tensorrt(cuda: FakeCuda, kind: str = "trt10", **store: Any) -> TensorRT:
    """A TensorRT of `kind` (KINDS) whose Runtime deserializes a fake plan (fake_engine_file: the ONNX graph's
    bytes) into a FakeEngine; a plan that is no ONNX graph deserializes to None, as a damaged one does.
    `store` (module._store) holds the engine options (FakeEngine) and what the fakes report back."""
    store.setdefault("deserialized", 0)

    class Runtime:
        def __init__(self, logger: FakeLogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> FakeEngine | None:
            store["deserialized"] += 1
            try:
                model = onnx.load_from_string(bytes(serialized_engine))
            except Exception:  # protobuf's DecodeError: not a plan
                return None
            return FakeEngine(cuda, model, kind, store)

    flavour, version = KINDS[kind]
    module = SimpleNamespace(
        Runtime=Runtime,
        TensorIOMode=TensorIOMode,
        DataType=DataType,
        __version__=version,
        _store=store,
    )
    if kind in ("trt10_config", "rtx"):  # IRuntimeConfig's enum (10.x)
        module.ExecutionContextAllocationStrategy = ExecutionContextAllocationStrategy
    if kind == "rtx":
        module.CudaGraphStrategy, module.EngineStat = CudaGraphStrategy, EngineStat
    return TensorRT(module=module, flavour=flavour, version=version, logger=FakeLogger())


def fake_engine_file(
    path: Path, graph: Path, trt: TensorRT, *, contract: Contract | None = None, **overrides: Any
) -> Path:
    """A fake plan of `graph` (its bytes, which the fake runtime deserializes) plus a build record that
    check_engine accepts on FAKE_GPU, recording `contract` (default: the graph's)."""
    contract = contract or read_onnx_contract(graph)
    path.write_bytes(graph.read_bytes())
    payload = {
        "sidecar_version": SIDECAR_VERSION,
        "engine": {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)},
        "model": contract.model,
        "precision": contract.precision,
        "input_hw": [contract.height, contract.width],
        "tensorrt": {"flavour": trt.flavour, "version": trt.version},
        "compute_capabilities": [FAKE_GPU.compute_capability],
        "contract": json.loads(contract.to_json()),
        "device_memory": {"bytes": None, "build_log": {"weights_bytes": onnx_weight_bytes(graph)}},
    }
    payload.update(overrides)
    write_sidecar(sidecar_path(path), payload)
    return path


def make_fake_runner(
    tmp_path: Path,
    kind: str = "trt10",
    *,
    graph: Path | None = None,
    store: dict | None = None,
    record: dict | None = None,
    **options: Any,
) -> tuple[TensorRTRunner, FakeCuda]:
    """A runner of `graph` (default: the one-conv state graph) through `<precision>.engine` in tmp_path;
    `store`: the fake TensorRT's options (FakeEngine), `record`: fields of the build record to override."""
    graph = graph or _made(tmp_path / "model.onnx", tiny_state_graph)
    contract, cuda = read_onnx_contract(graph), FakeCuda()
    trt = fake_tensorrt(cuda, kind, **(store or {}))
    engine = fake_engine_file(tmp_path / f"{contract.precision}.engine", graph, trt, **(record or {}))
    return TensorRTRunner(contract, engine, flavour=trt.flavour, cuda=cuda, trt=trt, **options), cuda


def make_fake_pair(
    tmp_path: Path,
    kind: str = "trt10",
    *,
    graphs: tuple[Path, Path] | None = None,
    keyframe: Contract | None = None,
    store: dict | None = None,
    **options: Any,
) -> tuple[TensorRTRunner, FakeCuda]:
    """The update engine `<precision>.engine` and, beside it, `keyframe.<precision>.engine` (recording
    `keyframe`, by default its graph's contract), named in the update engine's record as engine/__main__.py
    does, from `graphs` (update, keyframe; default: the tiny pair); the runner gets the recorded contract."""
    update_graph, keyframe_graph = graphs or tiny_pair_graphs(tmp_path)
    update = read_onnx_contract(update_graph)
    name = f"{update.precision}.engine"
    update = update.with_changes(schedule={**update.schedule, "keyframe_graph": f"keyframe.{name}"})
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda, kind, **(store or {}))
    engine = fake_engine_file(tmp_path / name, update_graph, trt, contract=update)
    fake_engine_file(tmp_path / f"keyframe.{name}", keyframe_graph, trt, contract=keyframe)
    return TensorRTRunner(update, engine, flavour=trt.flavour, cuda=cuda, trt=trt, **options), cuda


def _made(path: Path, make: Callable[[Path], object]) -> Path:
    """`path`, made by `make` unless it exists."""
    if not path.is_file():
        make(path)
    return path


# ---- driving runners ----------------------------------------------------------------------------------------


def run_stream(
    runner: Runner,
    images: list[np.ndarray],
    flow: list[np.ndarray] | None = None,
    reset_before: tuple[int, ...] = (),
) -> tuple[list[str], list[np.ndarray]]:
    """(kind, labels) per frame, the flow written into runner.flow before each frame as the stream does."""
    kinds, labels = [], []
    for t, image in enumerate(images):
        if t in reset_before:
            runner.reset_state()
        runner.image[...] = image
        if flow is not None:
            assert runner.flow is not None
            runner.flow[...] = flow[t]
        kinds.append(runner.infer().kind)
        labels.append(runner.labels.copy())
    return kinds, labels


def run_pair(
    runner: Runner, images: list[np.ndarray], flow: list[np.ndarray], reset_before: tuple[int, ...] = ()
) -> tuple[list[str], list[np.ndarray]]:
    return run_stream(runner, images, flow, reset_before)


def run_frames(runner: TensorRTRunner, images: list[np.ndarray]) -> list[tuple[np.ndarray, tuple[int, ...], Any]]:
    """(labels, state addresses after the frame, phase times) per frame."""
    out = []
    for image in images:
        runner.image[...] = image
        times = runner.infer()
        out.append((runner.labels.copy(), runner.state_addresses(), times))
    return out


def ort_labels(graph: tuple[Path, Contract], images: list[np.ndarray]) -> list[np.ndarray]:
    path, contract = graph
    with OnnxRuntimeRunner(contract, path) as ort:
        return run_stream(ort, images)[1]


def frame_slices(log: list[tuple]) -> list[list[tuple]]:
    """The log cut into frames: each frame starts at the first event record after the previous sync."""
    slices, current = [], None
    for entry in log:
        if entry[0] == "record" and current is None:
            current = []
        if current is not None:
            current.append(entry)
            if entry[0] == "sync":
                slices.append(current)
                current = None
    return slices


class FakeCudart:
    """cuda-python's calling convention ((err, *values) tuples) over ctypes host memory, to drive CudaPythonApi."""

    # CUDA's own names, hence mixedCase
    cudaError_t = enum.Enum("cudaError_t", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2})  # noqa: N815
    cudaMemcpyKind = enum.Enum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})  # noqa: N815

    def __init__(self) -> None:
        self._blocks: dict[int, Any] = {}
        self._calls: list[tuple] = []

    def _alloc(self, nbytes: int) -> int:
        block = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(block)
        self._blocks[ptr] = block
        return ptr

    def cudaSetDevice(self, device: int) -> tuple:  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size: int) -> tuple:  # noqa: N802
        self._calls.append(("cudaMallocHost", size))
        return self.cudaError_t.cudaSuccess, self._alloc(size)

    def cudaFreeHost(self, ptr: int) -> tuple:  # noqa: N802
        del self._blocks[ptr]
        return (self.cudaError_t.cudaSuccess,)

    def cudaMalloc(self, size: int) -> tuple:  # noqa: N802
        if size > 1 << 20:
            return self.cudaError_t.cudaErrorMemoryAllocation, None
        return self.cudaError_t.cudaSuccess, self._alloc(size)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:  # noqa: N802
        ctypes.memmove(dst, src, count)
        self._calls.append(("cudaMemcpyAsync", kind.name, count))
        return (self.cudaError_t.cudaSuccess,)
