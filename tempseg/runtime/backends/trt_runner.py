"""TensorRT runner (standard TensorRT 8.6 / 10.x / 11.x and TensorRT-RTX): buffers allocated once, states swapped.

activate():
1. import the TensorRT flavour (UserError naming what to install), then check the engine against its build
   record (engine/sidecar.check_engine: size, sha256, model, precision, input size, flavour, version, this
   GPU's compute capability) BEFORE a byte of it is deserialized: an engine is code-like;
2. deserialize it and create the execution context. Where the engine offers a runtime config
   (TensorRT-RTX, TensorRT 11) the context is created from one; on TensorRT-RTX that is where the kernels
   are JIT-compiled for this GPU, so a runtime cache (`<engine>.runtime_cache`, per its docs: load if
   present, save after the run) spares the compile on later starts;
3. allocate everything once: pinned host `image` / `labels`, one device buffer per I/O tensor (image,
   logits, labels) and TWO per state, a pinned mirror per state, a stream and four events; bind the
   fixed addresses with set_tensor_address.

Per frame, infer() enqueues on one stream: event, H2D image, event, bind the state pair of this parity
(frame t reads buffer A and writes B, frame t+1 reads B and writes A: no state copy), execute_async_v3,
event, D2H labels (logits stay on the device), event, then ONE stream synchronize; PhaseTimes come from the
events. A graph with logits but no labels output falls back to copying the logits and taking the argmax on
the host.

A keyframe pair (Accel; contract role "update") is two engines under one runner. The update engine's record
names the keyframe engine (`keyframe.<name>` beside it, written by engine/__main__.py); activate() checks it
against its own record like the update engine, and as the update engine's pair (check_keyframe_pair on the
recorded contracts), before either is deserialized; then one runtime deserializes both, each with its own
execution context. Both contexts share every buffer: image, logits,
labels and the one set of state pairs. The keyframe context binds image/logits/labels and only the state
outputs (it reads no state: its state_out.k goes to the buffer the update graph would write for that
parity); the update context binds as a single graph does, plus `flow` (a device buffer fed from the pinned
host `flow` the stream fills, copied in with the image on update frames only, inside the h2d phase). The
schedule (runtime/schedule.py) picks the context per frame; the parity flips every frame whichever ran, and
a reset makes the next frame a keyframe.

The NaN/Inf check of the state runs every `nan_check_every` frames (default 10), not every frame: on those
frames the new state is also copied into its pinned host mirror, on the same stream after the last event
(outside the timed phases, before the one synchronize: no extra sync), and state_is_finite() scans the
mirror once; on the other frames nothing but the labels leaves the device and state_is_finite() returns the
last check's answer.
- What a check costs: a D2H copy and a host scan of every state's bytes. fcresnet18_t66 at 256x512 has one
  state of 38 KB in FP32 (19 KB in FP16): by estimate tens of microseconds, not yet measured on a GPU,
  against a frame of milliseconds; a model whose state holds several frames of keys and values (MBs) pays
  proportionally more. Checked every N frames, that is 1/N of it per frame.
- What a late detection costs: a NaN/Inf written at frame t is seen at the next check, at most N - 1 frames
  later; the frames in between run from the poisoned state (their labels are meaningless where the NaN has
  spread), then the loop zeroes the state as at a stream start. At N = 10 and 30 fps that is at most 0.3 s
  of bad labels. N = 1 checks every frame.

CUDA graphs (off by default): a captured graph bakes in the tensor addresses, so standard TensorRT gets two
graphs, one per parity, each captured after one warm-up execute (as NVIDIA's diffusion demo does); a pair
gets two per context, four in all, and replays the one of the frame's (kind, parity).
TensorRT-RTX instead gets its built-in capture (IRuntimeConfig.cuda_graph_strategy = WHOLE_GRAPH_CAPTURE),
which its docs give as the way to use CUDA graphs there (stream capture needs engines built with
REQUIRE_USER_ALLOCATION). Graphs need cuda-python (pycuda cannot capture).

Versions are told apart by feature detection (hasattr), never version strings: execute_async_v3 and
set_tensor_address exist from TensorRT 8.5 (checked in the 8.6.1, 10.3 and 11.1 Python bindings);
device_memory_size_v2 from 10.x (8.6: device_memory_size; 11 and RTX: only _v2); create_runtime_config
in 11.x and RTX; the runtime cache and cuda_graph_strategy on RTX only.

What the CPU tests cannot run: deserialization, the JIT and runtime cache, execution, device memory
figures, CUDA graphs (both kinds) and the cuda-python/pycuda calls under TensorRT: these need an NVIDIA
GPU with TensorRT installed, or TensorRT-RTX on a GPU it supports (its 1.7 release lists compute
capability 7.5, 8.0, 8.6, 8.9 and 12.x, not Hopper's 9.0). The CPU tests drive this code through a
numpy-backed CudaApi and a fake TensorRT context that computes the test graph, checked against ONNX
Runtime; the real path has GPU tests (marker `gpu`) that compare labels with ONNX Runtime frame by frame,
and `make gpu-check` (bench/gpu_check.py) records what ran on a given GPU.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tempseg.common.contract import (
    Contract,
    StateSpec,
    TensorSpec,
    check_against_io,
    check_keyframe_pair,
    check_schedule,
)
from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write
from tempseg.engine.sidecar import check_engine, sidecar_contract
from tempseg.engine.trt import FLAVOURS, GpuInfo, TensorRT, cuda_gpu, load_tensorrt
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.cuda import CudaApi, CudaGraph, DeviceBuffer, Event, Stream, default_cuda_api
from tempseg.runtime.schedule import KEYFRAME

log = logging.getLogger("tempseg.runtime.tensorrt")
AUTO = "auto"  # runtime_cache default: `<engine>.runtime_cache` beside the engine (TensorRT-RTX only)
NAN_CHECK_EVERY = 10  # frames between NaN/Inf checks of the state (see the module docstring for the trade-off)


@dataclass
class StatePair:
    """One state tensor: two device buffers that take turns as input and output, and a pinned host mirror."""

    spec: StateSpec
    buffers: tuple[DeviceBuffer, DeviceBuffer]
    mirror: np.ndarray  # the state the next frame reads, copied back on check frames for state_is_finite()


@dataclass
class EngineGraph:
    """One engine and its execution context: the model's (a single graph, or a pair's update graph) or a pair's
    keyframe graph. `contract`: the runner's for the model's engine, the recorded one for the keyframe engine."""

    path: Path
    contract: Contract
    sidecar: dict[str, Any]
    cache_path: Path | None  # TensorRT-RTX runtime cache file (None: no cache)
    engine: Any = None
    context: Any = None
    runtime_cache: Any = None
    graphs: list[CudaGraph] = field(default_factory=list)  # one per parity, standard TensorRT with cuda_graphs


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(
        self,
        contract: Contract,
        engine_path: str | os.PathLike[str],
        *,
        flavour: str = "tensorrt",
        cuda: CudaApi | None = None,
        trt: TensorRT | None = None,
        cuda_graphs: bool = False,
        runtime_cache: str | os.PathLike[str] | None = AUTO,
        nan_check_every: int = NAN_CHECK_EVERY,
    ) -> None:
        """`cuda` / `trt`: an api and an imported TensorRT to use (default: what is installed).
        cuda_graphs: replay the frame as CUDA graph(s). runtime_cache: TensorRT-RTX JIT cache file (None: off);
        a pair's keyframe engine keeps its own beside it, `keyframe.<name>`.
        nan_check_every: copy the state back and check it for NaN/Inf every N frames (1: every frame); a check
        costs a D2H copy and host scan of the state's bytes, a NaN is seen up to N - 1 frames late.
        """
        super().__init__(contract)
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        if nan_check_every < 1:
            raise ValueError(f"nan_check_every must be at least 1 (1: every frame), not {nan_check_every}")
        self.nan_check_every = int(nan_check_every)
        self.engine_path = Path(engine_path)
        self.flavour = self.backend = flavour
        self.cuda_graphs = cuda_graphs
        if runtime_cache == AUTO:
            self.runtime_cache_path: Path | None = self.engine_path.with_name(self.engine_path.name + ".runtime_cache")
        else:
            self.runtime_cache_path = Path(runtime_cache) if runtime_cache else None
        self._given_cuda, self._given_trt = cuda, trt
        self._clear()

    def _clear(self) -> None:
        """The not-activated state; deactivate() returns here, also after a failed activate()."""
        self.cuda: CudaApi | None = None
        self._trt: TensorRT | None = None
        self._gpu: GpuInfo | None = None
        self._runtime = None
        self._main: EngineGraph | None = None  # the engine at engine_path
        self._keyframe: EngineGraph | None = None  # a pair's keyframe engine
        self._device: dict[str, DeviceBuffer] = {}  # image, flow, logits, labels
        self._states: list[StatePair] = []
        self._host: list[np.ndarray] = []  # every pinned array, freed in deactivate()
        self._labels_host: np.ndarray | None = None  # what the D2H copy fills (labels, or logits as fallback)
        self._stream: Stream | None = None
        self._events: list[Event] = []
        self._builtin_graphs = False  # TensorRT-RTX captures by itself (cuda_graph_strategy)
        self._parity = 0
        self._frames_run = 0  # infer() calls since activate(): every nan_check_every-th copies the state back
        self._mirrored = False  # the mirrors hold a state copied back since the last state_is_finite()
        self._finite = True  # the last check's answer (True after a reset)
        self.image = np.empty(0, np.float32)
        self.labels = np.empty(0, np.int32)
        self.flow = None

    def _engines(self) -> list[EngineGraph]:
        return [g for g in (self._main, self._keyframe) if g is not None]

    # ---- activate ------------------------------------------------------------------------------------

    def activate(self) -> None:
        trt = self._given_trt or load_tensorrt(self.flavour)
        self._trt, self._gpu = trt, cuda_gpu()
        expect = self._expectations(trt, self._gpu)
        main = EngineGraph(
            self.engine_path, self.contract, check_engine(self.engine_path, expect=expect), self.runtime_cache_path
        )
        keyframe = self._keyframe_engine(expect) if self.is_pair else None  # checked before either is deserialized
        if self._gpu is None:
            raise UserError(
                f"{trt.flavour} needs an NVIDIA GPU and none is visible (no driver or no device); "
                "run it on the GPU machine or pick --backend onnxruntime",
                self.engine_path,
            )
        self._main, self._keyframe = main, keyframe
        self.keyframe_contract = None if keyframe is None else keyframe.contract
        try:
            self.cuda = self._given_cuda or default_cuda_api()
            self._load(trt)
            self._allocate()
            for graph in self._engines():
                self._bind_fixed(graph)
            if self.cuda_graphs and not self._builtin_graphs:
                for graph in self._engines():
                    self._capture_graphs(graph)
            self._parity = 0
            self.reset_state()
        except BaseException:
            self.deactivate()  # `with` does not call __exit__ when __enter__ fails
            raise

    def _expectations(self, trt: TensorRT, gpu: GpuInfo | None) -> dict[str, Any]:
        c = self.contract
        expect = {
            "model": c.model,
            "precision": c.precision,
            "input_hw": [c.height, c.width],
            "flavour": trt.flavour,
            "tensorrt_version": trt.version,
        }
        if gpu is not None:
            expect["compute_capability"] = gpu.compute_capability
        return expect

    def _keyframe_engine(self, expect: dict[str, Any]) -> EngineGraph:
        """The keyframe engine the update engine's record names (engine/__main__.py writes it beside it), checked
        like the update engine and as its pair, from its record alone: nothing is deserialized here."""
        check_schedule(self.contract, str(self.engine_path))  # a plain file name beside it, before any file access
        path = self.engine_path.parent / self.contract.schedule["keyframe_graph"]
        if not path.is_file():
            raise UserError(
                f"keyframe engine not found (update engine {self.engine_path.name} runs only with it); "
                "rebuild the pair with `python -m tempseg.engine`",
                path,
            )
        sidecar = check_engine(path, expect=expect)
        try:
            contract = sidecar_contract(sidecar)
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"unreadable contract in the build record: {err}", path) from None
        check_keyframe_pair(self.contract, contract, str(path))
        if (contract.logits, contract.labels) != (self.contract.logits, self.contract.labels):
            # both contexts write the same logits/labels buffers, which the D2H copy reads whichever ran
            raise UserError("keyframe engine's logits/labels outputs differ from the update engine's", path)
        cache = self.runtime_cache_path  # its own JIT cache file, named as engine/__main__.py names the engine
        return EngineGraph(path, contract, sidecar, cache and cache.with_name(f"keyframe.{cache.name}"))

    def _load(self, trt: TensorRT) -> None:
        """Deserialize the (checked) engine(s) with one runtime and create an execution context for each."""
        trt.logger.clear()
        self._runtime = trt.module.Runtime(trt.logger)  # must outlive the engines
        for graph in self._engines():
            graph.engine = self._runtime.deserialize_cuda_engine(graph.path.read_bytes())
            if graph.engine is None:
                raise UserError(
                    f"{trt.flavour} {trt.version} could not deserialize the engine: {_errors(trt)}", graph.path
                )
            graph.context = self._create_context(trt, graph)
            if graph.context is None:
                raise UserError(f"could not create an execution context: {_errors(trt)}", graph.path)
            if not hasattr(graph.context, "execute_async_v3"):  # named-tensor API: TensorRT 8.5+
                raise UserError(f"{trt.flavour} {trt.version} has no execute_async_v3; use TensorRT 8.6 or newer")

    def _create_context(self, trt: TensorRT, graph: EngineGraph) -> Any:
        """From a runtime config where the engine has one (11.x, RTX: the JIT runs here), else directly (8.6, 10.x)."""
        if not hasattr(graph.engine, "create_runtime_config"):
            return graph.engine.create_execution_context()
        config = graph.engine.create_runtime_config()
        graph.runtime_cache = self._attach_runtime_cache(config, graph.cache_path)
        strategy = getattr(trt.module, "CudaGraphStrategy", None)
        if self.cuda_graphs and strategy is not None and hasattr(config, "cuda_graph_strategy"):
            config.cuda_graph_strategy = strategy.WHOLE_GRAPH_CAPTURE
            self._builtin_graphs = True
        return graph.engine.create_execution_context(config)

    def _attach_runtime_cache(self, config: Any, path: Path | None) -> Any:
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
            log.warning("%s refused the runtime cache; the JIT will run on every start", self.flavour)
            return None
        return cache

    def _allocate(self) -> None:
        """Every buffer of the loop, once: pinned host arrays, device buffers, state pairs, stream, events.

        A pair's two contexts share them all (check_keyframe_pair: same image and states; same outputs)."""
        c, cuda = self.contract, self.cuda
        specs = self._engine_specs(self._main)
        if self._keyframe is not None:
            self._engine_specs(self._keyframe)  # its I/O checked against its own contract, like the update engine's
        self.image = self._pinned(c.image)
        for spec in _fixed(c):
            self._device[spec.name] = cuda.device_buffer(specs[spec.name].nbytes)
        if c.flow is not None:
            self.flow = self._pinned(c.flow)  # the stream writes the flow here before an update frame
        for spec in c.states:
            pair = (cuda.device_buffer(spec.nbytes), cuda.device_buffer(spec.nbytes))
            self._states.append(StatePair(spec, pair, self._pinned(TensorSpec(spec.input, spec.shape, spec.dtype))))
        out = c.labels or c.logits  # labels from the graph; logits only as the fallback (argmax on the host)
        self._labels_host = self._pinned(out)
        if c.labels is not None and c.labels.dtype == "int32":
            self.labels = self._labels_host  # the D2H copy lands where the loop reads: no host copy
        else:
            self.labels = np.zeros((c.batch, c.height, c.width), np.int32)
        self._stream = cuda.create_stream()
        self._events = [cuda.create_event() for _ in range(4)]

    def _pinned(self, spec: TensorSpec) -> np.ndarray:
        array = self.cuda.host_array(tuple(spec.shape), np.dtype(spec.dtype))
        self._host.append(array)
        return array

    def _engine_specs(self, graph: EngineGraph) -> dict[str, TensorSpec]:
        """The engine's I/O as TensorSpecs, dynamic inputs set to the contract's shapes; UserError where they differ."""
        from tempseg.engine.build import dtype_name  # TensorRT DataType -> contract dtype names (no TensorRT import)

        engine, context, c = graph.engine, graph.context, graph.contract
        input_mode = self._trt.module.TensorIOMode.INPUT
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
            raise UserError(f"engine tensors {unknown} are not in the state contract", graph.path)
        ins = {n: s for n, s in specs.items() if n in inputs}
        check_against_io(c, ins, {n: s for n, s in specs.items() if n not in inputs}, str(graph.path))
        return specs

    def _bind_fixed(self, graph: EngineGraph) -> None:
        """Image, flow, logits and labels keep their addresses for the whole run: bound once per context (a
        keyframe context has no flow)."""
        for spec in _fixed(graph.contract):
            self._set_address(graph, spec.name, self._device[spec.name].ptr)

    def _bind_states(self, graph: EngineGraph, parity: int) -> None:
        """Frame of this parity reads buffers[parity] (a keyframe graph reads none) and writes buffers[1 - parity]."""
        for spec, pair in zip(graph.contract.states, self._states, strict=True):
            if graph.contract.reads_states:
                self._set_address(graph, spec.input, pair.buffers[parity].ptr)
            self._set_address(graph, spec.output, pair.buffers[1 - parity].ptr)

    def _set_address(self, graph: EngineGraph, name: str, ptr: int) -> None:
        if not graph.context.set_tensor_address(name, ptr):
            raise RuntimeError(f"set_tensor_address({name!r}) refused: {_errors(self._trt)}")

    def _execute(self, graph: EngineGraph) -> None:
        if not graph.context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"execute_async_v3 failed: {_errors(self._trt)}")

    def _capture_graphs(self, graph: EngineGraph) -> None:
        """Standard TensorRT: one graph per parity (a graph bakes in the state addresses it was captured with);
        a pair's two contexts get two each, so the schedule picks a captured graph per (kind, parity)."""
        stream = self._stream
        capturable = getattr(graph.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(stream.handle):
            raise UserError("this engine cannot be captured in a CUDA graph; run without CUDA graphs", graph.path)
        for parity in (0, 1):
            self._bind_states(graph, parity)
            self._execute(graph)  # one run before capture, so TensorRT's deferred setup is not captured
            stream.synchronize()
            graph.graphs.append(self.cuda.capture_graph(stream, lambda: self._execute(graph)))
        # the warm-up runs wrote the state buffers; activate() zeroes the state after this

    # ---- per frame -----------------------------------------------------------------------------------

    def infer(self) -> PhaseTimes:
        cuda, stream, (e0, e1, e2, e3), c = self.cuda, self._stream, self._events, self.contract
        kind = self.next_kind()
        graph = self._keyframe if kind == KEYFRAME else self._main
        parity = self._parity
        e0.record(stream)
        cuda.memcpy_htod_async(self._device[c.image.name].ptr, self.image, stream)
        if self.flow is not None and kind != KEYFRAME:  # only the update graph reads the flow
            cuda.memcpy_htod_async(self._device[c.flow.name].ptr, self.flow, stream)
        e1.record(stream)
        if graph.graphs:
            graph.graphs[parity].launch(stream)
        else:
            self._bind_states(graph, parity)
            self._execute(graph)
        e2.record(stream)
        out = c.labels or c.logits
        cuda.memcpy_dtoh_async(self._labels_host, self._device[out.name].ptr, stream)
        e3.record(stream)
        self._frames_run += 1
        if self._frames_run % self.nan_check_every == 0:  # a check frame: mirror the next frame's input state
            for pair in self._states:
                cuda.memcpy_dtoh_async(pair.mirror, pair.buffers[1 - parity].ptr, stream)
            self._mirrored = True
        stream.synchronize()  # the frame's only sync: the events and copies above are all complete after it
        self._parity = 1 - parity  # whichever graph ran, it wrote the other buffer of each pair
        self._ran(kind)
        self._finish_labels()
        return PhaseTimes(h2d=e0.elapsed_ms(e1), compute=e1.elapsed_ms(e2), d2h=e2.elapsed_ms(e3), kind=kind)

    def _finish_labels(self) -> None:
        """Labels not already in place: cast another label dtype, or argmax the logits (graph without labels)."""
        if self.labels is self._labels_host:
            return
        if self.contract.labels is not None:
            np.copyto(self.labels, self._labels_host, casting="unsafe")
        else:
            np.argmax(self._labels_host, axis=1, out=self.labels)

    def reset_state(self) -> None:
        for pair in self._states:
            current = pair.buffers[self._parity]
            self.cuda.memset_async(current.ptr, 0, current.nbytes, self._stream)  # ordered before the next frame
            pair.mirror.fill(0)
        self._mirrored, self._finite = False, True
        self._force_keyframe()

    def state_is_finite(self) -> bool:
        """The last check's answer: scans the mirrors once after a check frame, else answers from memory.

        Between checks a NaN/Inf in the state is not seen (module docstring: what that costs).
        """
        if self._mirrored:
            self._finite = all(_finite(pair.mirror) for pair in self._states)
            self._mirrored = False
        return self._finite

    def state_addresses(self) -> tuple[int, ...]:
        return tuple(pair.buffers[self._parity].ptr for pair in self._states)

    # ---- reports -------------------------------------------------------------------------------------

    def memory(self) -> MemoryInfo:
        c, graphs = self.contract, self._engines()
        free, total = self.cuda.mem_get_info()
        notes = [
            "tensorrt: activation_bytes is the execution context's device memory (ICudaEngine.device_memory_size"
            "[_v2]); state_bytes counts both buffers of each state pair"
        ]
        if self._keyframe is not None:
            notes.append(
                "tensorrt: a keyframe pair: engine_file_bytes, weights_bytes and activation_bytes count both engines "
                "(update and keyframe, one execution context each); io_bytes includes the flow buffer"
            )
        return MemoryInfo(
            params=c.extra.get("params"),
            weights_bytes=_total(self._weights_bytes(g) for g in graphs),
            engine_file_bytes=sum(g.path.stat().st_size for g in graphs),
            activation_bytes=_total(_activation_bytes(g) for g in graphs),
            state_bytes=sum(b.nbytes for pair in self._states for b in pair.buffers),
            io_bytes=sum(b.nbytes for b in self._device.values()),
            device_used_bytes=total - free,
            notes=notes,
        )

    def _weights_bytes(self, graph: EngineGraph) -> int | None:
        """The engine's own figure where it has one (11.x, RTX), else the build log's, else None."""
        stat = getattr(self._trt.module, "EngineStat", None)
        if stat is not None and hasattr(graph.engine, "get_engine_stat"):
            return int(graph.engine.get_engine_stat(stat.TOTAL_WEIGHTS_SIZE))
        return graph.sidecar.get("device_memory", {}).get("build_log", {}).get("weights_bytes")

    @property
    def device_name(self) -> str:
        gpu = self._gpu or cuda_gpu()
        return gpu.name if gpu is not None else "cuda"

    # ---- deactivate ----------------------------------------------------------------------------------

    def deactivate(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()  # nothing may still be copying into what is freed below
        graphs = self._engines()
        for graph in graphs:
            self._save_runtime_cache(graph)
            for captured in graph.graphs:
                captured.close()
        # TensorRT objects before the memory they point to, contexts before engines before the runtime
        for graph in graphs:
            graph.context = graph.runtime_cache = None
        for graph in graphs:
            graph.engine = None
        self._runtime = None
        if self.cuda is not None:
            self._free_cuda(self.cuda)
        self._clear()

    def _free_cuda(self, cuda: CudaApi) -> None:
        for buffer in [*self._device.values(), *(b for pair in self._states for b in pair.buffers)]:
            buffer.free()
        for array in self._host:
            cuda.free_host(array)
        for handle in [*self._events, self._stream]:
            if handle is not None:
                handle.close()
        if self._given_cuda is None:
            cuda.close()

    def _save_runtime_cache(self, graph: EngineGraph) -> None:
        """TensorRT-RTX: write the JIT cache (kernels compiled at context creation and during the run)."""
        if graph.runtime_cache is None or graph.cache_path is None:
            return
        data = bytes(memoryview(graph.runtime_cache.serialize()))
        if data:
            with atomic_write(graph.cache_path) as handle:
                handle.write(data)
            log.info("saved runtime cache %s (%d bytes)", graph.cache_path, len(data))


def _fixed(contract: Contract) -> list[TensorSpec]:
    """The tensors a context reads or writes at one address all run: image, flow (update graph), logits, labels."""
    return [t for t in (contract.image, contract.flow, contract.logits, contract.labels) if t is not None]


def _activation_bytes(graph: EngineGraph) -> int | None:
    for attr in ("device_memory_size_v2", "device_memory_size"):  # 10.x+/RTX, then 8.6
        if hasattr(graph.engine, attr):
            return int(getattr(graph.engine, attr))
    return None


def _total(values: Iterable[int | None]) -> int | None:
    """The sum, or None where any engine cannot tell (a partial sum would understate a pair)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _finite(array: np.ndarray) -> bool:
    """No NaN/Inf in `array`: a float64 sum is NaN or Inf exactly when an element is (no finite float16/32
    values can overflow it), and unlike np.isfinite(array).all() it allocates no array of the state's size."""
    return math.isfinite(float(np.sum(array, dtype=np.float64)))


def _errors(trt: TensorRT | None) -> str:
    """TensorRT's last error messages, for an exception."""
    errors = trt.logger.errors()[-3:] if trt is not None and hasattr(trt.logger, "errors") else []
    return " | ".join(e.strip() for e in errors) or "no error message (run with --debug for TensorRT's log)"
