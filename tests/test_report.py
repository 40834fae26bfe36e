"""The run report: latency split by phase after warm-up, and the memory figures of the runners."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tempseg.common.contract import Contract, TensorSpec
from tempseg.data.frames import Frame
from tempseg.runtime.backends.base import MemoryInfo, PhaseTimes, Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.loop import PHASES, LoopOptions, LoopResult, TimingLog, run_loop
from tempseg.runtime.report import build_report, format_report, worst_frame
from tests.trt_fakes import tiny_state_graph

H, W = 8, 8
WARMUP = 3
# Warm-up frames take far longer than the measured ones (first-run allocations, JIT): were they counted,
# every figure below would move (the mean by ~170 ms, the max to 900 ms).
WARMUP_TIMES = PhaseTimes(h2d=500.0, compute=900.0, d2h=700.0)
# The measured frames, out of order so the percentiles must sort: compute 1..10 ms, d2h 0.1..1.0 ms.
COMPUTE_MS = [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]
MEASURED_TIMES = [PhaseTimes(h2d=0.5, compute=c, d2h=c / 10) for c in COMPUTE_MS]
# Their statistics by hand (numpy's linear percentiles: p90 of 1..10 sits at 0.9 * 9 = 8.1 -> 9.1).
COMPUTE_STATS = {"mean": 5.5, "p50": 5.5, "p90": 9.1, "p99": 9.91, "max": 10.0}
D2H_STATS = {k: v / 10 for k, v in COMPUTE_STATS.items()}
H2D_STATS = dict.fromkeys(COMPUTE_STATS, 0.5)


class ScriptedRunner(Runner):
    """Computes nothing: labels stay zero, and frame i's infer() returns times[i] as its device phases."""

    backend = "scripted"

    def __init__(self, contract: Contract, times: list[PhaseTimes]) -> None:
        super().__init__(contract)
        self.times = times
        self.frame = 0

    def activate(self) -> None:
        self.image = np.zeros(self.contract.image.shape, np.float32)
        self.labels = np.zeros((self.contract.batch, H, W), np.int32)
        self.frame = 0

    def deactivate(self) -> None:
        pass  # holds nothing to free

    def infer(self) -> PhaseTimes:
        times = self.times[self.frame]
        self.frame += 1
        return times

    def reset_state(self, slots: Sequence[int] | None = None) -> None:
        pass  # stateless

    def nonfinite_slots(self) -> list[int]:
        return []

    def memory(self) -> MemoryInfo:
        return MemoryInfo()


def _contract() -> Contract:
    """A stateless contract of H x W frames, 3 classes."""
    return Contract(
        model="scripted",
        num_classes=3,
        image=TensorSpec("image", (1, 3, H, W), "float32"),
        states=(),
        logits=None,
        labels=TensorSpec("labels", (1, H, W), "int32"),
    )


def _frames(n: int) -> list[Frame]:
    return [Frame(np.full((H, W, 3), 10 * i, np.uint8), None, i, "s") for i in range(n)]


def _run_report(runner: Runner, frames: list[Frame], warmup: int) -> dict:
    """Stream `frames` through `runner` and build its report, as `python -m tempseg.runtime` does."""
    options = LoopOptions(warmup=warmup, progress=False, accuracy=False, consistency=False)
    with runner:
        result = run_loop(runner, frames, options, source_fps=17.0)
        memory = runner.memory()
    return build_report(runner.contract, runner.backend, "cpu", result, memory, source="test")


def test_latency_split_by_phase_leaves_out_the_warmup_frames():
    times = [WARMUP_TIMES] * WARMUP + MEASURED_TIMES
    runner = ScriptedRunner(_contract(), times)
    report = _run_report(runner, _frames(len(times)), WARMUP)
    assert runner.frame == len(times)  # every frame ran, warm-up included
    assert report["frames"] == WARMUP + len(MEASURED_TIMES)
    assert report["warmup_frames"] == WARMUP
    assert set(report["phases_ms"]) == set(PHASES)
    assert report["phases_ms"]["h2d"] == pytest.approx(H2D_STATS)
    assert report["phases_ms"]["compute"] == pytest.approx(COMPUTE_STATS)
    assert report["phases_ms"]["d2h"] == pytest.approx(D2H_STATS)
    assert report["latency_ms"] == report["phases_ms"]["total"]  # the headline figure is the whole frame
    # the console table shows the same figures, one row per phase
    rows = {line.split()[0]: line.split()[1:] for line in format_report(report).splitlines()[2:]}
    assert rows["compute"] == ["5.5000", "5.5000", "9.1000", "9.9100", "10.0"]
    assert rows["h2d"] == ["0.5000"] * 5


def test_a_run_shorter_than_its_warmup_reports_no_latency():
    """--frames 5 with the default warm-up of 10: no figures rather than figures of warm-up frames."""
    runner = ScriptedRunner(_contract(), [WARMUP_TIMES] * 5)
    report = _run_report(runner, _frames(5), warmup=10)
    assert report["frames"] == 5
    assert report["warmup_frames"] == 5
    assert report["phases_ms"]["compute"] == dict.fromkeys(COMPUTE_STATS)
    assert report["fps"] is None
    assert "5 frames (5 warm-up)" in format_report(report)


# ---- the worst frame (an edge user sizes hardware for it) ----------------------------------------------

