"""One runner interface for every backend (Polygraphy's BaseRunner pattern).

A runner owns every buffer of the loop, allocated once in `activate()`:
- `image`: host input buffer, float32 [N,3,H,W] (pinned on GPU backends); the loop
  preprocesses each frame straight into it;
- `labels`: host output buffer, int32 [N,H,W], filled by `infer()`;
- two buffers per state tensor, swapped after each frame (no state copy); dim 0 of every state is the
  batch slot, so each slot (a camera of a batched run) carries its own state and is reset on its own;
- `flow`: host input buffer, float32 [N,2,h,w], for a graph pair whose update graph takes a flow
  (runtime/stream.py fills it before an update frame).

`infer()` runs one frame and returns the time of each device phase. The frame loop in
runtime/loop.py is written once, above this interface. A graph pair (contract role "update") is one
runner holding both graphs over the same state buffers: `infer()` runs the graph the schedule
(runtime/schedule.py) names, and a reset makes the next frame a keyframe. The schedule is the batch's: a
reset of any slot makes the next frame a keyframe for every slot (runtime/batch.py says why).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from tempseg.common.contract import Contract
from tempseg.runtime.schedule import FRAME, KeyframeSchedule


@dataclass
class PhaseTimes:
    """Milliseconds spent in each device phase of one frame (0 where the backend has none)."""

    h2d: float = 0.0
    compute: float = 0.0
    d2h: float = 0.0
    kind: str = FRAME  # the graph that ran: "frame" (a single graph), "keyframe" or "update"


@dataclass
class MemoryInfo:
    """Bytes, as the report's `memory` section names them; None where a backend cannot tell."""

    params: int | None = None
    weights_bytes: int | None = None
    engine_file_bytes: int | None = None
    activation_bytes: int | None = None
    state_bytes: int | None = None
    io_bytes: int | None = None
    # the device memory this runner holds: its own buffers plus what the engine says its contexts and weights take
    device_runner_bytes: int | None = None
    device_used_bytes: int | None = None  # cudaMemGetInfo's total - free: the whole GPU, CUDA context included
    notes: list[str] = field(default_factory=list)


class Runner(abc.ABC):
    """Context manager: `with runner: runner.image[...] = x; runner.infer(); runner.labels`."""

    backend: str = "base"

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.image: np.ndarray = np.empty(0, np.float32)
        self.labels: np.ndarray = np.empty(0, np.int32)
        self.logits: np.ndarray | None = None  # host [N,C,H,W] where the contract has logits and the runner fills them
        self.flow: np.ndarray | None = None  # host [N,2,h,w] where the update graph takes a flow
        self.is_active = False
        self.schedule: KeyframeSchedule | None = None
        if contract.role == "update":
            self.schedule = KeyframeSchedule(contract.schedule.get("keyframe_every"), source=contract.model)
        self.keyframe_contract: Contract | None = None  # set by runners of a graph pair

    def next_kind(self) -> str:
        """The graph the next infer() runs: "frame", or "keyframe" / "update" by the schedule."""
        return FRAME if self.schedule is None else self.schedule.next_kind()

    def _ran(self, kind: str) -> None:
        if self.schedule is not None:
            self.schedule.ran(kind)

    def _force_keyframe(self) -> None:
        """A reset: a graph pair's next frame rebuilds the state on a keyframe."""
        if self.schedule is not None:
            self.schedule.force()

    def _allocate_flow(self) -> None:
        c = self.contract
        self.flow = None if c.flow is None else np.zeros(c.flow.shape, np.float32)

    @property
    def is_pair(self) -> bool:
        """True for the runner of a keyframe pair (a schedule picks the graph per frame)."""
        return self.schedule is not None

    def __enter__(self) -> Runner:
        self.activate()
        self.is_active = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.is_active = False
        self.deactivate()

    @abc.abstractmethod
    def activate(self) -> None:
        """Load the model and allocate every buffer; zero the state."""

    @abc.abstractmethod
    def deactivate(self) -> None:
        """Free what activate() allocated."""

    @abc.abstractmethod
    def infer(self) -> PhaseTimes:
        """Run one frame from `self.image` into `self.labels`; the next state becomes current."""

    @abc.abstractmethod
    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        """Zero the current state of the batch slots `slots` (None: every slot), leaving the others' untouched
        (start of a stream, a reset); a graph pair's next frame is then a keyframe."""

    @abc.abstractmethod
    def nonfinite_slots(self) -> list[int]:
        """The batch slots whose state for the next frame holds NaN or Inf, as far as the runner has checked:
        the TensorRT runner copies its state back for the check every few frames only."""

    def state_is_finite(self) -> bool:
        """No slot's state holds NaN or Inf (as far as checked)."""
        return not self.nonfinite_slots()

    def _slots(self, slots: Sequence[int] | None) -> list[int]:
        """`slots` checked against the batch (None: all of them)."""
        batch = self.contract.batch
        if slots is None:
            return list(range(batch))
        wrong = [s for s in slots if not 0 <= s < batch]
        if wrong:
            raise IndexError(f"batch slots {wrong} outside the graph's batch of {batch}")
        return list(slots)

    @abc.abstractmethod
    def memory(self) -> MemoryInfo:
        """Memory figures of this runner after activation; state_bytes counts both buffers of each state
        (the one a frame reads and the one it writes)."""

    def state_inputs(self) -> dict[str, np.ndarray]:
        """Host copies of the states the next frame reads, by input name: what calibration feeds ONNX
        Runtime's calibrators. A copy per call, for calibration and checks, never for the frame loop."""
        raise NotImplementedError(f"{type(self).__name__} does not hand its state to the host")

    def state_addresses(self) -> tuple[int, ...]:
        """Addresses of the buffers the next frame reads its states from (to prove no-copy swaps)."""
        return ()

    @property
    def device_name(self) -> str:
        return "cpu"
