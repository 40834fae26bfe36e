"""The stateful step of a torch model as two CUDA graphs with ping-pong state addresses (`make gpu-check`).

The TensorRT runner replays each frame as a CUDA graph whose state input and output addresses swap every
frame: two graphs, one per parity. A GPU machine without TensorRT cannot run that runner, so this runner does
the same with torch's kernels: graph p reads the state buffers of parity p and writes those of parity 1 - p.
It is replayed on a runtime/cuda.py stream (cuda-python), between runtime/cuda.py copies from and to its pinned
host arrays, and timed by its events. The graphs are captured by torch.cuda.graph (its own memory pool) or by
runtime/cuda.py's capture_graph, the TensorRT runner's path (torch then takes its temporaries from the blocks
its allocator cached during the warm-up: a capture refuses new allocations).

torch cannot be told where a module writes its output, so inside the graph the new state is copied into the
other buffer: the addresses ping-pong as in the TensorRT runner, and the bytes are copied once on the device.
Single-graph models only (no keyframe pairs). Needs a GPU: only bench/gpu_check.py runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tempseg.common.contract import Contract
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.backends.torch_runner import nonfinite_rows

CAPTURES = ("torch", "runtime")  # torch.cuda.graph, runtime/cuda.py's capture_graph


class TorchGraphRunner(Runner):
    backend = "torch-cuda-graphs"

    def __init__(self, contract: Contract, model: Any, *, capture: str = "torch", warmup: int = 3) -> None:
        super().__init__(contract)
        if capture not in CAPTURES:
            raise ValueError(f"capture {capture!r}: one of {CAPTURES}")
        if contract.role != "frame" or contract.flow is not None:
            raise ValueError(f"{contract.model}: a graph pair; this runner captures single-graph models")
        self.in_memory, self.capture, self.warmup = model, capture, warmup
        self.parity = 0  # the state buffers the next frame reads
        self._launches: list[Callable[[], None]] = []
        self._releases: list[Callable[[], None]] = []

    def activate(self) -> None:
        import torch

        from tempseg.runtime.cuda import CudaPythonApi

        self.torch, c = torch, self.contract
        self.dtype = torch.float16 if c.precision == "fp16" else torch.float32
        self.model = self.in_memory.to("cuda", self.dtype).eval()
        self.api = CudaPythonApi()
        self.stream = self.api.create_stream()
        self.events = [self.api.create_event() for _ in range(4)]
        self.torch_stream = torch.cuda.ExternalStream(self.stream.handle)  # torch's kernels on our stream
        self.image = self.api.host_array(c.image.shape, np.float32)
        self.labels = self.api.host_array((c.batch, c.height, c.width), np.int32)
        self._image_dev = torch.zeros(c.image.shape, dtype=torch.float32, device="cuda")
        self._labels64 = torch.zeros((c.batch, c.height, c.width), dtype=torch.int64, device="cuda")  # argmax's
        self._labels_dev = torch.zeros((c.batch, c.height, c.width), dtype=torch.int32, device="cuda")
        self._states = [[torch.zeros(s.shape, dtype=self.dtype, device="cuda") for s in c.states] for _ in (0, 1)]
        torch.cuda.synchronize()  # the zeros ran on torch's stream; everything after runs on ours
        with torch.cuda.stream(self.torch_stream):
            for _ in range(self.warmup):  # cuDNN picks its kernels, the allocator caches its blocks
                for parity in (0, 1):
                    self._step(parity)
        self.stream.synchronize()
        for parity in (0, 1):
            self._capture(parity)
        self.reset_state()

    def _step(self, parity: int) -> None:
        """One frame's device work, enqueued on torch's current stream: read states[parity], write the other."""
        torch = self.torch
        with torch.no_grad():
            logits, *new = self.model(self._image_dev.to(self.dtype), *self._states[parity])
            for buffer, state in zip(self._states[1 - parity], new, strict=True):
                buffer.copy_(state)
            torch.argmax(logits, dim=1, out=self._labels64)
            self._labels_dev.copy_(self._labels64)

    def _capture(self, parity: int) -> None:
        torch = self.torch
        if self.capture == "torch":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.torch_stream):
                self._step(parity)

            def replay() -> None:
                with torch.cuda.stream(self.torch_stream):
                    graph.replay()

            self._launches.append(replay)
            self._releases.append(graph.reset)
            return

        def enqueue() -> None:
            with torch.cuda.stream(self.torch_stream):
                self._step(parity)

        captured = self.api.capture_graph(self.stream, enqueue)
        self._launches.append(lambda: captured.launch(self.stream))
        self._releases.append(captured.close)

    def infer(self) -> PhaseTimes:
        api, stream, (e0, e1, e2, e3) = self.api, self.stream, self.events
        e0.record(stream)
        api.memcpy_htod_async(self._image_dev.data_ptr(), self.image, stream)
        e1.record(stream)
        self._launches[self.parity]()
        e2.record(stream)
        api.memcpy_dtoh_async(self.labels, self._labels_dev.data_ptr(), stream)
        e3.record(stream)
        stream.synchronize()
        self.parity = 1 - self.parity  # the buffers just written are the next frame's input
        return PhaseTimes(h2d=e0.elapsed_ms(e1), compute=e1.elapsed_ms(e2), d2h=e2.elapsed_ms(e3))

    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        rows = self._slots(slots)
        with self.torch.cuda.stream(self.torch_stream), self.torch.no_grad():
            for state in self._states[self.parity]:
                state[rows] = 0
        self._force_keyframe()

    def nonfinite_slots(self) -> list[int]:
        self.stream.synchronize()
        with self.torch.cuda.stream(self.torch_stream):
            return nonfinite_rows(self.torch, self._states[self.parity])

    def state_addresses(self) -> tuple[int, ...]:
        return tuple(s.data_ptr() for s in self._states[self.parity])

    def memory(self) -> MemoryInfo:
        params = sum(p.numel() for p in self.model.parameters())
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        state = sum(s.numel() * s.element_size() for pair in self._states for s in pair)
        return MemoryInfo(params=params, weights_bytes=weights, state_bytes=state, io_bytes=self.image.nbytes)

    def deactivate(self) -> None:
        self.stream.synchronize()
        for release in self._releases:
            release()
        self._launches, self._releases = [], []
        for array in (self.image, self.labels):
            self.api.free_host(array)
        for handle in (*self.events, self.stream):
            handle.close()
        self.api.close()
        self._states = []
        self.torch.cuda.empty_cache()


def ping_pong(addresses: Sequence[tuple[int, ...]]) -> bool:
    """The state addresses a frame reads, frame by frame, alternate between two sets (no state copied back)."""
    if len(addresses) < 2:
        return False
    return addresses[0] != addresses[1] and all(a == addresses[i % 2] for i, a in enumerate(addresses))
