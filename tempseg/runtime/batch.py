"""Many cameras, one engine: K streams through one batched graph, each slot carrying its own state.

Frame t of stream k fills batch slot k, and one infer() per tick runs every slot (DeepStream batches streams
the same way, but its nvinfer keeps no state per stream). Each slot has its own ResetTracker: a stream start,
a new sequence, --reset-every, a scene cut or a NaN/Inf in its state zeroes that slot's rows of every state
(runner.reset_state([k]): a memset of the slot's range on a GPU), never the other slots'.

Policies, each chosen so that the batch keeps its shape (the graph's batch is static):
- A stream that ends (end of file, a camera that stopped delivering) leaves its slot: the slot is fed zeros
  from then on and no longer scored or timed; the other streams go on, and the run ends with the last one.
- A stream that stalls holds the tick: frames are read in order, one per stream per tick, so every stream
  stays on the same tick (no frame is dropped or repeated); a camera that never delivers is ended by its
  reader (OpenCV's read timeout), then as above.
- A source that reconnects yields a new sequence: its slot's tracker sees the new sequence id and resets.
- Spare slots (fewer streams than the graph's batch) are fed zeros and never scored.
- Keyframe pairs (Accel): one schedule for the whole batch. A reset in any slot makes the next tick a
  keyframe for every slot. Why not a schedule per slot: a tick where slots disagree would run both graphs
  (two engine calls), and once one slot has reset they disagree on every keyframe after it; an extra
  keyframe only rebuilds a slot's state from its own image (the pair's most accurate frame). Where the
  streams' resets fall on the same ticks (equal sequence lengths, started together), every slot's labels
  equal its stream's run alone; where they do not, a slot gets the extra keyframes its neighbours' resets
  cause, and its labels differ from its run alone on those frames.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from tempseg.common.contract import Contract
from tempseg.common.errors import UserError
from tempseg.data.frames import Frame
from tempseg.runtime.accuracy import AccuracyTracker
from tempseg.runtime.backends.base import PhaseTimes, Runner
from tempseg.runtime.loop import LoopOptions, StopFlag, TimingLog
from tempseg.runtime.policy import ResetTracker, StatePolicy
from tempseg.runtime.preprocess import Preprocessor
from tempseg.runtime.schedule import UPDATE
from tempseg.runtime.stream import HostFlow

log = logging.getLogger(__name__)


@dataclass
class SlotStep:
    """One stream's frame of a tick. `labels` is the runner's buffer for the slot: valid until the next tick."""

    slot: int
    frame: Frame
    labels: np.ndarray  # HxW int32 class ids
    reset: str | None  # why the slot's state was zeroed before this frame, or None
    latency_ms: float  # from reading the frame off its source to its labels on the host


@dataclass
class Tick:
    """One engine call: the frames of every stream that delivered one, and the call's phases."""

    steps: list[SlotStep]
    phases: PhaseTimes
    preprocess_ms: float  # resets and preprocessing of every slot
    flow_ms: float
    started: float  # perf_counter at the start of the tick
    inferred: float  # perf_counter after infer() returned
    read_ms: float = 0.0  # waiting for the sources' frames: the tick's time, not the engine's (left out of phases)


class SlotFeed:
    """One stream's frames into one batch slot: its reset tracker, its flow (update graphs) and its end."""

    def __init__(self, slot: int, frames: Iterable[Frame], runner: Runner, policy: StatePolicy) -> None:
        self.slot = slot
        self.frames = iter(frames)
        self.resets = ResetTracker(policy)
        self.flow = None if runner.flow is None else HostFlow(runner.flow[slot : slot + 1])
        self.count = 0
        self.ended = False

    def read(self) -> Frame | None:
        """The stream's next frame; None once it has ended."""
        if self.ended:
            return None
        frame = next(self.frames, None)
        self.ended = frame is None
        return frame


class BatchStream:
    """Iterating yields one Tick per engine call, source k in batch slot k, until every source has ended.
    `feeds[k]` holds stream k's resets (`.resets.counts`), frame count and whether it has ended."""

    def __init__(self, runner: Runner, sources: Sequence[Iterable[Frame]], policy: StatePolicy | None = None) -> None:
        """UserError when there are no sources or more than the graph's batch (check_streams)."""
        check_streams(runner.contract, len(sources))
        self.runner = runner
        self.feeds = [SlotFeed(k, frames, runner, policy or StatePolicy()) for k, frames in enumerate(sources)]
        self.preprocess = Preprocessor(runner.contract)

    def __iter__(self) -> Iterator[Tick]:
        runner, feeds = self.runner, self.feeds
        _zero_slots(runner, range(len(feeds), runner.contract.batch))  # spare slots
        while True:
            started = time.perf_counter()
            pending, read_ms = _read_tick(runner, feeds, self.preprocess)
            if not pending:
                return
            resets = [slot for slot, (_, reason, _) in pending.items() if reason]
            if resets:
                runner.reset_state(resets)
            flow_ms = _flow(runner, feeds, pending)
            prepared = time.perf_counter()
            phases = runner.infer()
            inferred = time.perf_counter()
            for slot in pending:
                feeds[slot].resets.after_frame()
            _reset_nonfinite(runner, feeds, pending)
            steps = [
                SlotStep(slot, frame, runner.labels[slot], reason, (inferred - read) * 1e3)
                for slot, (frame, reason, read) in pending.items()
            ]
            preprocess_ms = (prepared - started) * 1e3 - flow_ms - read_ms
            yield Tick(steps, phases, preprocess_ms, flow_ms, started, inferred, read_ms)


