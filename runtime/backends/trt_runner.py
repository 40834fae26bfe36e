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
graphs, one per parity, each captured after one warm-up execute (as NVIDIA's diffusion demo does).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tempseg.common.contract import Contract, StateSpec, TensorSpec, check_against_io
from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write
from tempseg.engine.sidecar import check_engine
from tempseg.engine.trt import FLAVOURS, GpuInfo, TensorRT, cuda_gpu, load_tensorrt
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.cuda import CudaApi, CudaGraph, DeviceBuffer, Event, Stream, default_cuda_api

log = logging.getLogger("tempseg.runtime.tensorrt")
AUTO = "auto"  # runtime_cache default: `<engine>.runtime_cache` beside the engine (TensorRT-RTX only)
NAN_CHECK_EVERY = 10  # frames between NaN/Inf checks of the state (see the module docstring for the trade-off)


@dataclass
class StatePair:
    """One state tensor: two device buffers that take turns as input and output, and a pinned host mirror."""

    spec: StateSpec
    buffers: tuple[DeviceBuffer, DeviceBuffer]
    mirror: np.ndarray  # the state the next frame reads, copied back on check frames for state_is_finite()


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
        cuda_graphs: replay the frame as CUDA graph(s). runtime_cache: TensorRT-RTX JIT cache file (None: off).
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
        self._sidecar: dict[str, Any] = {}
        self._runtime = self._engine = self._context = self._runtime_cache = None
        self._device: dict[str, DeviceBuffer] = {}  # image, logits, labels
        self._states: list[StatePair] = []
        self._host: list[np.ndarray] = []  # every pinned array, freed in deactivate()
        self._labels_host: np.ndarray | None = None  # what the D2H copy fills (labels, or logits as fallback)
        self._stream: Stream | None = None
        self._events: list[Event] = []
        self._graphs: list[CudaGraph] = []  # one per parity, standard TensorRT with cuda_graphs
        self._builtin_graphs = False  # TensorRT-RTX captures by itself (cuda_graph_strategy)
        self._parity = 0
        self._frames_run = 0  # infer() calls since activate(): every nan_check_every-th copies the state back
        self._mirrored = False  # the mirrors hold a state copied back since the last state_is_finite()
        self._finite = True  # the last check's answer (True after a reset)
        self.image = np.empty(0, np.float32)
        self.labels = np.empty(0, np.int32)

    # ---- activate ------------------------------------------------------------------------------------

    def activate(self) -> None:
        trt = self._given_trt or load_tensorrt(self.flavour)
        self._trt, self._gpu = trt, cuda_gpu()
        self._sidecar = check_engine(self.engine_path, expect=self._expectations(trt, self._gpu))
        if self._gpu is None:
            raise UserError(
                f"{trt.flavour} needs an NVIDIA GPU and none is visible (no driver or no device); "
                "run it on the GPU machine or pick --backend onnxruntime",
                self.engine_path,
            )
        try:
            self.cuda = self._given_cuda or default_cuda_api()
            self._load(trt)
            self._allocate()
            self._bind_fixed()
            if self.cuda_graphs and not self._builtin_graphs:
                self._capture_graphs()
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

    def _load(self, trt: TensorRT) -> None:
        """Deserialize the (checked) engine and create its execution context."""
        trt.logger.clear()
        self._runtime = trt.module.Runtime(trt.logger)  # must outlive the engine
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise UserError(
                f"{trt.flavour} {trt.version} could not deserialize the engine: {_errors(trt)}", self.engine_path
            )
        self._context = self._create_context(trt)
        if self._context is None:
            raise UserError(f"could not create an execution context: {_errors(trt)}", self.engine_path)
        if not hasattr(self._context, "execute_async_v3"):  # named-tensor API: TensorRT 8.5+
            raise UserError(f"{trt.flavour} {trt.version} has no execute_async_v3; use TensorRT 8.6 or newer")

    def _create_context(self, trt: TensorRT) -> Any:
        """From a runtime config where the engine has one (11.x, RTX: the JIT runs here), else directly (8.6, 10.x)."""
        if not hasattr(self._engine, "create_runtime_config"):
            return self._engine.create_execution_context()
        config = self._engine.create_runtime_config()
        self._runtime_cache = self._attach_runtime_cache(config)
        strategy = getattr(trt.module, "CudaGraphStrategy", None)
        if self.cuda_graphs and strategy is not None and hasattr(config, "cuda_graph_strategy"):
            config.cuda_graph_strategy = strategy.WHOLE_GRAPH_CAPTURE
            self._builtin_graphs = True
        return self._engine.create_execution_context(config)

    def _attach_runtime_cache(self, config: Any) -> Any:
        """TensorRT-RTX: a runtime cache on the config, filled from the cache file when it fits this GPU/version."""
        if self.runtime_cache_path is None or not hasattr(config, "create_runtime_cache"):
            return None
        cache = config.create_runtime_cache()
        path = self.runtime_cache_path
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
        """Every buffer of the loop, once: pinned host arrays, device buffers, state pairs, stream, events."""
        c, cuda = self.contract, self.cuda
        specs = self._engine_specs()
        self.image = self._pinned(c.image)
        for name in (c.image.name, *(t.name for t in (c.logits, c.labels) if t is not None)):
            self._device[name] = cuda.device_buffer(specs[name].nbytes)
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

    def _engine_specs(self) -> dict[str, TensorSpec]:
        """The engine's I/O as TensorSpecs, dynamic inputs set to the contract's shapes; UserError where they differ."""
        from tempseg.engine.build import dtype_name  # TensorRT DataType -> contract dtype names (no TensorRT import)

        engine, context, c = self._engine, self._context, self.contract
        input_mode = self._trt.module.TensorIOMode.INPUT
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == input_mode}
        wanted = {c.image.name: c.image.shape, **{s.input: s.shape for s in c.states}}
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
            raise UserError(f"engine tensors {unknown} are not in the state contract", self.engine_path)
        ins = {n: s for n, s in specs.items() if n in inputs}
        check_against_io(c, ins, {n: s for n, s in specs.items() if n not in inputs}, str(self.engine_path))
        return specs

    def _bind_fixed(self) -> None:
        """Image, logits and labels keep their addresses for the whole run: bound once."""
        for name, buffer in self._device.items():
            self._set_address(name, buffer.ptr)

    def _bind_states(self, parity: int) -> None:
        """Frame of this parity reads buffers[parity] and writes buffers[1 - parity]."""
        for pair in self._states:
            self._set_address(pair.spec.input, pair.buffers[parity].ptr)
            self._set_address(pair.spec.output, pair.buffers[1 - parity].ptr)

    def _set_address(self, name: str, ptr: int) -> None:
        if not self._context.set_tensor_address(name, ptr):
            raise RuntimeError(f"set_tensor_address({name!r}) refused: {_errors(self._trt)}")

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"execute_async_v3 failed: {_errors(self._trt)}")

    def _capture_graphs(self) -> None:
        """Standard TensorRT: one graph per parity (a graph bakes in the state addresses it was captured with)."""
        stream = self._stream
        capturable = getattr(self._context, "is_stream_capturable", None)
        if capturable is not None and not capturable(stream.handle):
            raise UserError("this engine cannot be captured in a CUDA graph; run without CUDA graphs", self.engine_path)
        for parity in (0, 1):
            self._bind_states(parity)
            self._execute()  # one run before capture, so TensorRT's deferred setup is not captured
            stream.synchronize()
            self._graphs.append(self.cuda.capture_graph(stream, self._execute))
        # the warm-up runs wrote the state buffers; activate() zeroes the state after this

    # ---- per frame -----------------------------------------------------------------------------------

    def infer(self) -> PhaseTimes:
        cuda, stream, (e0, e1, e2, e3) = self.cuda, self._stream, self._events
        parity = self._parity
        e0.record(stream)
        cuda.memcpy_htod_async(self._device[self.contract.image.name].ptr, self.image, stream)
        e1.record(stream)
        if self._graphs:
            self._graphs[parity].launch(stream)
        else:
            self._bind_states(parity)
            self._execute()
        e2.record(stream)
        out = self.contract.labels or self.contract.logits
        cuda.memcpy_dtoh_async(self._labels_host, self._device[out.name].ptr, stream)
        e3.record(stream)
        self._frames_run += 1
        if self._frames_run % self.nan_check_every == 0:  # a check frame: mirror the next frame's input state
            for pair in self._states:
                cuda.memcpy_dtoh_async(pair.mirror, pair.buffers[1 - parity].ptr, stream)
            self._mirrored = True
        stream.synchronize()  # the frame's only sync: the events and copies above are all complete after it
        self._parity = 1 - parity
        self._finish_labels()
        return PhaseTimes(h2d=e0.elapsed_ms(e1), compute=e1.elapsed_ms(e2), d2h=e2.elapsed_ms(e3))

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
        c = self.contract
        free, total = self.cuda.mem_get_info()
        notes = [
            "tensorrt: activation_bytes is the execution context's device memory (ICudaEngine.device_memory_size"
            "[_v2]); state_bytes counts both buffers of each state pair"
        ]
        return MemoryInfo(
            params=c.extra.get("params"),
            weights_bytes=self._weights_bytes(),
            engine_file_bytes=self.engine_path.stat().st_size,
            activation_bytes=self._activation_bytes(),
            state_bytes=sum(b.nbytes for pair in self._states for b in pair.buffers),
            io_bytes=sum(b.nbytes for b in self._device.values()),
            device_used_bytes=total - free,
            notes=notes,
        )

    def _activation_bytes(self) -> int | None:
        engine = self._engine
        for attr in ("device_memory_size_v2", "device_memory_size"):  # 10.x+/RTX, then 8.6
            if hasattr(engine, attr):
                return int(getattr(engine, attr))
        return None

    def _weights_bytes(self) -> int | None:
        """The engine's own figure where it has one (11.x, RTX), else the build log's, else None."""
        stat = getattr(self._trt.module, "EngineStat", None)
        if stat is not None and hasattr(self._engine, "get_engine_stat"):
            return int(self._engine.get_engine_stat(stat.TOTAL_WEIGHTS_SIZE))
        return self._sidecar.get("device_memory", {}).get("build_log", {}).get("weights_bytes")

    @property
    def device_name(self) -> str:
        gpu = self._gpu or cuda_gpu()
        return gpu.name if gpu is not None else "cuda"

    # ---- deactivate ----------------------------------------------------------------------------------

    def deactivate(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()  # nothing may still be copying into what is freed below
        self._save_runtime_cache()
        for graph in self._graphs:
            graph.close()
        # TensorRT objects before the memory they point to, context before engine before runtime
        self._context = self._runtime_cache = None
        self._engine = None
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

    def _save_runtime_cache(self) -> None:
        """TensorRT-RTX: write the JIT cache (kernels compiled at context creation and during the run)."""
        if self._runtime_cache is None or self.runtime_cache_path is None:
            return
        data = bytes(memoryview(self._runtime_cache.serialize()))
        if data:
            with atomic_write(self.runtime_cache_path) as handle:
                handle.write(data)
            log.info("saved runtime cache %s (%d bytes)", self.runtime_cache_path, len(data))


def _finite(array: np.ndarray) -> bool:
    """No NaN/Inf in `array`: a float64 sum is NaN or Inf exactly when an element is (no finite float16/32
    values can overflow it), and unlike np.isfinite(array).all() it allocates no array of the state's size."""
    return math.isfinite(float(np.sum(array, dtype=np.float64)))


def _errors(trt: TensorRT | None) -> str:
    """TensorRT's last error messages, for an exception."""
    errors = trt.logger.errors()[-3:] if trt is not None and hasattr(trt.logger, "errors") else []
    return " | ".join(e.strip() for e in errors) or "no error message (run with --debug for TensorRT's log)"
