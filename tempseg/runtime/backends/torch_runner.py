"""Torch runner: the reference backend (CPU or CUDA), states passed back into the model.

Imported only when asked for, so runtime/ runs without torch. On CUDA the frame is copied from
pinned host memory asynchronously and every phase is timed with CUDA events; FP16 runs the
model in half precision (CUDA only: CPU half convolutions are slow and not what an edge GPU does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tempseg.common.contract import Contract
from tempseg.common.errors import UserError, require
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.schedule import KEYFRAME


class TorchRunner(Runner):
    backend = "torch"

    def __init__(
        self,
        contract: Contract,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        model: Any = None,
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        """Runs the model of `checkpoint`, or `model` (an FCResNet in memory, e.g. during training)."""
        super().__init__(contract)
        if (checkpoint is None) == (model is None):
            raise ValueError("give a checkpoint or a model, not both")
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.in_memory = model
        self.requested_device = device
        self.threads = threads

    def activate(self) -> None:
        try:
            import torch
        except ImportError:
            raise UserError(
                "the torch backend needs PyTorch: pip install torch (or pick --backend onnxruntime)"
            ) from None
        self.torch = torch
        if self.threads:
            torch.set_num_threads(self.threads)
        use_cuda = self.requested_device == "cuda" or (self.requested_device == "auto" and torch.cuda.is_available())
        if self.requested_device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA device")
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if self.contract.precision == "int8":
            raise UserError(
                "the torch backend runs fp32 and fp16 (CUDA); int8 is a Q/DQ graph for ONNX Runtime / TensorRT"
            )
        self.dtype = torch.float16 if self.contract.precision == "fp16" and use_cuda else torch.float32
        self.model = self._load().to(self.device, self.dtype).eval()
        c = self.contract
        pin = use_cuda
        image_t = torch.zeros(c.image.shape, dtype=torch.float32, pin_memory=pin)
        labels_t = torch.zeros((c.batch, c.height, c.width), dtype=torch.int32, pin_memory=pin)
        self.image, self.labels = image_t.numpy(), labels_t.numpy()
        # logits only where the contract promises them (parity checks): the loop itself needs labels alone
        self._logits_host = torch.zeros(c.logits.shape, dtype=torch.float32, pin_memory=pin) if c.logits else None
        self.logits = None if self._logits_host is None else self._logits_host.numpy()
        self._image_host, self._labels_host = image_t, labels_t
        # On CPU the model reads the host buffer itself; on CUDA it is copied asynchronously.
        self._image_dev = torch.zeros(c.image.shape, dtype=self.dtype, device=self.device) if use_cuda else image_t
        self._labels_dev = torch.zeros((c.batch, c.height, c.width), dtype=torch.int64, device=self.device)
        self._allocate_flow()  # an Accel update graph's flow: the host buffer, read by the model as a tensor
        self._flow = None if self.flow is None else torch.from_numpy(self.flow)
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)] if use_cuda else []
        self.reset_state()
        if use_cuda:
            torch.cuda.reset_peak_memory_stats()

    def _load(self):
        if self.checkpoint is None:  # __init__: a checkpoint or a model, exactly one
            return self.in_memory
        from tempseg.models.checkpoint import load_model

        model, _ = load_model(
            self.checkpoint, expect_model=self.contract.model, expect_classes=self.contract.num_classes
        )
        return model

    @property
    def _active_model(self) -> Any:
        """The model activate() loaded: an FCResNet, or a keyframe pair (Accel) given in memory; duck-typed."""
        return require(self.model, "TorchRunner used before activate()")

    def deactivate(self) -> None:
        self.model = None
        self._states = []
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def infer(self) -> PhaseTimes:
        torch = self.torch
        with torch.inference_mode():
            if self._events:
                return self._infer_cuda()
            start = time.perf_counter()
            kind = self.next_kind()
            logits = self._run(kind)
            torch.argmax(logits, dim=1, out=self._labels_dev)
            self._labels_host.copy_(self._labels_dev)
            if self._logits_host is not None:
                self._logits_host.copy_(logits)
            return PhaseTimes(compute=(time.perf_counter() - start) * 1e3, kind=kind)

    def _run(self, kind: str):
        """One frame through the model (a graph pair: its keyframe or update graph); the states move on."""
        model = self._active_model
        if kind == KEYFRAME:
            logits, *self._states = model.keyframe(self._image_dev)
        elif self._flow is not None:
            flow = self._flow.to(self.device, self.dtype, non_blocking=True)
            logits, *self._states = model(self._image_dev, *self._states, flow=flow)
        else:
            logits, *self._states = model(self._image_dev, *self._states)
        self._ran(kind)
        return logits

    def _infer_cuda(self) -> PhaseTimes:
        e0, e1, e2, e3 = self._events
        e0.record()
        self._image_dev.copy_(self._image_host, non_blocking=True)
        e1.record()
        kind = self.next_kind()
        logits = self._run(kind)
        self.torch.argmax(logits, dim=1, out=self._labels_dev)
        e2.record()
        self._labels_host.copy_(self._labels_dev, non_blocking=True)
        if self._logits_host is not None:
            self._logits_host.copy_(logits, non_blocking=True)
        e3.record()
        e3.synchronize()
        return PhaseTimes(h2d=e0.elapsed_time(e1), compute=e1.elapsed_time(e2), d2h=e2.elapsed_time(e3), kind=kind)

    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        rows = self._slots(slots)
        if slots is None or not self._states:  # every slot: new zero tensors
            shapes = [s.shape for s in self.contract.states]
            self._states = [self.torch.zeros(shape, dtype=self.dtype, device=self.device) for shape in shapes]
        else:  # some slots: zero their rows, leave the other slots' state as it is
            with self.torch.inference_mode():  # the states are inference tensors, written only in this mode
                for state in self._states:
                    state[rows] = 0
        self._force_keyframe()

    def state_inputs(self) -> dict[str, np.ndarray]:
        return {
            spec.input: s.detach().cpu().numpy().astype(spec.dtype)
            for spec, s in zip(self.contract.states, self._states, strict=True)
        }

    def nonfinite_slots(self) -> list[int]:
        return nonfinite_rows(self.torch, self._states)

    def state_addresses(self) -> tuple[int, ...]:
        return tuple(s.data_ptr() for s in self._states)

    @property
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return self.torch.cuda.get_device_name(self.device)
        return "cpu"

    def memory(self) -> MemoryInfo:
        """Parameters, state (two sets) and host I/O; device figures on CUDA only."""
        torch = self.torch
        model = self._active_model
        params = sum(p.numel() for p in model.parameters())
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        io = self.image.nbytes + self.labels.nbytes
        # One set of state tensors is kept, but each frame's model call allocates the next set while the set it
        # reads is still alive: two sets at the peak, counted like the two ping-pong buffers of ORT and TensorRT.
        state = 2 * sum(int(np.prod(s.shape)) * s.element_size() for s in self._states)
        info = MemoryInfo(params=params, weights_bytes=weights, state_bytes=state, io_bytes=io)
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            info.device_used_bytes = total - free
            info.activation_bytes = max(0, torch.cuda.max_memory_allocated(self.device) - weights - state)
            info.notes.append("torch: activation_bytes is the CUDA caching allocator's peak less weights and state")
        else:
            info.notes.append("torch on CPU: activations are not tracked")
        return info


def nonfinite_rows(torch: Any, states: Sequence[Any]) -> list[int]:
    """The batch slots (dim 0) of which any state tensor holds a NaN or Inf, in order."""
    bad: set[int] = set()
    for state in states:
        finite = torch.isfinite(state).reshape(len(state), -1).all(dim=1)
        bad.update(int(i) for i in torch.nonzero(~finite).flatten().tolist())
    return sorted(bad)