# (total ms, kind) per frame of a keyframe pair; the first WARMUP are warm-up frames, slower than any other.
# After them the slowest is frame 5, a keyframe between updates, neither the first timed frame nor the last.
PAIR_FRAMES = [
    (900.0, "keyframe"),
    (700.0, "update"),
    (600.0, "update"),
    (35.0, "keyframe"),
    (6.0, "update"),
    (41.23456, "keyframe"),
    (7.5, "update"),
    (38.0, "keyframe"),
    (9.0, "update"),
]


def _timings(frames: list[tuple[float, str]]) -> TimingLog:
    """The loop's timing log of `frames` (total ms, kind), each frame's time all compute."""
    timings = TimingLog()
    for total, kind in frames:
        timings.add(tuple(total if phase in ("compute", "total") else 0.0 for phase in PHASES), kind)
    return timings


def test_the_worst_frame_is_the_slowest_after_the_warmup_with_its_index_and_kind():
    timings = _timings(PAIR_FRAMES)
    worst = worst_frame(timings.rows(WARMUP), timings.kinds_of(WARMUP), WARMUP)
    assert worst == {"frame": 5, "kind": "keyframe", "ms": 41.2346}


def test_the_worst_frame_is_the_slowest_in_total_not_in_compute():
    """An update frame whose host flow makes it the slowest in all, though its compute is the least."""
    timings = _timings([(50.0, "keyframe"), (20.0, "keyframe")])
    timings.add((0.0, 45.0, 0.0, 10.0, 0.0, 0.0, 55.0), "update")
    timings.add((0.0, 0.0, 0.0, 30.0, 0.0, 0.0, 30.0), "keyframe")
    assert worst_frame(timings.rows(1), timings.kinds_of(1), 1) == {"frame": 2, "kind": "update", "ms": 55.0}


def test_tied_worst_frames_report_the_first_of_them():
    frames = [(99.0, "keyframe"), (12.0, "update"), (30.0, "keyframe"), (30.0, "update"), (4.0, "update")]
    timings = _timings(frames)
    assert worst_frame(timings.rows(1), timings.kinds_of(1), 1) == {"frame": 2, "kind": "keyframe", "ms": 30.0}


def test_no_frames_after_the_warmup_have_no_worst_frame():
    timings = _timings(PAIR_FRAMES[:WARMUP])
    assert worst_frame(timings.rows(WARMUP), timings.kinds_of(WARMUP), WARMUP) is None
    assert worst_frame(timings.rows(10), timings.kinds_of(10), WARMUP) is None  # warm-up longer than the run


@pytest.mark.parametrize("warmup", [WARMUP, 20])
def test_the_report_names_the_worst_frame_counting_the_warmup_frames(warmup: int):
    """build_report hands worst_frame the frames after the warm-up and where they start in the stream."""
    timings = _timings(PAIR_FRAMES)
    result = LoopResult(len(PAIR_FRAMES), timings, warmup, {}, None, False, 17.0, 1.0)
    report = build_report(_contract(), "scripted", "cpu", result, MemoryInfo(), source="test")
    if warmup > len(PAIR_FRAMES):
        assert report["worst_frame"] is None
        assert "worst frame" not in format_report(report)
        return
    assert report["worst_frame"] == {"frame": 5, "kind": "keyframe", "ms": 41.2346}
    assert "\n  worst frame   41.2 ms (frame 5, keyframe)\n" in format_report(report)


# ---- memory ------------------------------------------------------------------------------------------


def test_onnxruntime_memory_counts_weights_io_and_both_state_buffers(tmp_path: Path):
    """The one-conv graph of trt_fakes: image 1x3x8x8 -> logits 1x3x8x8, labels 1x8x8, one 1x3x8x8 state."""
    contract = tiny_state_graph(tmp_path / "model.onnx")
    with OnnxRuntimeRunner(contract, tmp_path / "model.onnx") as runner:
        info = runner.memory()
        report = _run_report(runner, _frames(2), warmup=0)
    floats = 4  # bytes of a float32 (and of an int32)
    assert info.weights_bytes == (3 * 3 * 1 * 1 + 1) * floats  # conv weight 3x3x1x1 and the scalar `mix`
    assert info.state_bytes == 2 * (1 * 3 * 8 * 8) * floats  # ping-pong: the state read and the state written
    assert info.io_bytes == (1 * 3 * 8 * 8 + 1 * 3 * 8 * 8 + 1 * 8 * 8) * floats  # image, logits, labels
    for key in ("weights_bytes", "state_bytes", "io_bytes"):
        assert report["memory"][key] == getattr(info, key)  # the report carries the runner's figures


def test_torch_memory_counts_two_state_sets_like_the_ping_pong_runners():
    """The torch runner passes its states back in, so while a frame runs its input and output states both live."""
    pytest.importorskip("torch")
    from tempseg.export.onnx_graph import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner
    from tests.conftest import TINY, TINY_HW, make_tiny_model

    model = make_tiny_model()
    contract = build_contract(model, TINY, height=TINY_HW[0], width=TINY_HW[1], batch=1, checkpoint_sha256=None)
    assert contract.state_bytes > 0  # a temporal model
    with TorchRunner(contract, model=model, device="cpu") as runner:
        runner.infer()
        info = runner.memory()
    assert info.state_bytes == 2 * contract.state_bytes