def check_streams(contract: Contract, count: int) -> None:
    """UserError unless 1 <= count <= the graph's batch, and each state's dim 0 is the batch slot."""
    if count < 1:
        raise UserError("no sources to stream: give at least one --source")
    if count > contract.batch:
        raise UserError(
            f"{count} sources, but the graph takes a batch of {contract.batch}: export it at batch {count} "
            f'(make run SOURCES="..." does; python -m tempseg.export --batch {count})',
            contract.model,
        )
    for state in contract.states:
        if count > 1 and state.shape[0] != contract.batch:
            raise UserError(
                f"{state.input} is {list(state.shape)}: its dim 0 is not the batch of {contract.batch}, so one "
                "stream's state cannot be told from another's",
                contract.model,
            )


def _read_tick(
    runner: Runner, feeds: list[SlotFeed], preprocess: Preprocessor
) -> tuple[dict[int, tuple[Frame, str | None, float]], float]:
    """Each live stream's next frame, preprocessed into its slot: {slot: (frame, reset reason, read time)}, and
    the milliseconds spent waiting for the sources."""
    pending, waited = {}, 0.0
    for feed in feeds:
        if feed.ended:
            continue
        asked = time.perf_counter()
        frame = feed.read()
        read = time.perf_counter()
        waited += read - asked
        if frame is None:
            log.info("stream %d ended after %d frames; its slot is fed zeros from now on", feed.slot, feed.count)
            _zero_slots(runner, [feed.slot])
            continue
        feed.count += 1
        reason = feed.resets.before_frame(frame.image, frame.sequence)
        preprocess(frame.image, runner.image, feed.slot)
        pending[feed.slot] = (frame, reason, read)
    return pending, waited * 1e3


def _flow(runner: Runner, feeds: list[SlotFeed], pending: dict[int, tuple[Frame, str | None, float]]) -> float:
    """An update graph's flow input, slot by slot (each slot's own previous frame); milliseconds spent."""
    needed = runner.next_kind() == UPDATE  # after this tick's resets: a reset makes the tick a keyframe
    return sum(
        feed.flow(pending[feed.slot][0].image, needed)
        for feed in feeds
        if feed.flow is not None and feed.slot in pending
    )


def _reset_nonfinite(runner: Runner, feeds: list[SlotFeed], pending: dict) -> None:
    """Zero the slots whose new state holds NaN/Inf; a live stream's tracker counts it and restarts."""
    bad = runner.nonfinite_slots()
    if not bad:
        return
    runner.reset_state(bad)
    for slot in bad:
        if slot in pending:
            feeds[slot].resets.non_finite(feeds[slot].count - 1)


def _zero_slots(runner: Runner, slots: Iterable[int]) -> None:
    """Feed zeros to `slots` (spare or ended): their image and flow, so the batch keeps its shape."""
    for slot in slots:
        runner.image[slot] = 0
        if runner.flow is not None:
            runner.flow[slot] = 0


# ---- the runtime's batched loop: per-stream latency and accuracy --------------------------------------------


@dataclass
class StreamResult:
    """One stream of a batched run: each frame's latency (ms, frame read to labels), its resets and accuracy."""

    slot: int
    name: str
    latency: list[float] = field(default_factory=list)
    resets: dict[str, int] = field(default_factory=dict)
    accuracy: AccuracyTracker | None = None
    ended: bool = False  # the source ran out before the run stopped

    @property
    def frames(self) -> int:
        return len(self.latency)


@dataclass
class BatchResult:
    ticks: TimingLog  # one row per engine call: the phases of the whole batch
    live: list[int]  # how many streams had a frame in each tick
    streams: list[StreamResult]
    warmup: int
    interrupted: bool
    source_fps: float
    wall_seconds: float


Sink = Callable[[Frame, np.ndarray], None]


def run_batch(
    runner: Runner,
    sources: Sequence[Iterable[Frame]],
    names: Sequence[str],
    options: LoopOptions,
    *,
    source_fps: float,
    sinks: Sequence[Sequence[Sink]] = (),
) -> BatchResult:
    """The batched frame loop: `sources` through an active `runner` until every stream has ended, or after
    `options.max_frames` ticks, or Ctrl-C (after the current tick). `sinks[k]`: stream k's frame sinks."""
    results = [StreamResult(k, name) for k, name in enumerate(names)]
    for result in results:
        if options.accuracy:
            result.accuracy = AccuracyTracker(runner.contract.num_classes, consistency=options.consistency)
    batch = BatchStream(runner, sources, options.policy)
    ticks, live, started = TimingLog(), [], time.perf_counter()
    with StopFlag() as stop:
        for tick in itertools.islice(batch, options.max_frames):
            for step in tick.steps:
                for sink in sinks[step.slot] if sinks else ():
                    sink(step.frame, step.labels)
                results[step.slot].latency.append(step.latency_ms)
            done = time.perf_counter()
            p = tick.phases
            row = (tick.preprocess_ms, tick.flow_ms, p.h2d, p.compute, p.d2h, (done - tick.inferred) * 1e3)
            ticks.add((*row, (done - tick.started) * 1e3 - tick.read_ms), p.kind)
            for step in tick.steps:  # untimed, as in the single-stream loop
                accuracy = results[step.slot].accuracy
                if accuracy is not None:
                    accuracy.update(step.frame, step.labels)
            live.append(len(tick.steps))
            if stop.requested:
                break
    for result, feed in zip(results, batch.feeds, strict=True):
        result.resets, result.ended = dict(feed.resets.counts), feed.ended
    wall = time.perf_counter() - started
    return BatchResult(ticks, live, results, options.warmup, stop.requested, source_fps, wall)
