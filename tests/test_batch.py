"""Many cameras, one engine: K streams batched through one graph, each slot with its own state (runtime/batch.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.models import random_model
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.batch import BatchStream, check_streams, run_batch
from tempseg.runtime.loop import LoopOptions
from tempseg.runtime.schedule import KEYFRAME, UPDATE
from tempseg.runtime.stream import stream
from tests.trt_fakes import FAKE_GPU, make_fake_pair, make_fake_runner

HW = (64, 128)
# the three graph families: a feature map carried (T 6-6), memory attention (keys and values), a keyframe pair
FAMILIES = ("fcresnet18x0.25_t66", "fcresnet18x0.25_lma3r2", "fcresnet18x0.25_accel18x0.25")


def _clip(seed: int, count: int, sequence: str) -> list[Frame]:
    video = SyntheticVideo(split_seed("val", seed), *HW, length=count)
    return [Frame(image=f.image, label=None, index=i, sequence=sequence) for i, f in enumerate(video)]


def _video(seed: int, lengths: tuple[int, ...] = (5, 4)) -> list[Frame]:
    """Two sequences back to back (a sequence reset midway), different per seed."""
    return [f for i, n in enumerate(lengths) for f in _clip(seed * 10 + i, n, f"v{seed}/{i}")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Per family: a checkpoint, and its graphs exported at batch 1 (run dir) and batch 2 (run dir/batch2)."""
    from tempseg.export.__main__ import main as export_main
    from tempseg.models.checkpoint import save_checkpoint

    out = {}
    for name in FAMILIES:
        run = tmp_path_factory.mktemp("runs") / name
        save_checkpoint(run / "checkpoint.pt", random_model(name), name)
        for batch, folder in ((1, run), (2, run / "batch2")):
            argv = ["--model", name, "--checkpoint", str(run / "checkpoint.pt"), "--height", str(HW[0])]
            argv += ["--width", str(HW[1]), "--batch", str(batch), "--parity-frames", "2", "--out-dir", str(folder)]
            assert export_main([*argv, "--keyframe-every", "3"] if "accel" in name else argv) == 0
        out[name] = run
    return out


@pytest.fixture
def fake_gpu(monkeypatch) -> None:
    from tempseg.runtime.backends import trt_runner

    monkeypatch.setattr(trt_runner, "cuda_gpu", lambda: FAKE_GPU)


def _runner(backend: str, folder: Path, run: Path) -> Runner:
    contract = read_onnx_contract(folder / "model.onnx")
    if backend == "torch":
        return TorchRunner(contract, run / "checkpoint.pt", device="cpu")
    return OnnxRuntimeRunner(contract, folder / "model.onnx")


def _alone(runner: Runner, frames: list[Frame]) -> tuple[list[np.ndarray], list[str]]:
    with runner:
        steps = [(s.labels.copy(), s.kind) for s in stream(runner, frames)]
    return [labels for labels, _ in steps], [kind for _, kind in steps]


def _batched(runner: Runner, sources: list[list[Frame]]) -> tuple[dict[int, list[np.ndarray]], list[str]]:
    labels: dict[int, list[np.ndarray]] = {k: [] for k in range(len(sources))}
    kinds = []
    with runner:
        for tick in BatchStream(runner, sources):
            kinds.append(tick.phases.kind)
            for step in tick.steps:
                labels[step.slot].append(step.labels.copy())
    return labels, kinds


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("name", FAMILIES)
def test_two_streams_batched_give_each_streams_labels_alone(runs, name, backend):
    run, a, b = runs[name], _video(1), _video(2)
    alone_a, kinds_a = _alone(_runner(backend, run, run), a)
    alone_b, _ = _alone(_runner(backend, run, run), b)
    batched, kinds = _batched(_runner(backend, run / "batch2", run), [a, b])
    assert kinds == kinds_a  # a pair's schedule: the same keyframes as alone (the resets fall on the same ticks)
    for t in range(len(a)):
        np.testing.assert_array_equal(batched[0][t], alone_a[t], err_msg=f"stream 0, frame {t}")
        np.testing.assert_array_equal(batched[1][t], alone_b[t], err_msg=f"stream 1, frame {t}")
    assert any(not np.array_equal(x, y) for x, y in zip(alone_a, alone_b, strict=True))  # the streams differ


