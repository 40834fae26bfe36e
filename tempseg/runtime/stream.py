"""The one way to stream a graph: frames through a Runner, the state carried, reset where the policy says.

`stream()` is the stateful stream every stage uses: the runtime's frame loop (runtime/loop.py adds
timing, sinks and accuracy around it), export's parity check, the INT8 calibration reader, the INT8
accuracy check and training's validation. `compare_runners()` streams the same frames through several
runners in lockstep, each carrying its own state (Polygraphy's Comparator.run(runners, data_loader)).
A new temporal family needs a Runner that honours the contract, not a loop of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tempseg.data.flow import GridFlow
from tempseg.data.frames import Frame
from tempseg.runtime.backends.base import PhaseTimes, Runner
from tempseg.runtime.policy import ResetTracker, StatePolicy
from tempseg.runtime.preprocess import Preprocessor
from tempseg.runtime.schedule import UPDATE


@dataclass
class StreamStep:
    """One frame through a runner. `labels` (and `logits`) are the runner's buffers: valid until the next step."""

    frame: Frame
    labels: np.ndarray  # HxW int32 class ids of the first batch item
    logits: np.ndarray | None  # CxHxW of the first batch item, where the runner outputs logits
    inputs: dict[str, np.ndarray] | None  # what the graph read (image, state_in.k), when asked for
    reset: str | None  # why the state was zeroed before this frame, or None
    phases: PhaseTimes  # device phases as the runner timed them
    preprocess_ms: float
    started: float  # perf_counter at the start of the frame
    inferred: float  # perf_counter after infer() returned
    flow_ms: float = 0.0  # host optical flow for an update graph's `flow` input (0 without one)

    @property
    def kind(self) -> str:
        """The graph that ran: "frame", or "keyframe" / "update" for a graph pair."""
        return self.phases.kind


class HostFlow:
    """The `flow` input of an update graph, from the host: OpenCV DIS between this frame and the previous one
    (data/flow.py GridFlow, as in training). Every frame is kept as grey; the flow is computed only for
    frames the update graph runs on, into the runner's flow buffer (each batch slot the same)."""

    def __init__(self, flow_buffer: np.ndarray) -> None:
        self.buffer = flow_buffer
        self.grid = GridFlow(tuple(flow_buffer.shape[-2:]))
        self.previous: np.ndarray | None = None

    def __call__(self, image: np.ndarray, needed: bool) -> float:
        """Milliseconds spent on this frame."""
        start = time.perf_counter()
        grey = self.grid.grey(image)
        if needed and self.previous is not None and self.previous.shape == grey.shape:
            self.grid(grey, self.previous, out=self.buffer[0])
            self.buffer[1:] = self.buffer[0]
        elif needed:  # no earlier frame of this size: no motion known
            self.buffer.fill(0)
        self.previous = grey
        return (time.perf_counter() - start) * 1e3


def stream(
    runner: Runner,
    frames: Iterable[Frame],
    resets: ResetTracker | None = None,
    *,
    capture_inputs: bool = False,
) -> Iterator[StreamStep]:
    """Stream `frames` through an active `runner`: reset decision, preprocess into the runner's input buffer,
    infer (the runner swaps its state buffers), NaN/Inf check of the new state.

    `resets` decides and counts resets (default: at the start and at each new sequence).
    `capture_inputs` copies the image and state inputs of every frame into the step (calibration).
    """
    contract = runner.contract
    preprocess = Preprocessor(contract)
    resets = resets or ResetTracker(StatePolicy())
    host_flow = HostFlow(runner.flow) if runner.flow is not None else None
    for count, frame in enumerate(frames):
        started = time.perf_counter()
        reason = resets.before_frame(frame.image, frame.sequence)
        if reason:
            runner.reset_state()
        for slot in range(contract.batch):  # batch > 1: the same frame in every slot (throughput runs)
            preprocess(frame.image, runner.image, slot)
        flow_ms = host_flow(frame.image, runner.next_kind() == UPDATE) if host_flow is not None else 0.0
        prepared = time.perf_counter()
        inputs = {contract.image.name: runner.image.copy(), **runner.state_inputs()} if capture_inputs else None
        phases = runner.infer()
        inferred = time.perf_counter()
        resets.after_frame()  # counted before a NaN reset, which zeroes the count for the next frame
        if not runner.state_is_finite():
            runner.reset_state()
            resets.non_finite(count)
        logits = None if runner.logits is None else runner.logits[0]
        preprocess_ms = (prepared - started) * 1e3 - flow_ms
        yield StreamStep(
            frame, runner.labels[0], logits, inputs, reason, phases, preprocess_ms, started, inferred, flow_ms
        )


def compare_runners(
    runners: Mapping[str, Runner], frames: Sequence[Frame], policy: StatePolicy | None = None
) -> Iterator[dict[str, StreamStep]]:
    """The same frames through every (active) runner in lockstep, each carrying its own state:
    one dict of steps per frame, keyed like `runners`."""
    streams = {name: stream(r, frames, ResetTracker(policy or StatePolicy())) for name, r in runners.items()}
    for steps in zip(*streams.values(), strict=True):
        yield dict(zip(streams, steps, strict=True))
