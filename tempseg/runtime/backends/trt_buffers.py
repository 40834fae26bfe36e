"""The TensorRT runner's buffers, allocated once, and the state ping-pong (Polygraphy's cuda buffers, here
`FrameBuffers`; trt_runner.py allocates them in activate() and frees them in deactivate()).

Everything is allocated once: pinned host `image` / `labels` (and `flow` for an update graph), one device
buffer per I/O tensor that keeps its address for the whole run (image, flow, logits, labels), TWO per state
and a pinned mirror per state; fixed_addresses() is what an engine binds once. A graph with logits but no
labels output gets its logits copied back instead, and the runner takes the argmax on the host.

State ping-pong: frame t reads buffer A and writes B, frame t+1 reads B and writes A: no state copy.
state_bindings() gives an engine the addresses of each parity. A keyframe pair's two engines share every
buffer (check_keyframe_pair: same image and states; same outputs): image, logits, labels and the one set of
state pairs. The keyframe engine binds image/logits/labels and only the state outputs (it reads no state:
its state_out.k goes to the buffer the update graph would write for that parity); the update engine binds
as a single graph does, plus `flow` (a device buffer fed from the pinned host `flow` the stream fills,
copied in with the image on update frames only).

The NaN/Inf check of the state runs every `nan_check_every` frames (default 10; the runner counts), not
every frame: on those frames the new state is also copied into its pinned host mirror (mirror_written), on
the same stream after the frame's last event (outside the timed phases, before the one synchronize: no
extra sync), and nonfinite_slots() scans the mirror once; on the other frames nothing but the labels leaves
the device and nonfinite_slots() returns the last check's answer.
- What a check costs: a D2H copy and a host scan of every state's bytes. fcresnet18_t66 at 256x512 has one
  state of 38 KB in FP32 (19 KB in FP16): by estimate tens of microseconds, not yet measured on a GPU,
  against a frame of milliseconds; a model whose state holds several frames of keys and values (MBs) pays
  proportionally more. Checked every N frames, that is 1/N of it per frame.
- What a late detection costs: a NaN/Inf written at frame t is seen at the next check, at most N - 1 frames
  later; the frames in between run from the poisoned state (their labels are meaningless where the NaN has
  spread), then the loop zeroes the state as at a stream start. At N = 10 and 30 fps that is at most 0.3 s
  of bad labels. N = 1 checks every frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tempseg.common.contract import Contract, StateSpec, TensorSpec
from tempseg.common.errors import require
from tempseg.runtime.cuda import CudaApi, DeviceBuffer, Stream


@dataclass
class StatePair:
    """One state tensor: two device buffers that take turns as input and output, and a pinned host mirror."""

    spec: StateSpec
    buffers: tuple[DeviceBuffer, DeviceBuffer]
    mirror: np.ndarray  # the state the next frame reads, copied back on check frames for nonfinite_slots()


class FrameBuffers:
    """Every buffer of the frame loop: empty until allocate(), empty again after free()."""

    def __init__(self) -> None:
        self.cuda: CudaApi | None = None
        self.device: dict[str, DeviceBuffer] = {}  # image, flow, logits, labels
        self.states: list[StatePair] = []
        self.host: list[np.ndarray] = []  # every pinned array, freed in free()
        self.inputs: dict[str, np.ndarray] = {}  # pinned image and flow by tensor name: what the H2D copies read
        self.output = np.empty(0, np.int32)  # what the D2H copy fills (labels, or logits as fallback)
        self.output_name = ""
        self.image = np.empty(0, np.float32)
        self.flow: np.ndarray | None = None
        self.labels = np.empty(0, np.int32)  # the runner's labels: `output` itself where that is int32 labels
        self._mirrored = False  # the mirrors hold a state copied back since the last nonfinite_slots()
        self._nonfinite: list[int] = []  # the last check's answer: slots whose state held NaN/Inf

    def allocate(self, cuda: CudaApi, contract: Contract, specs: Mapping[str, TensorSpec]) -> None:
        """Every buffer of `contract`, device I/O sized as the engine's `specs`. Kept as it is made, so free()
        releases what a failed allocate() had made."""
        self.cuda = cuda
        self.image = self._pinned(contract.image)
        self.inputs[contract.image.name] = self.image
        for spec in fixed_tensors(contract):
            self.device[spec.name] = cuda.device_buffer(specs[spec.name].nbytes)
        if contract.flow is not None:
            self.flow = self._pinned(contract.flow)  # the stream writes the flow here before an update frame
            self.inputs[contract.flow.name] = self.flow
        for spec in contract.states:
            pair = (cuda.device_buffer(spec.nbytes), cuda.device_buffer(spec.nbytes))
            self.states.append(StatePair(spec, pair, self._pinned(TensorSpec(spec.input, spec.shape, spec.dtype))))
        out = contract.labels or contract.logits  # labels from the graph; logits only as the fallback
        if out is None:  # contract_from_io refuses a graph with neither: only a contract made by hand has none
            raise ValueError(f"contract of {contract.model} has neither a logits nor a labels output")
        self.output, self.output_name = self._pinned(out), out.name
        if contract.labels is not None and contract.labels.dtype == "int32":
            self.labels = self.output  # the D2H copy lands where the loop reads: no host copy
        else:
            self.labels = np.zeros((contract.batch, contract.height, contract.width), np.int32)

    @property
    def _api(self) -> CudaApi:
        """The api allocate() was given (the buffers' owner frees them with it)."""
        return require(self.cuda, "FrameBuffers used before allocate()")

    def _pinned(self, spec: TensorSpec) -> np.ndarray:
        array = self._api.host_array(tuple(spec.shape), np.dtype(spec.dtype))
        self.host.append(array)
        return array

    # ---- addresses an engine binds -------------------------------------------------------------------

    def fixed_addresses(self, contract: Contract) -> dict[str, int]:
        """Image, flow, logits and labels keep their addresses for the whole run (a keyframe graph has no flow)."""
        return {spec.name: self.device[spec.name].ptr for spec in fixed_tensors(contract)}

    def state_bindings(self, contract: Contract) -> tuple[dict[str, int], dict[str, int]]:
        """The state addresses a frame of parity 0 and of parity 1 binds: it reads buffers[parity] (a keyframe
        graph reads none) and writes buffers[1 - parity]."""
        return self._state_addresses(contract, 0), self._state_addresses(contract, 1)

    def _state_addresses(self, contract: Contract, parity: int) -> dict[str, int]:
        addresses = {}
        for spec, pair in zip(contract.states, self.states, strict=True):
            if contract.reads_states:
                addresses[spec.input] = pair.buffers[parity].ptr
            addresses[spec.output] = pair.buffers[1 - parity].ptr
        return addresses

    def current_addresses(self, parity: int) -> tuple[int, ...]:
        """The buffers the next frame (of `parity`) reads its states from."""
        return tuple(pair.buffers[parity].ptr for pair in self.states)

    # ---- per frame -----------------------------------------------------------------------------------

    def upload(self, names: Iterable[str], stream: Stream) -> None:
        """H2D copies of the pinned inputs `names` (the image, and the flow before an update frame)."""
        for name in names:
            self._api.memcpy_htod_async(self.device[name].ptr, self.inputs[name], stream)

    def download(self, stream: Stream) -> None:
        """D2H copy of the labels (or logits); the logits of a graph with labels stay on the device."""
        self._api.memcpy_dtoh_async(self.output, self.device[self.output_name].ptr, stream)

    def mirror_written(self, parity: int, stream: Stream) -> None:
        """A check frame: copy the states a frame of `parity` wrote (what the next frame reads) to the mirrors."""
        for pair in self.states:
            self._api.memcpy_dtoh_async(pair.mirror, pair.buffers[1 - parity].ptr, stream)
        self._mirrored = True

    def nonfinite_slots(self) -> list[int]:
        """The last check's answer: scans the mirrors once after a check frame, else answers from memory."""
        if self._mirrored:
            self._nonfinite = sorted({slot for pair in self.states for slot in _nonfinite_slots(pair.mirror)})
            self._mirrored = False
        return self._nonfinite

    def reset(self, parity: int, stream: Stream, slots: Sequence[int]) -> None:
        """Zero batch slots `slots` of the states the next frame (of `parity`) reads, ordered on `stream` before
        that frame: one async memset per run of adjacent slots (dim 0 of a state is its slot), the other slots'
        bytes untouched."""
        for pair in self.states:
            current = pair.buffers[parity]
            row = current.nbytes // len(pair.mirror)  # bytes of one slot's state
            for first, count in _runs(slots):
                self._api.memset_async(current.ptr + first * row, 0, count * row, stream)
            pair.mirror[list(slots)] = 0
        zeroed = set(slots)
        self._nonfinite = [s for s in self._nonfinite if s not in zeroed]

    # ---- figures, free -------------------------------------------------------------------------------

    @property
    def state_bytes(self) -> int:
        """Both buffers of each state pair."""
        return sum(b.nbytes for pair in self.states for b in pair.buffers)

    @property
    def io_bytes(self) -> int:
        """Image, flow, logits and labels on the device."""
        return sum(b.nbytes for b in self.device.values())

    def free(self) -> None:
        """Free every device buffer and pinned array (nothing may still be copying into them); the runner
        drops this object after it."""
        for buffer in [*self.device.values(), *(b for pair in self.states for b in pair.buffers)]:
            buffer.free()
        for array in self.host:
            self._api.free_host(array)


def fixed_tensors(contract: Contract) -> list[TensorSpec]:
    """The tensors a context reads or writes at one address all run: image, flow (update graph), logits, labels."""
    return [t for t in (contract.image, contract.flow, contract.logits, contract.labels) if t is not None]


def _nonfinite_slots(state: np.ndarray) -> list[int]:
    """The slots (dim 0) of `state` holding NaN/Inf: a float64 sum is NaN or Inf exactly when an element is (no
    finite float16/32 values can overflow it), and unlike np.isfinite(state) it allocates nothing of the state's
    size: one float64 per slot."""
    sums = np.sum(state.reshape(len(state), -1), axis=1, dtype=np.float64)
    return [int(slot) for slot in np.flatnonzero(~np.isfinite(sums))]


def _runs(slots: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted `slots` as (first, count) runs of adjacent slots: [0, 1, 3] -> [(0, 2), (3, 1)]."""
    runs: list[tuple[int, int]] = []
    for slot in sorted(set(slots)):
        if runs and runs[-1][0] + runs[-1][1] == slot:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((slot, 1))
    return runs
