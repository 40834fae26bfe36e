"""The TensorRT runner's engines: checked, loaded, and each one binding, executing and capturing itself
(Polygraphy's backend/trt/loader.py with the engine half of its runner.py; trt_runner.py orchestrates).

Checks first (check_engines): each engine is checked against its build record (engine/sidecar.check_engine:
size, sha256, model, precision, input size, flavour, version, this GPU's compute capability) BEFORE a byte of
it is deserialized: an engine is code-like. A keyframe pair (Accel; contract role "update") is two engines:
the update engine's record names the keyframe engine (`keyframe.<name>` beside it, written by
engine/__main__.py), which is checked against its own record like the update engine, and as the update
engine's pair (check_keyframe_pair on the recorded contracts, and the same logits/labels outputs), before
either is deserialized.

Loading (Engines.load): one runtime deserializes the engine(s), each with its own execution context. Where
the engine offers a runtime config (recent TensorRT 10.x, 11.x, TensorRT-RTX) the context is created from
one; on TensorRT-RTX that is where the kernels are JIT-compiled for this GPU, so a runtime cache
(`<engine>.runtime_cache`, per its docs: load if present, save after the run; a pair's keyframe engine keeps
its own, `keyframe.<name>`) spares the compile on later starts. Each engine's I/O is then checked against
its own contract (io_specs), dynamic inputs set to the contract's shapes.

CUDA graphs (off by default): a captured graph bakes in the tensor addresses, so standard TensorRT gets two
graphs per engine, one per parity, each captured after one warm-up execute (as NVIDIA's diffusion demo
does); a pair's two engines get two each, four in all, and the frame replays the one of its (kind, parity).
TensorRT-RTX instead gets its built-in capture (IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE),
which its docs give as the way to use CUDA graphs there (stream capture needs engines built with
REQUIRE_USER_ALLOCATION). Graphs need cuda-python (pycuda cannot capture).

Versions are told apart by feature detection (hasattr), never version strings: execute_async_v3 and
set_tensor_address exist from TensorRT 8.5 (checked in the 8.6.1, 10.3 and 11.1 Python bindings);
device_memory_size_v2 from 10.x (8.6: device_memory_size; 11 and RTX: only _v2); create_runtime_config
in recent 10.x (10.13's IRuntimeConfig holds only the allocation strategy), 11.x and RTX; the runtime cache,
cuda_graph_strategy and get_engine_stat (EngineStat) on RTX only (not in the 10.13 bindings).

The checks run on the CPU (against real TensorRT-RTX engines in the tests); deserialization, the JIT and
runtime cache, execution, device memory figures and CUDA graphs need a GPU (trt_runner.py: what is tested where).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tempseg.common.contract import Contract, TensorSpec, check_against_io, check_keyframe_pair, check_schedule
from tempseg.common.errors import UserError, require
from tempseg.common.io import atomic_write
from tempseg.engine.sidecar import check_engine, sidecar_contract
from tempseg.engine.trt import GpuInfo, TensorRT, dtype_name
from tempseg.runtime.cuda import CudaApi, CudaGraph, Stream
from tempseg.runtime.schedule import FRAME, KEYFRAME, UPDATE

log = logging.getLogger("tempseg.runtime.tensorrt")


@dataclass
class Engine:
    """One engine file and, once loaded, its execution context: the model's (a single graph, or a pair's update
    graph) or a pair's keyframe graph. `contract`: the runner's for the model's engine, the recorded one for the
    keyframe engine; `host_inputs`: the tensors the frame copies in before it runs (a keyframe graph: the image)."""

    path: Path
    contract: Contract
    sidecar: dict[str, Any]
    cache_path: Path | None  # TensorRT-RTX runtime cache file (None: no cache)
    host_inputs: tuple[str, ...]
    trt: TensorRT | None = None
    engine: Any = None
    context: Any = None
    runtime_cache: Any = None
    builtin_graphs: bool = False  # TensorRT-RTX captures by itself (cuda_graph_strategy)
    state_bindings: tuple[dict[str, int], ...] = ()  # the state addresses a frame of each parity binds
    graphs: list[CudaGraph] = field(default_factory=list)  # one per parity, standard TensorRT with cuda_graphs

    # ---- load ----------------------------------------------------------------------------------------

    @property
    def _loaded_trt(self) -> TensorRT:
        """The TensorRT flavour load() deserialized this engine with."""
        return require(self.trt, f"engine {self.path.name} used before load()")

    def load(self, runtime: Any, trt: TensorRT, *, cuda_graphs: bool) -> None:
        """Deserialize the (checked) engine with `runtime` and create its execution context."""
        self.trt = trt
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"{trt.flavour} {trt.version} could not deserialize the engine: {_errors(trt)}", self.path)
        self.context = self._create_context(trt, cuda_graphs)
        if self.context is None:
            raise UserError(f"could not create an execution context: {_errors(trt)}", self.path)
        if not hasattr(self.context, "execute_async_v3"):  # named-tensor API: TensorRT 8.5+
            raise UserError(f"{trt.flavour} {trt.version} has no execute_async_v3; use TensorRT 8.6 or newer")

    def _create_context(self, trt: TensorRT, cuda_graphs: bool) -> Any:
        """From a runtime config where the engine has one (recent 10.x, 11.x, RTX: the JIT runs here), else directly
        (8.6, early 10.x); the runtime cache and built-in graphs only where the config has them (RTX)."""
        if not hasattr(self.engine, "create_runtime_config"):
            return self.engine.create_execution_context()
        config = self.engine.create_runtime_config()
        self.runtime_cache = _attach_runtime_cache(config, self.cache_path, trt.flavour)
        strategy = getattr(trt.module, "CudaGraphStrategy", None)
        if cuda_graphs and strategy is not None and hasattr(config, "cuda_graph_strategy"):
            config.cuda_graph_strategy = strategy.WHOLE_GRAPH_CAPTURE
            self.builtin_graphs = True
        return self.engine.create_execution_context(config)

    def io_specs(self) -> dict[str, TensorSpec]:
        """The engine's I/O as TensorSpecs, dynamic inputs set to the contract's shapes; UserError where they differ."""
        engine, context, c = self.engine, self.context, self.contract
        input_mode = self._loaded_trt.module.TensorIOMode.INPUT
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == input_mode}
        wanted = {t.name: t.shape for t in (c.image, c.flow) if t is not None}
        wanted.update({s.input: s.shape for s in c.states} if c.reads_states else {})  # a keyframe graph reads none
        for name in inputs:
            if any(d < 0 for d in engine.get_tensor_shape(name)) and name in wanted:
                context.set_input_shape(name, tuple(wanted[name]))  # dynamic engine: run at the contract's size
        specs = {}
        for name in names:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            specs[name] = TensorSpec(name, shape, dtype_name(engine.get_tensor_dtype(name)))
        known = {*wanted, *(s.output for s in c.states), *(t.name for t in (c.logits, c.labels) if t is not None)}
        unknown = sorted(set(names) - known)
        if unknown:
            raise UserError(f"engine tensors {unknown} are not in the state contract", self.path)
        ins = {n: s for n, s in specs.items() if n in inputs}
        check_against_io(c, ins, {n: s for n, s in specs.items() if n not in inputs}, str(self.path))
        return specs

    # ---- bind, run, capture --------------------------------------------------------------------------

    def attach(self, fixed: Mapping[str, int], state_bindings: tuple[dict[str, int], dict[str, int]]) -> None:
        """Bind the addresses that hold for the whole run (image, flow, logits, labels) once, and keep the
        state addresses of each parity for the frames (they alternate, so they are bound per frame)."""
        self.bind(fixed)
        self.state_bindings = state_bindings

    def bind(self, addresses: Mapping[str, int]) -> None:
        for name, ptr in addresses.items():
            if not self.context.set_tensor_address(name, ptr):
                raise RuntimeError(f"set_tensor_address({name!r}) refused: {_errors(self.trt)}")

    def execute(self, stream: Stream) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise RuntimeError(f"execute_async_v3 failed: {_errors(self.trt)}")

    def enqueue(self, stream: Stream, parity: int) -> None:
        """One frame of this parity on `stream`: its captured graph where there is one, else bind and execute."""
        if self.graphs:
            self.graphs[parity].launch(stream)
        else:
            self.bind(self.state_bindings[parity])
            self.execute(stream)

    def capture(self, cuda: CudaApi, stream: Stream) -> None:
        """Standard TensorRT: one graph per parity (a graph bakes in the state addresses it was captured with)."""
        capturable = getattr(self.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(stream.handle):
            raise UserError("this engine cannot be captured in a CUDA graph; run without CUDA graphs", self.path)
        for parity in (0, 1):
            self.bind(self.state_bindings[parity])
            self.execute(stream)  # one run before capture, so TensorRT's deferred setup is not captured
            stream.synchronize()
            self.graphs.append(cuda.capture_graph(stream, lambda: self.execute(stream)))
        # the warm-up runs wrote the state buffers; the runner zeroes the state after this

    # ---- figures, release ----------------------------------------------------------------------------

    def weights_bytes(self) -> int | None:
        """The engine's own figure where it has one (get_engine_stat: RTX), else the build log's, else None."""
        stat = getattr(self._loaded_trt.module, "EngineStat", None)
        if stat is not None and hasattr(self.engine, "get_engine_stat"):
            return int(self.engine.get_engine_stat(stat.TOTAL_WEIGHTS_SIZE))
        return self.sidecar.get("device_memory", {}).get("build_log", {}).get("weights_bytes")

    def activation_bytes(self) -> int | None:
        """The device memory TensorRT gives this engine's one execution context (private to each context)."""
        for attr in ("device_memory_size_v2", "device_memory_size"):  # 10.x+/RTX, then 8.6
            if hasattr(self.engine, attr):
                return int(getattr(self.engine, attr))
        return None

    def save_runtime_cache(self) -> None:
        """TensorRT-RTX: write the JIT cache (kernels compiled at context creation and during the run)."""
        if self.runtime_cache is None or self.cache_path is None:
            return
        data = bytes(memoryview(self.runtime_cache.serialize()))
        if data:
            with atomic_write(self.cache_path) as handle:
                handle.write(data)
            log.info("saved runtime cache %s (%d bytes)", self.cache_path, len(data))

    def close_graphs(self) -> None:
        for captured in self.graphs:
            captured.close()


