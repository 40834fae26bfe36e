"""The fakes the TensorRT runner's CPU tests drive it through: a numpy-backed CudaApi that logs every call
(FakeCuda), a fake TensorRT whose execution context computes the test graph from the addresses bound to it,
cuda-python's calling convention over ctypes memory (FakeCudart), and the contract graphs they run (a one-conv
state graph and an Accel-shaped keyframe pair, made with onnx.helper, no torch)."""

from __future__ import annotations

import enum
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tempseg.common.contract import Contract, StateSpec, TensorSpec, read_onnx_contract, set_metadata
from tempseg.common.io import sha256_file
from tempseg.engine.sidecar import SIDECAR_VERSION, sidecar_path, write_sidecar
from tempseg.engine.trt import GpuInfo, TensorRT
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tempseg.runtime.cuda import CudaApi, CudaGraph, Event, Stream

H, W, CLASSES = 8, 8, 3
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
FAKE_GPU = GpuInfo("Fake RTX", "8.9", 8 << 30)
# the fake clock: milliseconds each logged operation takes, so PhaseTimes are exact
COST_MS = {"htod": 1.0, "execute": 5.0, "launch": 5.0, "dtoh": 2.0}


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


def reference_frame(image: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph in numpy: (logits, labels, next state)."""
    weight, mix = _weights()
    logits = np.einsum("kc,nchw->nkhw", weight[:, :, 0, 0], image) + mix * state
    return logits, logits.argmax(1).astype(np.int32), np.maximum(logits, 0)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, H, W)).astype(np.float32) for _ in range(n)]


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


def reference_pair_frame(
    role: str, image: np.ndarray, state: np.ndarray, flow: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pair in numpy: (logits, labels, next state) of the keyframe graph or the update graph."""
    keyframe_weight, gain = _pair_weights()
    if role == "keyframe":
        logits = np.einsum("kc,nchw->nkhw", keyframe_weight[:, :, 0, 0], image)
    else:
        logits = reference_frame(image, state)[0] + gain * flow.sum(dtype=np.float32)
    return logits, logits.argmax(1).astype(np.int32), np.maximum(logits, 0)


def flows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return [rng.standard_normal(FLOW.shape).astype(np.float32) for _ in range(n)]


# ---- a numpy-backed CudaApi that logs every call ----------------------------------------------------------


class FakeStream(Stream):
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        self.cuda, self.index, self.closed = cuda, index, False

    @property
    def handle(self) -> int:
        return 0x5000 + self.index

    def synchronize(self) -> None:
        self.cuda.log.append(("sync",))

    def close(self) -> None:
        self.closed = True


class FakeEvent(Event):
    def __init__(self, cuda: FakeCuda, index: int) -> None:
        self.cuda, self.index, self.time, self.closed = cuda, index, None, False

    def record(self, stream: Stream) -> None:
        self.time = self.cuda.clock
        self.cuda.log.append(("record", self.index))

    def synchronize(self) -> None:
        self.cuda.log.append(("event_sync", self.index))

    def elapsed_ms(self, end: Event) -> float:
        assert isinstance(end, FakeEvent)
        assert self.time is not None
        assert end.time is not None
        return end.time - self.time

    def close(self) -> None:
        self.closed = True


class FakeGraph(CudaGraph):
    def __init__(self, cuda: FakeCuda, calls: list[Callable[[], None]]) -> None:
        self.cuda, self.calls = cuda, calls

    def launch(self, stream: Stream) -> None:
        self.cuda.tick("launch")
        for call in self.calls:
            call()

    def close(self) -> None:
        self.calls = []


class FakeCuda(CudaApi):
    """Device memory = numpy byte arrays at made-up addresses; streams run eagerly; `log` records every call."""

    name = "fake"

    def __init__(self, total: int = 1 << 30) -> None:
        self.memory: dict[int, np.ndarray] = {}
        self.host: dict[int, np.ndarray] = {}
        self.log: list[tuple] = []
        self.clock = 0.0
        self.total = total
        self.capturing: list[Callable[[], None]] | None = None
        self.closed = False
        self._next = 0x10000

    def tick(self, op: str) -> None:
        self.clock += COST_MS.get(op, 0.0)

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        block = self.memory[ptr]  # only whole buffers are ever addressed: a bad pointer is a KeyError
        assert nbytes <= block.nbytes, (ptr, nbytes, block.nbytes)
        return block[:nbytes]

    def malloc(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + max(nbytes, 1) + 0x1000
        self.memory[ptr] = np.full(nbytes, 0xAB, np.uint8)  # garbage, as cudaMalloc gives
        self.log.append(("malloc", ptr, nbytes))
        return ptr

    def free(self, ptr: int) -> None:
        del self.memory[ptr]
        self.log.append(("free", ptr))

    def host_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        array = np.zeros(shape, dtype)
        self.host[array.ctypes.data] = array
        self.log.append(("host_alloc", array.nbytes))
        return array

    def free_host(self, array: np.ndarray) -> None:
        del self.host[array.ctypes.data]

    def create_stream(self) -> Stream:
        return FakeStream(self, len(self.log))

    def create_event(self) -> Event:
        self.log.append(("event",))
        return FakeEvent(self, sum(1 for entry in self.log if entry[0] == "event"))

    def memcpy_htod_async(self, dst_ptr: int, host: np.ndarray, stream: Stream) -> None:
        self.view(dst_ptr, host.nbytes)[:] = host.reshape(-1).view(np.uint8)
        self.tick("htod")
        self.log.append(("htod", dst_ptr, host.nbytes))

    def memcpy_dtoh_async(self, host: np.ndarray, src_ptr: int, stream: Stream) -> None:
        host.reshape(-1).view(np.uint8)[:] = self.view(src_ptr, host.nbytes)
        self.tick("dtoh")
        self.log.append(("dtoh", src_ptr, host.nbytes))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Stream) -> None:
        self.view(ptr, nbytes)[:] = value
        self.log.append(("memset", ptr, nbytes))

    def mem_get_info(self) -> tuple[int, int]:
        used = sum(block.nbytes for block in self.memory.values())
        return self.total - used, self.total

    def capture_graph(self, stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        self.capturing = []
        try:
            enqueue()
            calls = self.capturing
        finally:
            self.capturing = None
        self.log.append(("capture", len(calls)))
        return FakeGraph(self, calls)

    def close(self) -> None:
        self.closed = True

    def array(self, ptr: int, spec: TensorSpec | StateSpec) -> np.ndarray:
        """The device buffer at `ptr` as a typed array."""
        return self.view(ptr, spec.nbytes).view(np.dtype(spec.dtype)).reshape(spec.shape)


# ---- a fake TensorRT whose context computes the test graph from the bound addresses -----------------------


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT32 = 3


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class FakeLogger:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def errors(self) -> list[str]:
        return self.messages

    def clear(self) -> None:
        self.messages.clear()


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.cuda, self.addresses = engine, engine.cuda, {}

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine.shapes:  # as TensorRT: no such tensor in this engine
            return False
        self.cuda.log.append(("set_tensor_address", name, ptr))
        self.addresses[name] = ptr
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.engine.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.engine.shapes[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int)
        bound = dict(self.addresses)  # a captured graph keeps the addresses of its capture
        if self.cuda.capturing is not None:
            self.cuda.capturing.append(lambda: self._run(bound))
            self.cuda.log.append(("captured", bound))
        else:
            self.cuda.tick("execute")
            self._run(bound)
            self.cuda.log.append(("execute", bound))
        return True

    def _run(self, bound: dict[str, int]) -> None:
        c, cuda = self.engine.contract, self.cuda
        state = c.states[0]
        assert len(set(bound.values())) == len(bound), "two tensors bound to one buffer"
        assert set(bound) == set(self.engine.shapes), "every I/O tensor bound, nothing else"
        image = cuda.array(bound["image"], c.image)
        carried = cuda.array(bound[state.input], state) if c.reads_states else None
        if c.role == "frame":
            logits, labels, nxt = reference_frame(image, carried)
        else:
            flow = cuda.array(bound[c.flow.name], c.flow) if c.flow is not None else None
            logits, labels, nxt = reference_pair_frame(c.role, image, carried, flow)
        cuda.array(bound["logits"], c.logits)[:] = logits
        cuda.array(bound["labels"], c.labels)[:] = labels
        cuda.array(bound[state.output], state)[:] = nxt


class FakeRuntimeCache:
    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store

    def deserialize(self, blob: bytes) -> bool:
        self.store["loaded"] = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return b"jit-kernels"


class FakeRuntimeConfig:
    def __init__(self, store: dict[str, Any], rtx: bool) -> None:
        self.store = store
        if rtx:  # only TensorRT-RTX has these
            self.cuda_graph_strategy = "DISABLED"
            self.create_runtime_cache = lambda: FakeRuntimeCache(store)

    def set_runtime_cache(self, cache: FakeRuntimeCache) -> bool:
        self.store["cache"] = cache
        return True


class FakeEngine:
    """The engine of the test graph. kind: trt86 (device_memory_size only), trt10 (_v2), rtx (runtime config)."""

    def __init__(self, cuda: FakeCuda, contract: Contract, kind: str, store: dict[str, Any]) -> None:
        self.cuda, self.contract, self.kind, self.store = cuda, contract, kind, store
        specs = [t for t in (contract.image, contract.flow) if t is not None]
        if contract.reads_states:  # a keyframe engine has no state inputs
            specs += [TensorSpec(s.input, s.shape, s.dtype) for s in contract.states]
        outs = [contract.logits, contract.labels, *(TensorSpec(s.output, s.shape, s.dtype) for s in contract.states)]
        self.io = [(s, TensorIOMode.INPUT) for s in specs] + [(s, TensorIOMode.OUTPUT) for s in outs]
        self.io += [(TensorSpec(n, s, d), TensorIOMode.OUTPUT) for n, s, d in store.get("extra_outputs", [])]
        self.shapes = {s.name: tuple(s.shape) for s, _ in self.io}
        self.num_io_tensors = len(self.io)
        attr = "device_memory_size" if kind == "trt86" else "device_memory_size_v2"
        setattr(self, attr, 123_456)
        if kind == "rtx":
            self.create_runtime_config = lambda: FakeRuntimeConfig(store, rtx=True)

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return dict((s.name, m) for s, m in self.io)[name]

    def get_tensor_dtype(self, name: str) -> DataType:
        names = {"float32": DataType.FLOAT, "float16": DataType.HALF, "int32": DataType.INT32}
        return names[dict((s.name, s.dtype) for s, _ in self.io)[name]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def create_execution_context(self, config: FakeRuntimeConfig | None = None) -> FakeContext:
        self.store["context_config"] = config
        return FakeContext(self)


def fake_tensorrt(cuda: FakeCuda, contract: Contract, kind: str = "trt10", **store: Any) -> TensorRT:
    """A TensorRT object whose Runtime deserializes a fake plan (fake_engine_file: a contract's JSON) into the
    engine of that contract (store `engine_contract`: an engine that is not what its record says)."""
    store.setdefault("deserialized", 0)

    class Runtime:
        def __init__(self, logger: FakeLogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> FakeEngine:
            store["deserialized"] += 1
            planned = Contract.from_json(data.decode()) if data.startswith(b"{") else contract
            return FakeEngine(cuda, store.get("engine_contract", planned), kind, store)

    module = SimpleNamespace(Runtime=Runtime, TensorIOMode=TensorIOMode, store=store)
    if kind == "rtx":
        module.CudaGraphStrategy = SimpleNamespace(WHOLE_GRAPH_CAPTURE="WHOLE_GRAPH_CAPTURE")
    flavour, version = ("tensorrt_rtx", "1.7.1.116") if kind == "rtx" else ("tensorrt", "10.3.0")
    return TensorRT(module=module, flavour=flavour, version=version, logger=FakeLogger())


def fake_engine_file(path: Path, contract: Contract, trt: TensorRT, **overrides: Any) -> Path:
    """Engine bytes (the contract, which the fake runtime deserializes) plus a build record that check_engine
    accepts for `contract` on FAKE_GPU."""
    path.write_bytes(contract.to_json().encode())
    payload = {
        "sidecar_version": SIDECAR_VERSION,
        "engine": {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)},
        "model": contract.model,
        "precision": contract.precision,
        "input_hw": [contract.height, contract.width],
        "tensorrt": {"flavour": trt.flavour, "version": trt.version},
        "compute_capabilities": [FAKE_GPU.compute_capability],
        "contract": json.loads(contract.to_json()),
        "device_memory": {"bytes": None, "build_log": {"weights_bytes": 36}},
    }
    payload.update(overrides)
    write_sidecar(sidecar_path(path), payload)
    return path


def make_fake_runner(tmp_path: Path, kind: str = "trt10", **options: Any) -> tuple[TensorRTRunner, FakeCuda]:
    contract, cuda = tiny_contract(), FakeCuda()
    trt = fake_tensorrt(cuda, contract, kind)
    engine = fake_engine_file(tmp_path / "fp32.engine", contract, trt)
    return TensorRTRunner(contract, engine, flavour=trt.flavour, cuda=cuda, trt=trt, **options), cuda


def make_fake_pair(
    tmp_path: Path, kind: str = "trt10", *, keyframe: Contract | None = None, **options: Any
) -> tuple[TensorRTRunner, FakeCuda]:
    """The update engine fp32.engine and, beside it, keyframe.fp32.engine (of `keyframe`, by default the pair's),
    named in the update engine's record as engine/__main__.py does; the runner gets the recorded contract."""
    update, keyframe_contract = pair_contracts("keyframe.fp32.engine")
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda, update, kind)
    engine = fake_engine_file(tmp_path / "fp32.engine", update, trt)
    fake_engine_file(tmp_path / "keyframe.fp32.engine", keyframe or keyframe_contract, trt)
    return TensorRTRunner(update, engine, flavour=trt.flavour, cuda=cuda, trt=trt, **options), cuda


def run_pair(
    runner: Runner, images: list[np.ndarray], flow: list[np.ndarray], reset_before: tuple[int, ...] = ()
) -> tuple[list[str], list[np.ndarray]]:
    """(kind, labels) per frame, the flow written into runner.flow before each frame as the stream does."""
    kinds, labels = [], []
    for t, (image, f) in enumerate(zip(images, flow, strict=True)):
        if t in reset_before:
            runner.reset_state()
        runner.image[...] = image
        runner.flow[...] = f
        kinds.append(runner.infer().kind)
        labels.append(runner.labels.copy())
    return kinds, labels


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
        result = []
        for image in images:
            ort.image[...] = image
            ort.infer()
            result.append(ort.labels.copy())
    return result


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
        import ctypes

        self.ctypes, self.blocks, self.calls = ctypes, {}, []

    def _alloc(self, nbytes: int) -> int:
        block = self.ctypes.create_string_buffer(nbytes)
        ptr = self.ctypes.addressof(block)
        self.blocks[ptr] = block
        return ptr

    def cudaSetDevice(self, device: int) -> tuple:  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, nbytes: int) -> tuple:  # noqa: N802
        self.calls.append(("cudaMallocHost", nbytes))
        return self.cudaError_t.cudaSuccess, self._alloc(nbytes)

    def cudaFreeHost(self, ptr: int) -> tuple:  # noqa: N802
        del self.blocks[ptr]
        return (self.cudaError_t.cudaSuccess,)

    def cudaMalloc(self, nbytes: int) -> tuple:  # noqa: N802
        if nbytes > 1 << 20:
            return self.cudaError_t.cudaErrorMemoryAllocation, None
        return self.cudaError_t.cudaSuccess, self._alloc(nbytes)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:  # noqa: N802
        self.ctypes.memmove(dst, src, count)
        self.calls.append(("cudaMemcpyAsync", kind.name, count))
        return (self.cudaError_t.cudaSuccess,)
