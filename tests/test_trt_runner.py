"""runtime/cuda.py and the TensorRT runner: what runs without a GPU, and the GPU checks (marker `gpu`).

CI has no GPU, so the runner is driven through `FakeCuda` (a CudaApi whose "device memory" is numpy arrays and
whose every call is logged) and a fake TensorRT whose execution context computes the test graph in numpy from
the addresses bound to it. The graph is a one-conv contract graph made with onnx.helper (no torch): its state
feeds back into the logits, so a wrong buffer swap changes the labels, which are compared with ONNX Runtime
frame by frame; a keyframe pair (an update graph reading image, flow and state, a keyframe graph reading
the image only) against ONNX Runtime's pair runner. Refusing engines is checked on a real TensorRT-RTX
engine (built on the CPU) before any deserialization. The `gpu` tests run the real thing and skip, with the
reason, where no GPU is.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tempseg.common.contract import Contract, StateSpec, TensorSpec, read_onnx_contract, set_metadata
from tempseg.common.errors import UserError
from tempseg.common.io import sha256_file
from tempseg.engine.sidecar import SIDECAR_VERSION, read_sidecar, sidecar_contract, sidecar_path, write_sidecar
from tempseg.engine.trt import GpuInfo, TensorRT, cuda_gpu, load_tensorrt
from tempseg.runtime import cuda as rc
from tempseg.runtime.backends import trt_runner
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tempseg.runtime.cuda import CudaApi, CudaError, CudaGraph, Event, Stream, cuda_device_count
from tests.conftest import run_python

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


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> tuple[Path, Contract]:
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    return path, tiny_state_graph(path)


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


@pytest.fixture(scope="module")
def pair_graphs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_pair_graphs(tmp_path_factory.mktemp("pair"))


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


@pytest.fixture
def fake_gpu(monkeypatch) -> GpuInfo:
    monkeypatch.setattr(trt_runner, "cuda_gpu", lambda: FAKE_GPU)
    return FAKE_GPU


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


# ---- runtime/cuda.py without a GPU ---------------------------------------------------------------------


def test_cuda_device_count_is_zero_here_and_never_raises(monkeypatch):
    if cuda_gpu() is None:
        assert cuda_device_count() == 0  # cuda-python is installed; the driver is not
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    assert cuda_device_count() == 0

    class Broken:
        def cudaGetDeviceCount(self) -> tuple:  # noqa: N802 (CUDA's name)
            raise RuntimeError("driver exploded")

    monkeypatch.setattr(rc, "_import_cudart", lambda: Broken())
    assert cuda_device_count() == 0


def test_no_cuda_binding_is_a_user_error_naming_what_to_install(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UserError, match=r"needs a CUDA binding .*`pip install cuda-python`.*pycuda"):
        rc.default_cuda_api()


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python not installed")
def test_cuda_python_errors_carry_the_cuda_error_name():
    if cuda_device_count() > 0:
        pytest.skip("a GPU is visible: cudaSetDevice succeeds here")
    with pytest.raises(CudaError, match=r"^cudaSetDevice failed: cudaError\w+$") as err:
        rc.CudaPythonApi()
    assert err.value.call == "cudaSetDevice"
    assert err.value.error in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")


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


def test_cuda_python_api_wraps_pinned_memory_and_raises_cuda_error_names():
    api = object.__new__(rc.CudaPythonApi)  # skip __init__'s cudaSetDevice: no driver here
    api.rt, api._pinned = FakeCudart(), {}
    host = api.host_array((2, 3), np.float32)
    assert (host.shape, host.dtype, host.flags.writeable, host.sum()) == ((2, 3), np.float32, True, 0.0)
    assert api._pinned == {host.ctypes.data: 24}  # the array is the pinned block itself, no copy
    host[...] = np.arange(6).reshape(2, 3)
    device = api.device_buffer(host.nbytes)
    back = api.host_array((2, 3), np.float32)
    stream = SimpleNamespace(handle=0)
    api.memcpy_htod_async(device.ptr, host, stream)
    api.memcpy_dtoh_async(back, device.ptr, stream)
    np.testing.assert_array_equal(back, host)
    kinds = [c[1] for c in api.rt.calls if c[0] == "cudaMemcpyAsync"]
    assert kinds == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        api.malloc(2 << 20)
    with pytest.raises(ValueError, match="not an array from this api"):
        api.free_host(host[1:])
    for array in (host, back):
        api.free_host(array)
    assert api._pinned == {}


# ---- imports and refusals -------------------------------------------------------------------------------


def test_runtime_imports_and_builds_the_runner_without_tensorrt_cuda_or_torch(tmp_path):
    code = f"""
