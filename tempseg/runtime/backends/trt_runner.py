"""TensorRT runner (standard TensorRT 8.6 / 10.x / 11.x and TensorRT-RTX): buffers allocated once, states swapped.

Split as Polygraphy splits it: trt_engine.py checks and loads the engines (each one binds, executes and
captures itself), trt_buffers.py owns the buffers and the state ping-pong, and this module orchestrates them.

activate():
1. import the TensorRT flavour (UserError naming what to install), then check the engine(s) against their
   build records BEFORE a byte is deserialized (trt_engine.check_engines): an engine is code-like;
2. deserialize them with one runtime and create an execution context for each (trt_engine.Engines.load;
   TensorRT-RTX's JIT and its runtime cache happen there);
3. allocate everything once (trt_buffers.FrameBuffers: pinned host arrays, device buffers, TWO per state),
   a stream and four events; each engine binds the fixed addresses, and with CUDA graphs captures itself.

Per frame, infer() enqueues on one stream: event, H2D image, event, bind the state pair of this parity
(frame t reads buffer A and writes B, frame t+1 reads B and writes A: no state copy), execute_async_v3,
event, D2H labels (logits stay on the device), event, then ONE stream synchronize; PhaseTimes come from the
events. A graph with logits but no labels output falls back to copying the logits and taking the argmax on
the host.

A keyframe pair (Accel; contract role "update") is two engines under one runner, held by the frame kind
each runs ("update", "keyframe"; a single graph's is "frame"). The schedule (runtime/schedule.py) picks the
kind per frame and the frame runs that kind's engine, fed the host inputs that engine reads (the flow goes in
with the image on update frames only, inside the h2d phase); both engines share every buffer
(trt_buffers.py). The parity flips every frame whichever ran, and a reset makes the next frame a keyframe.

The NaN/Inf check of the state runs every `nan_check_every` frames (default 10), not every frame: those
frames also copy the new state back, outside the timed phases and before the one synchronize;
trt_buffers.py says what a check and a late detection cost.

What the CPU tests cannot run: deserialization, the JIT and runtime cache, execution, device memory
figures, CUDA graphs (both kinds) and the cuda-python/pycuda calls under TensorRT: these need an NVIDIA
GPU with TensorRT installed, or TensorRT-RTX on a GPU it supports (its 1.7 release lists compute
capability 7.5, 8.0, 8.6, 8.9 and 12.x, not Hopper's 9.0). The CPU tests drive this code through a
numpy-backed CudaApi that keeps CUDA's stream-capture rules and a fake TensorRT whose context runs the
engine's ONNX graph with ONNX Runtime on the bound buffers, checked against the ONNX Runtime runner; the
real path has GPU tests (marker `gpu`) that compare labels with ONNX Runtime frame by frame, and
`make gpu-check` (bench/gpu_check.py) records what ran on a given GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from tempseg.common.contract import Contract, TensorSpec
from tempseg.common.errors import UserError, require
from tempseg.engine.trt import FLAVOURS, GpuInfo, TensorRT, cuda_gpu, load_tensorrt
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.backends.trt_buffers import FrameBuffers, StatePair
from tempseg.runtime.backends.trt_engine import Engines, check_engines, expectations
from tempseg.runtime.cuda import CudaApi, DeviceBuffer, Event, Stream, default_cuda_api

BEFORE_ACTIVATE = "TensorRTRunner used before activate()"
AUTO = "auto"  # runtime_cache default: `<engine>.runtime_cache` beside the engine (TensorRT-RTX only)
NAN_CHECK_EVERY = 10  # frames between NaN/Inf checks of the state (trt_buffers.py: the trade-off)


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
        self._engines = Engines()  # by the frame kind each runs
        self._buffers = FrameBuffers()
        self._stream: Stream | None = None
        self._events: list[Event] = []
        self._parity = 0
        self._frames_run = 0  # infer() calls since activate(): every nan_check_every-th copies the state back
        self.image = np.empty(0, np.float32)
        self.labels = np.empty(0, np.int32)
        self.flow = None

    # the buffers under the names the tests look at
    @property
    def _device(self) -> dict[str, DeviceBuffer]:
        return self._buffers.device

    @property
    def _states(self) -> list[StatePair]:
        return self._buffers.states

    @property
    def _labels_host(self) -> np.ndarray:
        return self._buffers.output

    # the activated runner's CUDA objects (activate() makes them, deactivate() drops them)
    @property
    def _active_cuda(self) -> CudaApi:
        return require(self.cuda, BEFORE_ACTIVATE)

    @property
    def _active_stream(self) -> Stream:
        return require(self._stream, BEFORE_ACTIVATE)

    # ---- activate ------------------------------------------------------------------------------------

    def activate(self) -> None:
        trt = self._given_trt or load_tensorrt(self.flavour)
        self._trt, self._gpu = trt, cuda_gpu()
        expect = expectations(self.contract, trt, self._gpu)
        engines = check_engines(  # a pair's keyframe engine too: both checked before either is deserialized
            self.contract, self.engine_path, expect=expect, cache_path=self.runtime_cache_path, pair=self.is_pair
        )
        if self._gpu is None:
            raise UserError(
                f"{trt.flavour} needs an NVIDIA GPU and none is visible (no driver or no device); "
                "run it on the GPU machine or pick --backend onnxruntime",
                self.engine_path,
            )
        self._engines = engines
        self.keyframe_contract = engines.keyframe_contract
        try:
            self.cuda = self._given_cuda or default_cuda_api()
            self._start(trt, self.cuda)
        except BaseException:
            self.deactivate()  # `with` does not call __exit__ when __enter__ fails
            raise

    def _start(self, trt: TensorRT, cuda: CudaApi) -> None:
        """Load the engines, allocate every buffer, bind (and capture) each engine, zero the state."""
        engines = self._engines
        engines.load(trt, cuda_graphs=self.cuda_graphs)
        specs = [engine.io_specs() for engine in engines]  # each engine's I/O against its own contract
        self._allocate(cuda, specs[0])  # the model's engine sizes the buffers a pair's engines share
        for engine in engines:
            engine.attach(self._buffers.fixed_addresses(engine.contract), self._buffers.state_bindings(engine.contract))
        if self.cuda_graphs and not engines.builtin_graphs:
            for engine in engines:
                engine.capture(cuda, self._active_stream)
        self._parity = 0
        self.reset_state()

    def _allocate(self, cuda: CudaApi, specs: dict[str, TensorSpec]) -> None:
        """Every buffer of the loop, once, then the stream and the four events of a frame."""
        buffers = self._buffers
        buffers.allocate(cuda, self.contract, specs)
        self.image, self.flow, self.labels = buffers.image, buffers.flow, buffers.labels
        self._stream = cuda.create_stream()
        self._events = [cuda.create_event() for _ in range(4)]

    # ---- per frame -----------------------------------------------------------------------------------

    def infer(self) -> PhaseTimes:
        buffers, stream, (e0, e1, e2, e3) = self._buffers, self._active_stream, self._events
        kind = self.next_kind()
        engine, parity = self._engines[kind], self._parity
        e0.record(stream)
        buffers.upload(engine.host_inputs, stream)  # the image, and the flow where this engine reads it
        e1.record(stream)
        engine.enqueue(stream, parity)
        e2.record(stream)
        buffers.download(stream)
        e3.record(stream)
        self._frames_run += 1
        if self._frames_run % self.nan_check_every == 0:  # a check frame: mirror the next frame's input state
            buffers.mirror_written(parity, stream)
        stream.synchronize()  # the frame's only sync: the events and copies above are all complete after it
        self._parity = 1 - parity  # whichever engine ran, it wrote the other buffer of each pair
        self._ran(kind)
        self._finish_labels()
        return PhaseTimes(h2d=e0.elapsed_ms(e1), compute=e1.elapsed_ms(e2), d2h=e2.elapsed_ms(e3), kind=kind)

    def _finish_labels(self) -> None:
        """Labels not already in place: cast another label dtype, or argmax the logits (graph without labels)."""
        output = self._buffers.output
        if self.labels is output:
            return
        if self.contract.labels is not None:
            np.copyto(self.labels, output, casting="unsafe")
        else:
            np.argmax(output, axis=1, out=self.labels)

    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        rows = self._slots(slots)
        if self._stream is not None:  # else not activated: no state to zero
            self._buffers.reset(self._parity, self._stream, rows)  # ordered before the next frame
        self._force_keyframe()

    def nonfinite_slots(self) -> list[int]:
        """The last check's answer: scans the mirrors once after a check frame, else answers from memory.

        Between checks a NaN/Inf in the state is not seen (trt_buffers.py: what that costs).
        """
        return self._buffers.nonfinite_slots()

    def state_addresses(self) -> tuple[int, ...]:
        return self._buffers.current_addresses(self._parity)

    # ---- reports -------------------------------------------------------------------------------------

    def memory(self) -> MemoryInfo:
        engines, buffers = list(self._engines), self._buffers
        free, total = self._active_cuda.mem_get_info()
        activations = _total(e.activation_bytes() for e in engines)  # one execution context per engine
        weights = _total(e.weights_bytes() for e in engines)
        notes = [
            "tensorrt: device_runner_bytes is what this runner holds on the device: its buffers (I/O, both buffers "
            "of each state pair) + each execution context's device memory (ICudaEngine.device_memory_size[_v2]) "
            "+ the engines' weights (get_engine_stat where the engine has it, else the build log)",
            "tensorrt: device_used_bytes is cudaMemGetInfo's total - free: the whole GPU, with the CUDA context, "
            "TensorRT's libraries and other processes",
        ]
        if weights is None:
            notes.append("tensorrt: the engines do not tell their weights: device_runner_bytes leaves them out")
        if self.is_pair:
            notes.append(
                "tensorrt: a keyframe pair: engine_file_bytes, weights_bytes and activation_bytes count both engines "
                "(update and keyframe, one execution context each); io_bytes includes the flow buffer"
            )
        return MemoryInfo(
            params=self.contract.extra.get("params"),
            weights_bytes=weights,
            engine_file_bytes=sum(e.path.stat().st_size for e in engines),
            activation_bytes=activations,
            state_bytes=buffers.state_bytes,
            io_bytes=buffers.io_bytes,
            device_runner_bytes=_device_bytes(buffers, activations, weights),
            device_used_bytes=total - free,
            notes=notes,
        )

    @property
    def device_name(self) -> str:
        gpu = self._gpu or cuda_gpu()
        return gpu.name if gpu is not None else "cuda"

    # ---- deactivate ----------------------------------------------------------------------------------

    def deactivate(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()  # nothing may still be copying into what is freed below
        self._engines.release()  # TensorRT objects before the memory they point to
        if self.cuda is not None:
            self._free_cuda(self.cuda)
        self._clear()

    def _free_cuda(self, cuda: CudaApi) -> None:
        self._buffers.free()
        for handle in [*self._events, self._stream]:
            if handle is not None:
                handle.close()
        if self._given_cuda is None:
            cuda.close()


def _device_bytes(buffers: FrameBuffers, activations: int | None, weights: int | None) -> int | None:
    """The runner's buffers plus TensorRT's contexts and weights; None where the contexts' memory is unknown."""
    if activations is None:
        return None
    return buffers.state_bytes + buffers.io_bytes + activations + (weights or 0)


def _total(values: Iterable[int | None]) -> int | None:
    """The sum, or None where any engine cannot tell (a partial sum would understate a pair)."""
    values = list(values)
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None
