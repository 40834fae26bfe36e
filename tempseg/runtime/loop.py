"""The runtime's frame loop: the one stateful stream (runtime/stream.py) with timing, outputs and accuracy.

Per frame (runtime/stream.py): reset decision -> preprocess into the runner's input buffer ->
runner.infer() (copy in, execute, copy labels out, swap state buffers) -> NaN/Inf check of the new
state; then here: postprocess (outputs, sinks) -> accuracy (untimed). Every buffer belongs to the runner and was
allocated before the first frame. Ctrl-C stops after the current frame; the frames done are
reported.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from tempseg.data.frames import Frame
from tempseg.runtime.accuracy import AccuracyTracker
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.policy import ResetTracker, StatePolicy
from tempseg.runtime.schedule import FRAME, KINDS
from tempseg.runtime.stream import stream

log = logging.getLogger(__name__)
PHASES = ("preprocess", "flow", "h2d", "compute", "d2h", "postprocess", "total")


class TimingLog:
    """Per-frame phase times (ms) and the kind of each frame, in preallocated arrays that double when full."""

    def __init__(self, capacity: int = 1024) -> None:
        self.data = np.zeros((capacity, len(PHASES)), np.float64)
        self.kinds = np.zeros(capacity, np.int8)
        self.count = 0

    def add(self, row: tuple[float, ...], kind: str = FRAME) -> None:
        if self.count == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
            self.kinds = np.concatenate([self.kinds, np.zeros_like(self.kinds)])
        self.data[self.count] = row
        self.kinds[self.count] = KINDS.index(kind)
        self.count += 1

    def rows(self, skip: int = 0) -> np.ndarray:
        return self.data[min(skip, self.count) : self.count]

    def kinds_of(self, skip: int = 0) -> list[str]:
        """The kind of each row of rows(skip)."""
        return [KINDS[k] for k in self.kinds[min(skip, self.count) : self.count]]


@dataclass
class LoopOptions:
    """warmup: frames left out of the latency statistics (their accuracy still counts).
    max_frames: stop after this many frames (None: until the source ends).
    accuracy: score frames that carry labels (mIoU of all, clean and degraded frames, FLAME).
    consistency: temporal consistency TC (DIS optical flow per frame; costs a few ms, untimed).
    """

    warmup: int = 10
    max_frames: int | None = None
    policy: StatePolicy = field(default_factory=StatePolicy)
    accuracy: bool = True
    consistency: bool = True
    progress: bool = True


@dataclass
class LoopResult:
    frames: int
    timings: TimingLog
    warmup: int
    resets: dict[str, int]
    accuracy: AccuracyTracker | None
    interrupted: bool
    source_fps: float
    wall_seconds: float


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current frame; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after the current frame (Ctrl-C again to abort)")


Sink = Callable[[Frame, np.ndarray], None]


def run_loop(
    runner: Runner,
    frames: Iterable[Frame],
    options: LoopOptions,
    *,
    source_fps: float,
    sinks: tuple[Sink, ...] = (),
    total: int | None = None,
) -> LoopResult:
    """Stream `frames` through an active `runner`; returns timings, resets and accuracy."""
    contract = runner.contract
    resets = ResetTracker(options.policy)
    accuracy = AccuracyTracker(contract.num_classes, consistency=options.consistency) if options.accuracy else None
    timings = TimingLog(max(16, (options.max_frames or total or 1024) + 1))
    count, started = 0, time.perf_counter()
    bar = tqdm(
        total=options.max_frames or total,
        unit="frame",
        desc=f"{contract.model} {contract.precision} {runner.backend}",
        disable=not options.progress,
    )
    with StopFlag() as stop:
        for step in stream(runner, frames, resets):
            for sink in sinks:
                sink(step.frame, step.labels)
            done = time.perf_counter()
            phases = step.phases
            postprocess_ms = (done - step.inferred) * 1e3
            total_ms = (done - step.started) * 1e3
            row = (step.preprocess_ms, step.flow_ms, phases.h2d, phases.compute, phases.d2h, postprocess_ms, total_ms)
            timings.add(row, step.kind)
            if accuracy is not None:
                accuracy.update(step.frame, step.labels)
            count += 1
            _progress(bar, timings, count)
            if stop.requested or (options.max_frames and count >= options.max_frames):
                break
    bar.close()
    return LoopResult(
        count,
        timings,
        options.warmup,
        dict(resets.counts),
        accuracy,
        stop.requested,
        source_fps,
        time.perf_counter() - started,
    )


def _progress(bar: tqdm, timings: TimingLog, count: int) -> None:
    bar.update(1)
    if count % 10 == 0:
        recent = timings.rows(max(0, count - 50))[:, -1]
        bar.set_postfix(fps=f"{1000.0 / max(1e-6, float(recent.mean())):.1f}", refresh=False)