import sys
for name in ("torch", "tensorrt", "tensorrt_rtx", "cuda", "pycuda"):
    sys.modules[name] = None
from tempseg.runtime import cuda, session
from tempseg.common.errors import UserError
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tests.test_trt_runner import tiny_contract
assert cuda.cuda_device_count() == 0 and session.select
runner = TensorRTRunner(tiny_contract(), {str(tmp_path / "fp16.engine")!r}, flavour="tensorrt_rtx")
try:
    runner.activate()
except UserError as err:
    assert "TensorRT is not importable" in str(err) and "pip install" in str(err), err
else:
    raise AssertionError("activate() without TensorRT must fail")
loaded = {{m for m in sys.modules if sys.modules[m] is not None}}
assert not {{"torch", "tensorrt", "tensorrt_rtx", "cuda", "pycuda"}} & loaded, sorted(loaded)
"""
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError, match="flavour must be one of"):
        TensorRTRunner(tiny_contract(), "x.engine", flavour="onnxruntime")


@pytest.fixture(scope="module")
def rtx_engine(graph, tmp_path_factory) -> Path:
    """A real TensorRT-RTX engine of the test graph, built on the CPU by engine/."""
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
    from tempseg.engine.build import BuildOptions, build_engine

    path = tmp_path_factory.mktemp("engine") / "fp32.engine"
    build_engine(load_tensorrt("tensorrt_rtx"), graph[0], path, BuildOptions(timing_cache=None, inspect=False))
    return path


@pytest.fixture
def no_deserialize(monkeypatch) -> list[str]:
    """TensorRT-RTX's Runtime replaced by one that records being made; no CUDA api may be created either."""
    made: list[str] = []
    rtx = load_tensorrt("tensorrt_rtx").module
    monkeypatch.setattr(rtx, "Runtime", lambda logger: made.append("Runtime") or pytest.fail("deserialized"))
    monkeypatch.setattr(trt_runner, "default_cuda_api", lambda: made.append("cuda") or pytest.fail("cuda api made"))
    return made


@pytest.mark.rtx
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "fcresnet34_t66"}, "model differs: expected fcresnet34_t66, engine has tiny_state"),
        ({"precision": "fp16"}, "precision differs: expected fp16, engine has fp32"),
        (
            {"image": TensorSpec("image", (1, 3, 16, 16), "float32")},
            r"input size \(H, W\) differs: expected 16x16, engine has 8x8",
        ),
    ],
)
def test_activate_refuses_a_mismatched_engine_before_deserializing(rtx_engine, no_deserialize, change, message):
    runner = TensorRTRunner(tiny_contract().with_changes(**change), rtx_engine, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match=message) as err:
        runner.activate()
    assert err.value.path == str(rtx_engine)
    assert no_deserialize == []
    assert runner.image.size == 0  # nothing allocated


@pytest.mark.rtx
def test_activate_refuses_a_truncated_engine(rtx_engine, no_deserialize, tmp_path):
    damaged = tmp_path / rtx_engine.name
    data = rtx_engine.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    sidecar_path(damaged).write_bytes(sidecar_path(rtx_engine).read_bytes())
    runner = TensorRTRunner(tiny_contract(), damaged, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match=rf"engine size differs: expected {len(data)} bytes .*truncated"):
        runner.activate()
    assert no_deserialize == []


@pytest.mark.rtx
def test_activate_without_a_gpu_says_so_after_the_checks(rtx_engine, no_deserialize):
    if cuda_gpu() is not None:
        pytest.skip("a GPU is visible")
    runner = TensorRTRunner(tiny_contract(), rtx_engine, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match="tensorrt_rtx needs an NVIDIA GPU and none is visible"):
        runner.activate()
    assert no_deserialize == []