class Engines:
    """A runner's engines by the frame kind each runs (the model's engine first), and the one runtime that
    deserializes them all. Empty until check_engines() makes one."""

    def __init__(self, by_kind: Mapping[str, Engine] | None = None) -> None:
        self.by_kind: dict[str, Engine] = dict(by_kind or {})
        self.runtime: Any = None

    def __getitem__(self, kind: str) -> Engine:
        return self.by_kind[kind]

    def __iter__(self) -> Iterator[Engine]:
        return iter(self.by_kind.values())

    @property
    def main(self) -> Engine:
        """The engine at the runner's engine path: its I/O sizes the buffers both engines share."""
        return next(iter(self))

    @property
    def keyframe_contract(self) -> Contract | None:
        keyframe = self.by_kind.get(KEYFRAME)
        return None if keyframe is None else keyframe.contract

    @property
    def builtin_graphs(self) -> bool:
        """TensorRT-RTX captures by itself: no engine of this runner is captured by hand."""
        return any(engine.builtin_graphs for engine in self)

    def load(self, trt: TensorRT, *, cuda_graphs: bool) -> None:
        """Deserialize every (checked) engine with one runtime and create an execution context for each."""
        trt.logger.clear()
        self.runtime = trt.module.Runtime(trt.logger)  # must outlive the engines: release() drops it last
        for engine in self:
            engine.load(self.runtime, trt, cuda_graphs=cuda_graphs)

    def release(self) -> None:
        """Save the runtime caches and drop every TensorRT object; the device memory they point to is freed
        after this, by the caller."""
        for engine in self:
            engine.save_runtime_cache()
            engine.close_graphs()
        # contexts before engines before the runtime
        for engine in self:
            engine.context = engine.runtime_cache = None
        for engine in self:
            engine.engine = None
        self.runtime = None