@pytest.mark.parametrize("name", FAMILIES)
def test_the_same_video_in_two_slots_gives_identical_labels_and_states(runs, name):
    run, video = runs[name], _video(3)
    runner = _runner("onnxruntime", run / "batch2", run)
    assert isinstance(runner, OnnxRuntimeRunner)
    with runner:
        for tick in BatchStream(runner, [video, video]):
            np.testing.assert_array_equal(tick.steps[0].labels, tick.steps[1].labels)
            for k in range(len(runner.contract.states)):
                state = runner.current_state(k)
                np.testing.assert_array_equal(state[0], state[1])


def _slot_states(runner: Runner) -> list[np.ndarray]:
    return [s.copy() for s in runner.state_inputs().values()]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_reset_of_one_slot_leaves_the_others_state_bit_identical(runs, backend):
    name = FAMILIES[1]  # two states: every state tensor is reset by slot
    run = runs[name]
    runner = _runner(backend, run / "batch2", run)
    with runner:
        ticks = iter(BatchStream(runner, [_video(4), _video(5)]))
        for _ in range(3):
            next(ticks)
        before = _slot_states(runner)
        runner.reset_state([0])
        after = _slot_states(runner)
    for old, new in zip(before, after, strict=True):
        assert old[0].any()
        assert not new[0].any()
        np.testing.assert_array_equal(new[1], old[1])  # slot 1 untouched, bit for bit


def test_the_tensorrt_runner_resets_one_slot_with_a_memset_of_its_range(runs, tmp_path, fake_gpu):
    graph = runs[FAMILIES[0]] / "batch2" / "model.onnx"
    runner, cuda = make_fake_runner(tmp_path, graph=graph)
    with runner:
        ticks = iter(BatchStream(runner, [_video(6), _video(7)]))
        next(ticks)
        (buffer,) = runner.state_addresses()  # the state buffer the next frame reads
        cuda._log.clear()
        runner.reset_state([1])
    row = runner.contract.states[0].nbytes // 2  # one slot's bytes
    assert [entry for entry in cuda._log if entry[0] == "memset"] == [("memset", buffer + row, row)]


def test_batched_through_the_tensorrt_runner_equals_each_stream_alone(runs, tmp_path, fake_gpu):
    run, a, b = runs[FAMILIES[0]], _video(1), _video(2)
    for folder in ("a", "b", "ab"):
        (tmp_path / folder).mkdir()
    alone_a, _ = _alone(make_fake_runner(tmp_path / "a", graph=run / "model.onnx")[0], a)
    alone_b, _ = _alone(make_fake_runner(tmp_path / "b", graph=run / "model.onnx")[0], b)
    batched, _ = _batched(make_fake_runner(tmp_path / "ab", graph=run / "batch2" / "model.onnx")[0], [a, b])
    for t in range(len(a)):
        np.testing.assert_array_equal(batched[0][t], alone_a[t])
        np.testing.assert_array_equal(batched[1][t], alone_b[t])


def test_a_keyframe_pair_through_the_tensorrt_runner_batches_both_engines(runs, tmp_path, fake_gpu):
    folder = runs[FAMILIES[2]] / "batch2"
    graphs = (folder / "model.onnx", folder / "keyframe.onnx")
    runner, _ = make_fake_pair(tmp_path, graphs=graphs)
    labels, kinds = _batched(runner, [_video(1), _video(2)])
    assert KEYFRAME in kinds
    assert UPDATE in kinds
    assert len(labels[0]) == len(labels[1]) == 9


def test_a_reset_in_one_slot_makes_the_next_tick_a_keyframe_for_every_slot(runs):
    run = runs[FAMILIES[2]]
    a = _video(1, (9,))
    b = _video(2, (4, 5))  # a new sequence at frame 4: slot 1 resets there, slot 0 does not
    _, kinds = _batched(_runner("onnxruntime", run / "batch2", run), [a, b])
    # keyframe every 3: ticks 0 and 3 by the schedule, then the reset at 4 restarts it for the batch: 4 and 7
    assert [t for t, kind in enumerate(kinds) if kind == KEYFRAME] == [0, 3, 4, 7]