def test_engine_io_that_differs_from_the_contract_is_refused(tmp_path, fake_gpu):
    contract, cuda = tiny_contract(), FakeCuda()
    wrong = contract.with_changes(labels=TensorSpec("labels", (1, H, W), "float32"))
    trt = fake_tensorrt(cuda, contract, engine_contract=wrong)
    runner = TensorRTRunner(contract, fake_engine_file(tmp_path / "a.engine", contract, trt), cuda=cuda, trt=trt)
    with pytest.raises(UserError, match=r"output 'labels' is \[1, 8, 8\] int32 in the metadata but .* float32"):
        runner.activate()
    trt = fake_tensorrt(cuda, contract, extra_outputs=[("debug", (1,), "float32")])
    runner = TensorRTRunner(contract, fake_engine_file(tmp_path / "b.engine", contract, trt), cuda=cuda, trt=trt)
    with pytest.raises(UserError, match=r"engine tensors \['debug'\] are not in the state contract"):
        runner.activate()
    assert cuda.memory == {}  # a failed activate() frees what it had allocated
    assert cuda.host == {}


# ---- the frame loop on the fake device --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trt86", "trt10", "rtx"])
def test_labels_match_onnxruntime_and_state_buffers_alternate(graph, tmp_path, fake_gpu, kind):
    images = frames(6)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, kind)
    with runner:
        start = runner.state_addresses()
        results = run_frames(runner, images)
        for t, (labels, _, _) in enumerate(results):
            np.testing.assert_array_equal(labels, expected[t], err_msg=f"frame {t}")
        addresses = [start] + [a for _, a, _ in results]
        assert addresses[0::2] == [addresses[0]] * 4
        assert addresses[1::2] == [addresses[1]] * 3
        assert addresses[0] != addresses[1]
        assert runner.labels is runner._labels_host  # the D2H copy lands in the array the loop reads
    pair = set(addresses[0] + addresses[1])
    touched = [e[0] for e in cuda.log if e[0] in ("htod", "dtoh", "memset") and e[1] in pair]
    assert touched == ["memset"]  # zeroed at activation, never copied (6 frames: before the first NaN check, 10)
    bound = [(e[1], e[2]) for e in cuda.log if e[0] == "set_tensor_address" and e[1].startswith("state")]
    per_frame = bound[-2 * len(images) :]
    for t in range(len(images)):
        (n_in, a_in), (n_out, a_out) = per_frame[2 * t : 2 * t + 2]
        assert (n_in, n_out) == ("state_in.0", "state_out.0")
        assert (a_in, a_out) == (addresses[t][0], addresses[t + 1][0])  # frame t reads A, writes B; then swapped


def test_each_frame_is_h2d_execute_d2h_with_one_sync_and_exact_phase_times(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=3)
    with runner:
        allocations = [sum(1 for e in cuda.log if e[0] == kind) for kind in ("malloc", "host_alloc")]
        cuda.log.clear()
        results = run_frames(runner, frames(3))
        image_ptr, labels_ptr = runner._device["image"].ptr, runner._device["labels"].ptr
        log = list(cuda.log)
    timed = ["record", "htod", "record", "execute", "record", "dtoh", "record"]
    for t, ((_, _, times), ops) in enumerate(zip(results, frame_slices(log), strict=True), start=1):
        assert (times.h2d, times.compute, times.d2h) == (COST_MS["htod"], COST_MS["execute"], COST_MS["dtoh"])
        mirror = ["dtoh"] if t == 3 else []  # only the check frame copies the state back, after the timed copy
        assert [e[0] for e in ops if e[0] != "set_tensor_address"] == [*timed, *mirror, "sync"]
        copies = [e for e in ops if e[0] in ("htod", "dtoh")]
        assert (copies[0][1], copies[1][1]) == (image_ptr, labels_ptr)  # image in, labels out; logits stay on device
        if mirror:
            assert copies[2][2] == tiny_contract().states[0].nbytes  # the small state mirror
    assert not [e for e in log if e[0] in ("malloc", "host_alloc", "event")]  # nothing allocated per frame
    assert allocations == [3 + 2, 3]  # image, logits, labels + two per state; pinned image, labels, state mirror
    assert [e for e in log if e[0] in ("sync", "event_sync")] == [("sync",)] * 3  # one sync per frame