def expectations(contract: Contract, trt: TensorRT, gpu: GpuInfo | None) -> dict[str, Any]:
    """What check_engine compares with an engine's build record: the contract's, the flavour's, this GPU's."""
    expect = {
        "model": contract.model,
        "precision": contract.precision,
        "input_hw": [contract.height, contract.width],
        "flavour": trt.flavour,
        "tensorrt_version": trt.version,
    }
    if gpu is not None:
        expect["compute_capability"] = gpu.compute_capability
    return expect


def check_engines(
    contract: Contract, path: Path, *, expect: dict[str, Any], cache_path: Path | None, pair: bool
) -> Engines:
    """The engine at `path` (kind "frame", or "update" for a `pair`) and a pair's keyframe engine, each checked
    against its build record, the keyframe engine also as the update engine's pair: nothing is deserialized."""
    host_inputs = tuple(t.name for t in (contract.image, contract.flow) if t is not None)
    main = Engine(path, contract, check_engine(path, expect=expect), cache_path, host_inputs)
    if not pair:
        return Engines({FRAME: main})
    return Engines({UPDATE: main, KEYFRAME: keyframe_engine(contract, path, expect, cache_path)})


def keyframe_engine(update: Contract, update_path: Path, expect: dict[str, Any], cache_path: Path | None) -> Engine:
    """The keyframe engine the update engine's record names (engine/__main__.py writes it beside it), checked
    like the update engine and as its pair, from its record alone: nothing is deserialized here."""
    check_schedule(update, str(update_path))  # a plain file name beside it, before any file access
    path = update_path.parent / update.schedule["keyframe_graph"]
    if not path.is_file():
        raise UserError(
            f"keyframe engine not found (update engine {update_path.name} runs only with it); "
            "rebuild the pair with `python -m tempseg.engine`",
            path,
        )
    sidecar = check_engine(path, expect=expect)
    try:
        contract = sidecar_contract(sidecar)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"unreadable contract in the build record: {err}", path) from None
    check_keyframe_pair(update, contract, str(path))
    if (contract.logits, contract.labels) != (update.logits, update.labels):
        # both contexts write the same logits/labels buffers, which the D2H copy reads whichever ran
        raise UserError("keyframe engine's logits/labels outputs differ from the update engine's", path)
    cache = cache_path and cache_path.with_name(f"keyframe.{cache_path.name}")  # named as the engine is
    return Engine(path, contract, sidecar, cache, (update.image.name,))  # fed the image only, never the flow


def _attach_runtime_cache(config: Any, path: Path | None, flavour: str) -> Any:
    """TensorRT-RTX: a runtime cache on the config, filled from the cache file when it fits this GPU/version."""
    if path is None or not hasattr(config, "create_runtime_cache"):
        return None
    cache = config.create_runtime_cache()
    if path.is_file():
        # deserialize() validates the blob against this GPU, driver and version, and refuses a mismatch
        if cache.deserialize(path.read_bytes()):
            log.info("loaded runtime cache %s", path)
        else:
            log.info("runtime cache %s was made elsewhere (GPU, driver or version); compiling afresh", path)
    if not config.set_runtime_cache(cache):
        log.warning("%s refused the runtime cache; the JIT will run on every start", flavour)
        return None
    return cache


def _errors(trt: TensorRT | None) -> str:
    """TensorRT's last error messages, for an exception."""
    errors = trt.logger.errors()[-3:] if trt is not None and hasattr(trt.logger, "errors") else []
    return " | ".join(e.strip() for e in errors) or "no error message (run with --debug for TensorRT's log)"