def test_a_stream_that_ends_early_leaves_the_others_running(runs, caplog):
    run = runs[FAMILIES[0]]
    a, short = _video(1), _video(2)[:4]
    alone_a, _ = _alone(_runner("onnxruntime", run, run), a)
    runner = _runner("onnxruntime", run / "batch2", run)
    options = LoopOptions(warmup=0, accuracy=False, progress=False)
    with caplog.at_level(logging.INFO, logger="tempseg.runtime.batch"), runner:
        result = run_batch(runner, [a, short], ["a", "short"], options, source_fps=17.0)
    assert [s.frames for s in result.streams] == [len(a), 4]
    assert [s.ended for s in result.streams] == [True, True]
    assert result.live == [2] * 4 + [1] * (len(a) - 4)
    assert "stream 1 ended after 4 frames" in caplog.text
    batched, _ = _batched(_runner("onnxruntime", run / "batch2", run), [a, short])
    for t in range(len(a)):
        np.testing.assert_array_equal(batched[0][t], alone_a[t])


def test_a_nan_in_one_slot_resets_that_slot_alone(runs):
    run = runs[FAMILIES[0]]
    runner = _runner("onnxruntime", run / "batch2", run)
    assert isinstance(runner, OnnxRuntimeRunner)
    infer, frames = runner.infer, [0]

    def infer_poisoning_slot_1():  # the state that tick 2 writes for slot 1 holds a NaN, as a corrupted frame's would
        times = infer()
        frames[0] += 1
        if frames[0] == 2:
            runner.current_state(0)[1, 0, 0, 0] = np.nan
        return times

    runner.infer = infer_poisoning_slot_1
    with runner:
        batch = BatchStream(runner, [_video(1), _video(2)])
        ticks = iter(batch)
        next(ticks)
        next(ticks)
        assert runner.nonfinite_slots() == []  # seen and zeroed within the tick
        slot_0 = runner.current_state(0)[0].copy()
        assert slot_0.any()
        assert not runner.current_state(0)[1].any()
    assert [feed.resets.counts["non_finite"] for feed in batch.feeds] == [0, 1]


def test_fewer_streams_than_slots_feed_zeros_to_the_spare_slot(runs):
    run = runs[FAMILIES[0]]
    runner = _runner("onnxruntime", run / "batch2", run)
    with runner:
        ticks = list(BatchStream(runner, [_video(1)]))
        assert not runner.image[1].any()
    assert all(len(t.steps) == 1 for t in ticks)


def test_no_streams_and_more_streams_than_slots_are_refused(runs):
    contract = read_onnx_contract(runs[FAMILIES[0]] / "batch2" / "model.onnx")
    with pytest.raises(UserError, match="no sources"):
        check_streams(contract, 0)
    with pytest.raises(UserError, match="3 sources, but the graph takes a batch of 2"):
        check_streams(contract, 3)
    check_streams(contract, 2)


# ---- the command line -------------------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    from tempseg.common.errors import run_cli
    from tempseg.runtime.__main__ import main

    return run_cli(main, argv)