def test_reset_zeroes_the_current_state_and_a_nan_state_is_seen(graph, tmp_path, fake_gpu):
    images = frames(3, seed=1)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=1)  # every frame
    with runner:
        assert runner.state_is_finite()
        run_frames(runner, images[:2])
        runner.image[...] = _poisoned(images[2])
        runner.infer()
        assert not runner.state_is_finite()  # the copied-back state holds the NaN
        cuda.log.clear()
        runner.reset_state()
        current = runner.state_addresses()[0]
        assert cuda.log == [("memset", current, tiny_contract().states[0].nbytes)]
        assert runner.state_is_finite()
        (labels, _, _), *_ = run_frames(runner, images[:1])
        np.testing.assert_array_equal(labels, expected[0])  # after a reset the stream starts afresh


def _poisoned(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[0, :, 0, 0] = np.nan  # one pixel: its logits and so its state become NaN, and stay NaN frame after frame
    return out


def test_the_nan_check_copies_the_state_back_every_nth_frame_and_sees_a_nan_late(tmp_path, fake_gpu):
    images = frames(8, seed=4)
    images[3] = _poisoned(images[3])  # frame 4 writes a NaN state; the checks are on frames 3 and 6
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=3)
    with runner:
        pair = {b.ptr for b in runner._states[0].buffers}
        seen, copied = [], []
        for image in images[:7]:
            cuda.log.clear()
            runner.image[...] = image
            runner.infer()
            copied.append(sum(1 for e in cuda.log if e[0] == "dtoh" and e[1] in pair))
            seen.append(runner.state_is_finite())
        assert copied == [0, 0, 1, 0, 0, 1, 0]
        assert seen == [True] * 5 + [False, False]  # seen at frame 6, two frames late; still known bad at 7
        assert not np.isfinite(cuda.array(runner.state_addresses()[0], tiny_contract().states[0])).all()
        runner.reset_state()
        assert runner.state_is_finite()
        runner.image[...] = images[7]
        runner.infer()
        assert runner.state_is_finite()


def test_nan_check_every_must_be_at_least_one():
    with pytest.raises(ValueError, match="nan_check_every must be at least 1"):
        TensorRTRunner(tiny_contract(), "x.engine", nan_check_every=0)
    assert TensorRTRunner(tiny_contract(), "x.engine").nan_check_every == trt_runner.NAN_CHECK_EVERY == 10


def test_cuda_graphs_capture_one_graph_per_parity(graph, tmp_path, fake_gpu):
    images = frames(5, seed=2)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, "trt10", cuda_graphs=True)
    with runner:
        captures = [e for e in cuda.log if e[0] == "capture"]
        graph_addresses = [(e[1]["state_in.0"], e[1]["state_out.0"]) for e in cuda.log if e[0] == "captured"]
        cuda.log.clear()
        results = run_frames(runner, images)
    assert len(captures) == 2
    assert graph_addresses[0] == graph_addresses[1][::-1]  # parity 0 and parity 1: the pair swapped
    for t, (labels, _, times) in enumerate(results):
        np.testing.assert_array_equal(labels, expected[t], err_msg=f"frame {t}")
        assert times.compute == COST_MS["launch"]
    assert not [e for e in cuda.log if e[0] in ("execute", "set_tensor_address")]  # replayed, not re-enqueued


def test_tensorrt_rtx_gets_its_runtime_cache_and_builtin_graphs(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, "rtx", cuda_graphs=True)
    store = runner._given_trt.module.store
    cache_file = tmp_path / "fp32.engine.runtime_cache"
    with runner:
        config = store["context_config"]
        assert config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
        assert "loaded" not in store
        assert not [e for e in cuda.log if e[0] == "capture"]  # TensorRT-RTX captures by itself
        run_frames(runner, frames(2))
    assert cache_file.read_bytes() == b"jit-kernels"  # saved after the run
    with runner:
        assert store["loaded"] == b"jit-kernels"  # and loaded on the next start


def test_memory_figures_and_everything_freed(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, "trt86")
    c = tiny_contract()
    with runner:
        info = runner.memory()
        assert runner.device_name == "Fake RTX"
    assert info.activation_bytes == 123_456  # TensorRT 8.6's device_memory_size
    assert info.state_bytes == 2 * c.state_bytes
    assert info.io_bytes == c.image.nbytes + c.logits.nbytes + c.labels.nbytes
    assert info.device_used_bytes == info.state_bytes + info.io_bytes
    assert info.engine_file_bytes == runner.engine_path.stat().st_size
    assert (info.params, info.weights_bytes) == (CLASSES * 3, 36)  # contract extra; the build log's weights
    assert cuda.memory == {}
    assert cuda.host == {}
    assert (runner.image.size, runner.labels.size) == (0, 0)
    assert not cuda.closed  # an api given to the runner stays open


# ---- a keyframe pair on the fake device ------------------------------------------------------------------

K, U = "keyframe", "update"


def test_pair_kinds_follow_the_schedule_and_a_reset_forces_a_keyframe(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path)
    images, flow = frames(10, seed=5), flows(10, seed=5)
    with runner:
        assert runner.keyframe_contract == pair_contracts()[1]
        assert runner.flow.shape == FLOW.shape
        assert runner.flow.ctypes.data in cuda.host  # pinned: the stream writes the flow where the H2D reads it
        flow_ptr = runner._device["flow"].ptr
        cuda.log.clear()
        kinds, _ = run_pair(runner, images, flow, reset_before=(8,))
        log = list(cuda.log)
    assert kinds == [K, U, U, K, U, U, K, U, K, U]  # every 3 frames, and the frame after the reset at 8
    for t, (kind, ops) in enumerate(zip(kinds, frame_slices(log), strict=True)):
        (bound,) = [e[1] for e in ops if e[0] == "execute"]
        flow_in = [e for e in ops if e[0] == "htod" and e[1] == flow_ptr]
        if kind == K:  # the keyframe context: image in, no flow, writes the state without reading one
            assert (set(bound), flow_in) == ({"image", "logits", "labels", "state_out.0"}, []), t
        else:
            assert set(bound) == {"image", "flow", "logits", "labels", "state_in.0", "state_out.0"}, t
            assert len(flow_in) == 1, t  # the flow goes in with the image, on update frames only
            assert [e[0] for e in ops].index("htod") < [e[0] for e in ops].index("execute")