def test_cli_streams_several_sources_with_a_row_per_stream(runs, tmp_path, capsys):
    folder = runs[FAMILIES[0]] / "batch2"
    report = tmp_path / "run.json"
    sources = ["--source", "synthetic:0", "--source", "synthetic:1"]
    argv = ["--model-dir", str(folder), "--precision", "fp32", *sources, "--frames", "6", "--warmup", "1"]
    assert _run_cli([*argv, "--quiet", "--no-tc", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert [s["source"] for s in data["streams"]] == ["synthetic:0", "synthetic:1"]
    assert [s["frames"] for s in data["streams"]] == [6, 6]
    assert data["calls"] == 6
    assert data["frames"] == 12
    assert data["batch"] == 2
    assert all(s["accuracy"]["labelled_frames"] == 6 for s in data["streams"])
    assert all(s["latency_ms"]["p50"] > 0 for s in data["streams"])
    out = capsys.readouterr().out
    assert "2 streams in a batch of 2" in out
    assert "(ended)" not in out  # both streams ran to the end of the run: none ended early
    assert "synthetic:1" in out


def test_cli_more_sources_than_the_graphs_batch_is_one_line_and_exit_2(runs, tmp_path, capsys):
    folder = runs[FAMILIES[0]]
    sources = [a for k in range(3) for a in ("--source", f"synthetic:{k}")]
    argv = ["--model-dir", str(folder), "--precision", "fp32", *sources, "--report", str(tmp_path / "r.json")]
    assert _run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "3 sources, but the graph takes a batch of 1" in err
    assert not (tmp_path / "r.json").exists()


def test_cli_a_camera_that_does_not_open_leaves_the_others_running(runs, tmp_path, caplog):
    folder = runs[FAMILIES[0]] / "batch2"
    report = tmp_path / "run.json"
    sources = ["--source", "camera:97", "--source", "synthetic:0"]
    argv = ["--model-dir", str(folder), "--precision", "fp32", *sources, "--frames", "3", "--quiet", "--no-tc"]
    with caplog.at_level(logging.WARNING):
        assert _run_cli([*argv, "--report", str(report)]) == 0
    assert "camera:97" in caplog.text
    assert "running the other sources" in caplog.text
    data = json.loads(report.read_text())
    assert [s["source"] for s in data["streams"]] == ["synthetic:0"]


def test_cli_no_camera_opening_is_exit_2(runs, tmp_path, capsys):
    folder = runs[FAMILIES[0]] / "batch2"
    sources = ["--source", "camera:97", "--source", "camera:98"]
    argv = ["--model-dir", str(folder), "--precision", "fp32", *sources, "--report", str(tmp_path / "r.json")]
    assert _run_cli(argv) == 2
    assert "camera:97" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_a_missing_video_among_the_sources_stops_the_run(runs, tmp_path, capsys):
    folder = runs[FAMILIES[0]] / "batch2"
    missing = tmp_path / "nope.mp4"
    argv = ["--model-dir", str(folder), "--precision", "fp32", "--source", "synthetic:0", "--source", str(missing)]
    assert _run_cli(argv) == 2
    assert "nope.mp4" in capsys.readouterr().err


def test_cli_streams_of_another_size_are_resized_and_said_once_per_stream(runs, tmp_path, caplog):
    import cv2

    folders = []
    for k, (h, w) in enumerate([(32, 64), (48, 80)]):
        folder = tmp_path / f"frames{k}"
        folder.mkdir()
        for i, f in enumerate(_clip(k, 3, "x")):
            cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(f.image, (w, h)))
        folders.append(folder)
    run = runs[FAMILIES[0]] / "batch2"
    sources = [a for f in folders for a in ("--source", str(f))]
    argv = ["--model-dir", str(run), "--precision", "fp32", *sources, "--quiet", "--no-tc"]
    with caplog.at_level(logging.WARNING):
        assert _run_cli([*argv, "--report", str(tmp_path / "r.json")]) == 0
    resized = [r.getMessage() for r in caplog.records if "resizing frames" in r.getMessage()]
    assert len(resized) == 2
    assert "64x32 -> 128x64" in resized[0]
    assert "80x48 -> 128x64" in resized[1]


# ---- make run SOURCES="..." ---------------------------------------------------------------------------------


def test_make_run_sources_exports_at_their_batch_beside_the_batch_1_graphs_and_streams_each(tmp_path):
    import sys

    from tests.test_platform import make, ready_venv

    runs = tmp_path / "runs"
    (runs / "fcresnet18_t66").mkdir(parents=True)
    (runs / "fcresnet18_t66" / "checkpoint.pt").write_bytes(b"trained")  # no training in the plan
    venv = ready_venv(tmp_path / "venv")
    sources = "SOURCES=synthetic:0 synthetic:1 clip.mp4"
    args = ["-n", "run", "MODEL=fcresnet18_t66", "BACKEND=onnxruntime", sources, f"RUNS={runs}", f"VENV={venv}"]
    done = make(*args, f"PY={sys.executable}")
    assert done.returncode == 0, done.stderr
    folder = runs / "fcresnet18_t66" / "batch3"
    [export] = [line for line in done.stdout.splitlines() if " -m tempseg.export " in line]
    assert f'--batch "3" --out-dir "{folder}"' in export
    [run] = [line for line in done.stdout.splitlines() if " -m tempseg.runtime " in line]
    assert f'--model-dir "{folder}"' in run
    assert '--source "synthetic:0" --source "synthetic:1" --source "clip.mp4"' in run
    single = make("-n", "run", "MODEL=fcresnet18_t66", "BACKEND=onnxruntime", f"RUNS={runs}", f"VENV={venv}")
    assert f'--model-dir "{runs / "fcresnet18_t66"}"' in single.stdout
    assert '--source "synthetic"' in single.stdout