@pytest.mark.parametrize(("kind", "graphs"), [("trt86", False), ("trt10", False), ("trt10", True), ("rtx", False)])
def test_pair_labels_match_the_onnxruntime_pair_frame_by_frame(pair_graphs, tmp_path, fake_gpu, kind, graphs):
    images, flow, resets = frames(11, seed=6), flows(11, seed=6), (7,)
    update_onnx, keyframe_onnx = pair_graphs
    with OnnxRuntimeRunner(pair_contracts()[0], update_onnx, keyframe=keyframe_onnx) as ort:
        ort_kinds, expected = run_pair(ort, images, flow, resets)
    runner, cuda = make_fake_pair(tmp_path, kind, cuda_graphs=graphs)
    with runner:
        captures = sum(1 for e in cuda.log if e[0] == "capture")
        start = runner.state_addresses()
        kinds, labels = run_pair(runner, images, flow, resets)
        end = runner.state_addresses()
    assert kinds == ort_kinds == [K, U, U, K, U, U, K, K, U, U, K]
    for t in range(len(images)):
        np.testing.assert_array_equal(labels[t], expected[t], err_msg=f"frame {t} ({kinds[t]})")
    assert captures == (4 if graphs else 0)  # standard TensorRT: one graph per (kind, parity)
    assert start != end  # 11 frames: one state set, its parity flipped by every frame whichever graph ran


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"keyframe engine not found \(update engine fp32.engine runs only with it\)"),
        ("state shape", r"keyframe graph disagrees with the update graph on state state_out.0"),
        ("altered", r"engine sha256 differs"),
        ("not a keyframe", r"not a keyframe graph \(role 'update'\)"),
    ],
)
def test_pair_refuses_a_missing_or_mismatched_keyframe_engine_before_deserializing(tmp_path, fake_gpu, damage, message):
    keyframe = pair_contracts()[1]
    if damage == "state shape":
        shape = (1, CLASSES, H // 2, W // 2)
        keyframe = keyframe.with_changes(states=(StateSpec("state_in.0", "state_out.0", shape, "float32"),))
    elif damage == "not a keyframe":
        keyframe = pair_contracts()[0]
    runner, cuda = make_fake_pair(tmp_path, keyframe=keyframe)
    path = tmp_path / "keyframe.fp32.engine"
    if damage == "missing":
        path.unlink()
    elif damage == "altered":
        path.write_bytes(path.read_bytes().replace(b"tiny_pair", b"tiny_pain"))
    with pytest.raises(UserError, match=message) as err:
        runner.activate()
    assert err.value.path == str(path)  # names the keyframe file, in one line
    assert "\n" not in str(err.value)
    assert runner._given_trt.module.store["deserialized"] == 0  # neither engine was deserialized
    assert (cuda.memory, cuda.host, cuda.log) == ({}, {}, [])  # nothing allocated


def test_pair_memory_counts_both_engines_and_everything_is_freed(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path, "rtx")
    c = pair_contracts()[0]
    engines = [tmp_path / "fp32.engine", tmp_path / "keyframe.fp32.engine"]
    with runner:
        info = runner.memory()
        run_pair(runner, frames(2), flows(2))
    assert info.engine_file_bytes == sum(p.stat().st_size for p in engines)
    assert (info.activation_bytes, info.weights_bytes) == (2 * 123_456, 2 * 36)  # both contexts, both engines
    assert info.io_bytes == c.image.nbytes + FLOW.nbytes + c.logits.nbytes + c.labels.nbytes
    assert info.state_bytes == 2 * c.state_bytes  # one set of state pairs, shared by both contexts
    assert info.device_used_bytes == info.state_bytes + info.io_bytes
    assert any("both engines" in note for note in info.notes)
    assert (cuda.memory, cuda.host) == ({}, {})
    assert runner.flow is None
    for engine in engines:  # TensorRT-RTX: a JIT cache per engine, saved after the run
        assert engine.with_name(engine.name + ".runtime_cache").read_bytes() == b"jit-kernels"


def build_pair(pair_graphs: tuple[Path, Path], out: Path, flavour: str) -> Path:
    """The pair's engines as `python -m tempseg.engine` builds them: keyframe.fp32.engine first, then fp32.engine
    naming it."""
    from tempseg.engine.__main__ import main

    argv = ["--onnx", str(pair_graphs[0]), "--out", str(out), "--flavour", flavour, "--no-timing-cache"]
    assert main([*argv, "--no-inspect"]) == 0
    return out


@pytest.fixture(scope="module")
def rtx_pair(pair_graphs, tmp_path_factory) -> Path:
    """Real TensorRT-RTX engines of the test pair, built on the CPU by engine/."""
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
    return build_pair(pair_graphs, tmp_path_factory.mktemp("rtx_pair") / "fp32.engine", "tensorrt_rtx")


@pytest.mark.rtx
@pytest.mark.parametrize("damage", [None, "missing", "truncated"])
def test_a_real_pair_is_checked_before_deserializing(rtx_pair, no_deserialize, tmp_path, damage):
    for name in ("fp32.engine", "keyframe.fp32.engine"):
        for path in (rtx_pair.with_name(name), sidecar_path(rtx_pair.with_name(name))):
            (tmp_path / path.name).write_bytes(path.read_bytes())
    engine, keyframe = tmp_path / "fp32.engine", tmp_path / "keyframe.fp32.engine"
    contract = sidecar_contract(read_sidecar(engine))
    assert contract.schedule["keyframe_graph"] == keyframe.name  # the update engine's record names its pair
    if damage == "missing":
        keyframe.unlink()
    elif damage == "truncated":
        keyframe.write_bytes(keyframe.read_bytes()[:100])
    runner = TensorRTRunner(contract, engine, flavour="tensorrt_rtx")
    if damage is None:  # both records pass every check: what stops it here is the missing GPU, after the checks
        if cuda_gpu() is not None:
            pytest.skip("a GPU is visible")
        with pytest.raises(UserError, match="tensorrt_rtx needs an NVIDIA GPU and none is visible"):
            runner.activate()
    else:
        message = "keyframe engine not found" if damage == "missing" else "engine size differs"
        with pytest.raises(UserError, match=message) as err:
            runner.activate()
        assert err.value.path == str(keyframe)
    assert no_deserialize == []


# ---- GPU only ---------------------------------------------------------------------------------------------


def _cuda_api(name: str) -> CudaApi:
    if cuda_gpu() is None:
        pytest.skip("needs an NVIDIA GPU: real CUDA buffers need a device (none visible)")
    if name == "pycuda":
        pytest.importorskip("pycuda.driver", reason="pycuda not installed (it compiles against a CUDA toolkit)")
        return rc.PyCudaApi()
    pytest.importorskip("cuda", reason="cuda-python not installed")
    return rc.CudaPythonApi()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda-python", "pycuda"])
def test_cuda_buffers_round_trip_on_the_gpu(name):
    api = _cuda_api(name)
    try:
        stream, start, end = api.create_stream(), api.create_event(), api.create_event()
        host = api.host_array((4, 256), np.float32)
        back = api.host_array((4, 256), np.float32)
        host[...] = np.arange(host.size, dtype=np.float32).reshape(host.shape)
        free_before, total = api.mem_get_info()
        with api.device_buffer(host.nbytes) as device:
            start.record(stream)
            api.memcpy_htod_async(device.ptr, host, stream)
            api.memset_async(device.ptr, 0, host[0].nbytes, stream)  # zero the first row
            api.memcpy_dtoh_async(back, device.ptr, stream)
            end.record(stream)
            stream.synchronize()
            assert 0 < free_before <= total
        expected = host.copy()
        expected[0] = 0
        np.testing.assert_array_equal(back, expected)
        assert start.elapsed_ms(end) >= 0.0
        for array in (host, back):
            api.free_host(array)
        for handle in (start, end, stream):
            handle.close()
    finally:
        api.close()


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_engine_runs_on_the_gpu_and_matches_onnxruntime(graph, tmp_path, graphs, trt_on_gpu):
    trt = trt_on_gpu
    if graphs and importlib.util.find_spec("cuda") is None:
        pytest.skip("CUDA graphs need cuda-python")
    from tempseg.engine.build import BuildOptions, build_engine

    engine = tmp_path / "fp32.engine"
    build_engine(trt, graph[0], engine, BuildOptions(timing_cache=None))
    images = frames(8, seed=3)
    expected = ort_labels(graph, images)
    with TensorRTRunner(graph[1], engine, flavour=trt.flavour, trt=trt, cuda_graphs=graphs) as runner:
        results = run_frames(runner, images)
        info = runner.memory()
        assert runner.state_is_finite()
    for t, (labels, _, times) in enumerate(results):
        assert (labels == expected[t]).mean() > 0.99, t  # TF32/fused kernels may flip near-ties
        assert min(times.h2d, times.compute, times.d2h) >= 0.0
    addresses = [a for _, a, _ in results]
    assert addresses[0] == addresses[2] != addresses[1] == addresses[3]
    assert info.activation_bytes is not None
    assert info.device_used_bytes > 0


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_a_pair_runs_on_the_gpu_and_matches_the_onnxruntime_pair(pair_graphs, tmp_path, graphs, trt_on_gpu):
    trt = trt_on_gpu
    if graphs and importlib.util.find_spec("cuda") is None:
        pytest.skip("CUDA graphs need cuda-python")
    engine = build_pair(pair_graphs, tmp_path / "fp32.engine", trt.flavour)
    images, flow, resets = frames(11, seed=7), flows(11, seed=7), (7,)
    with OnnxRuntimeRunner(pair_contracts()[0], pair_graphs[0], keyframe=pair_graphs[1]) as ort:
        ort_kinds, expected = run_pair(ort, images, flow, resets)
    contract = sidecar_contract(read_sidecar(engine))
    with TensorRTRunner(contract, engine, flavour=trt.flavour, trt=trt, cuda_graphs=graphs) as runner:
        kinds, labels = run_pair(runner, images, flow, resets)
        info = runner.memory()
    assert kinds == ort_kinds
    for t in range(len(images)):
        assert (labels[t] == expected[t]).mean() > 0.99, (t, kinds[t])  # TF32/fused kernels may flip near-ties
    assert info.engine_file_bytes == engine.stat().st_size + engine.with_name("keyframe.fp32.engine").stat().st_size
