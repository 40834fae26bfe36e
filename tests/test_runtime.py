"""The frame loop on the CPU backends: state carry, no-copy swaps, resets, reports, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.runtime.__main__ import main as runtime_main
from tempseg.runtime.backends.base import PhaseTimes
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.loop import PHASES, LoopOptions, run_loop
from tempseg.runtime.outputs import FrameClock, Overlay, palette_lut
from tempseg.runtime.policy import ResetTracker, StatePolicy
from tempseg.runtime.preprocess import Preprocessor
from tests.conftest import TINY_HW, run_python


def _frames(n: int, seed: int = 0, sequence: str = "s") -> list[Frame]:
    video = SyntheticVideo(split_seed("val", seed), *TINY_HW, length=n)
    return [Frame(f.image, f.label, f.index, sequence) for f in video]


def _quiet(**kw) -> LoopOptions:
    return LoopOptions(warmup=0, progress=False, consistency=False, **kw)


def test_preprocess_matches_training_normalisation(tiny_run):
    from tempseg.common.preprocess import normalize_bgr

    contract = read_onnx_contract(tiny_run / "model.onnx")
    frame = _frames(1)[0].image
    out = np.zeros(contract.image.shape, np.float32)
    Preprocessor(contract)(frame, out)
    np.testing.assert_allclose(out, normalize_bgr(frame), atol=1e-5)


def test_ort_state_buffers_alternate_without_copy(tiny_run):
    contract = read_onnx_contract(tiny_run / "model.onnx")
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        addresses = []
        for frame in _frames(5):
            Preprocessor(contract)(frame.image, runner.image)
            runner.infer()
            addresses.append(runner.state_addresses())
        assert addresses[0] == addresses[2] == addresses[4]
        assert addresses[1] == addresses[3]
        assert addresses[0] != addresses[1]
        assert runner.image.ctypes.data == runner._values["image"].data_ptr()  # input not copied either


def test_stream_equals_the_two_frame_scheme_frame_by_frame(tiny_run):
    """ORT stream with the carried state == torch on (previous frame -> state, current frame)."""
    import torch

    from tempseg.common.preprocess import normalize_bgr
    from tempseg.models.checkpoint import load_model

    model, _ = load_model(tiny_run / "checkpoint.pt")
    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = _frames(6)
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        pre = Preprocessor(contract)
        for t, frame in enumerate(frames):
            pre(frame.image, runner.image)
            runner.infer()
            with torch.no_grad():
                current = torch.from_numpy(normalize_bgr(frame.image))
                if t == 0:
                    state = model.initial_states(current)
                else:
                    state = model.next_states(torch.from_numpy(normalize_bgr(frames[t - 1].image)))
                expected = model(current, *state)[0].argmax(1).numpy()
            assert (runner.labels == expected).mean() > 0.999, t


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_and_ort_backends_agree(tiny_run, precision):
    graph = tiny_run / ("model.onnx" if precision == "fp32" else "model.fp16.onnx")
    contract = read_onnx_contract(graph)
    frames = _frames(4)
    outputs = {}
    runners = {
        "ort": OnnxRuntimeRunner(contract, graph),
        "torch": TorchRunner(contract.with_changes(precision="fp32"), tiny_run / "checkpoint.pt"),
    }
    for key, runner in runners.items():
        with runner:
            outputs[key] = []
            for frame in frames:
                Preprocessor(contract)(frame.image, runner.image)
                runner.infer()
                outputs[key].append(runner.labels.copy())
    agreement = np.mean([(a == b).mean() for a, b in zip(outputs["ort"], outputs["torch"], strict=True)])
    assert agreement > (0.9999 if precision == "fp32" else 0.99)


def test_loop_reports_accuracy_and_resets_per_sequence(tiny_run):
    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = _frames(4, seed=0, sequence="a") + _frames(3, seed=1, sequence="b")
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        result = run_loop(runner, frames, _quiet(), source_fps=17.0)
    assert result.frames == 7
    assert result.resets["start"] == 1
    assert result.resets["sequence"] == 1
    summary = result.accuracy.summary(contract.class_names(), 10.0, 17.0)
    assert summary["labelled_frames"] == 7
    assert 0.0 <= summary["miou"] <= 1.0
    assert summary["sequences"] == 2
    assert summary["frames"] == 7
    assert summary["miou_clean"] is not None  # clean and degraded frames are scored apart
    assert result.timings.rows().shape == (7, len(PHASES))


def test_reset_every_frame_runs_each_frame_on_a_zero_state(tiny_run):
    """--reset-every 1 is how the state is zeroed to measure what it buys: each frame as a fresh stream's first."""
    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = _frames(4)
    captured = []
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        sink = lambda frame, labels: captured.append(labels.copy())  # noqa: E731
        run_loop(runner, frames, _quiet(policy=StatePolicy(reset_every=1)), source_fps=17.0, sinks=(sink,))
        carried = []
        run_loop(runner, frames, _quiet(), source_fps=17.0, sinks=(lambda f, labels: carried.append(labels.copy()),))
    for frame, labels in zip(frames, captured, strict=True):
        with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as fresh:
            Preprocessor(contract)(frame.image, fresh.image)
            fresh.infer()
            assert np.array_equal(fresh.labels[0], labels)
    assert any(not np.array_equal(a, b) for a, b in zip(captured[1:], carried[1:], strict=True))  # the state counts


def test_reset_every_n_and_scene_cut():
    tracker = ResetTracker(StatePolicy(reset_every=3, scene_cut=0.25))
    dark, bright = np.zeros((32, 64, 3), np.uint8), np.full((32, 64, 3), 200, np.uint8)
    reasons = []
    for image in [dark, dark, dark, dark, bright, bright]:
        reasons.append(tracker.before_frame(image, "s"))
        tracker.after_frame()
    assert reasons == ["start", None, None, "every_n", "scene_cut", None]


def test_nan_state_is_reset_with_a_warning_and_counted(tiny_run, caplog):
    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = _frames(6)
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        clean = run_loop(runner, frames, _quiet(), source_fps=17.0)
        clean_labels = []
        poisoned = list(frames)
        nan_frame = frames[2].image.copy()
        poisoned[2] = Frame(nan_frame, frames[2].label, 2, "s")
        original_infer = runner.infer

        def infer_with_nan():  # a corrupted frame that turns the state into NaN
            times = original_infer()
            if len(clean_labels) == 2:
                runner.current_state().fill(np.nan)
            clean_labels.append(runner.labels.copy())
            return times

        runner.infer = infer_with_nan
        with caplog.at_level("WARNING"):
            result = run_loop(runner, poisoned, _quiet(), source_fps=17.0)
    assert result.resets["non_finite"] == 1
    assert "NaN/Inf" in caplog.text
    assert clean.resets["non_finite"] == 0
    # after the reset the stream recovers: the last frames score like the clean run's
    miou_clean = clean.accuracy.summary(contract.class_names(), 1, 17)["miou"]
    miou_poisoned = result.accuracy.summary(contract.class_names(), 1, 17)["miou"]
    assert abs(miou_clean - miou_poisoned) < 0.05


def test_cli_writes_report_overlay_and_labels(tiny_run, tmp_path, capsys):
    overlay = tmp_path / "overlay.avi"
    labels_dir = tmp_path / "labels"
    code = runtime_main(
        [
            "--model-dir",
            str(tiny_run),
            "--precision",
            "fp32",
            "--backend",
            "onnxruntime",
            "--frames",
            "12",
            "--warmup",
            "2",
            "--overlay",
            str(overlay),
            "--labels-dir",
            str(labels_dir),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((tiny_run / "run-fp32-onnxruntime.json").read_text())
    for key in (
        "model",
        "precision",
        "backend",
        "device",
        "input_hw",
        "frames",
        "latency_ms",
        "fps",
        "memory",
        "accuracy",
    ):
        assert key in report
    assert report["frames"] == 12
    assert report["input_hw"] == list(TINY_HW)
    assert set(report["latency_ms"]) == {"mean", "p50", "p90", "p99", "max"}
    assert report["memory"]["state_bytes"] == 2 * 19 * 4 * 8 * 4  # two fp32 buffers of 1x19x4x8
    assert report["accuracy"]["flame_miou"] is not None
    assert report["accuracy"]["tc"] is not None
    out = capsys.readouterr().out
    assert "latency ms" in out
    assert "FLAME" in out
    capture = cv2.VideoCapture(str(overlay))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert len(list(labels_dir.glob("*.png"))) == 12


# ---- the overlay: the graph's classes and each frame's latency drawn on it -------------------------------


def _bgr_colours(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(b), int(g), int(r)) for b, g, r in image.reshape(-1, 3)}


def _eleven() -> tuple[list[str], tuple[tuple[int, int, int], ...]]:
    names = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"]
    return names, tuple((20 * k, 250 - 20 * k, (57 * k) % 256) for k in range(len(names)))


@pytest.mark.parametrize(("height", "width", "names_shown"), [(256, 512, True), (64, 128, False)])
def test_overlay_legend_shows_each_class_in_its_palette_colour(height, width, names_shown):
    """11 classes: named swatches at 256x512; at 64x128 the names do not fit, the swatches alone are drawn."""
    names, palette = _eleven()
    lut = palette_lut(palette, len(names))
    frame = Frame(np.full((height, width, 3), 90, np.uint8), None, 0, "s")
    overlay = Overlay(lut, height, width, class_names=names)
    image = overlay(frame, np.zeros((height, width), np.int32)).copy()
    assert overlay.legend is not None
    assert overlay.legend.names_shown is names_shown
    assert {(b, g, r) for r, g, b in palette} <= _bgr_colours(image)
    plain = Overlay(lut, height, width)(frame, np.zeros((height, width), np.int32))
    white = (255, 255, 255)
    assert (white in _bgr_colours(image)) is names_shown  # the names, in white
    assert white not in _bgr_colours(plain)


def test_overlay_without_room_for_a_legend_colours_the_labels_alone():
    names = [f"c{k}" for k in range(40)]  # 40 classes: not even 2-pixel swatches fit in 64 rows
    lut = palette_lut((), len(names))
    frame = Frame(np.full((64, 128, 3), 90, np.uint8), None, 0, "s")
    labels = np.arange(64 * 128).reshape(64, 128) % 40
    overlay = Overlay(lut, 64, 128, class_names=names)
    assert overlay.legend is None
    assert np.array_equal(overlay(frame, labels), Overlay(lut, 64, 128)(frame, labels))


def test_overlay_draws_each_frame_latency():
    lut = palette_lut(_eleven()[1], 11)
    frame = Frame(np.full((64, 128, 3), 90, np.uint8), None, 0, "s")
    labels = np.zeros((64, 128), np.int32)
    latency = [3.0]
    overlay = Overlay(lut, 64, 128, latency=lambda: latency[0])
    first = overlay(frame, labels).copy()
    latency[0] = 87.5
    second = overlay(frame, labels).copy()
    plain = Overlay(lut, 64, 128)(frame, labels)
    box = (slice(0, 14), slice(0, 48))  # the top left: "87.5 ms" at 64x128
    assert not np.array_equal(first[box], plain[box])
    assert not np.array_equal(first[box], second[box])  # the text follows the frame's latency
    assert np.array_equal(first[20:], plain[20:])  # the rest of the overlay as it was


def test_frame_clock_times_the_frame_the_loop_took_last():
    clock = FrameClock()
    assert clock.elapsed_ms() is None
    frames = clock.stamp(_frames(2))
    next(frames)
    time.sleep(0.02)
    elapsed = clock.elapsed_ms()
    assert elapsed is not None
    assert elapsed >= 20
    next(frames)
    assert (clock.elapsed_ms() or 0) < elapsed


def test_cli_overlay_shows_the_graphs_classes(tiny_run, tmp_path):
    """No flag: the run's overlay PNGs carry the legend of the graph's classes (its 19 at 64x128: swatches)."""
    argv = ["--model-dir", str(tiny_run), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "2"]
    argv += ["--quiet", "--no-tc", "--overlay-dir", str(tmp_path / "png"), "--report", str(tmp_path / "r.json")]
    assert runtime_main(argv) == 0
    palette = read_onnx_contract(tiny_run / "model.onnx").palette
    assert len(palette) == 19
    image = cv2.imread(str(tmp_path / "png" / "000001.png"))
    assert image is not None
    assert {(b, g, r) for r, g, b in palette} <= _bgr_colours(image)
    # the frame's latency in white on black (no class is white; OpenCV smooths even small text, so near white)
    assert (image[:14, :48].min(axis=2) >= 200).any()


def test_cli_missing_graph_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="make export"):
        runtime_main(["--model-dir", str(tmp_path / "nothing"), "--backend", "onnxruntime", "--quiet"])


def test_keyframe_every_on_a_single_graph_is_refused_before_anything_is_written(tiny_run, tmp_path, capsys):
    """A model that runs one graph every frame has no keyframes: one line naming the graph, exit 2, and no
    report, overlay or labels written (an earlier report stays as it was)."""
    report = tmp_path / "report.json"
    report.write_text("an earlier report")
    before = sorted(tiny_run.iterdir())
    argv = ["--model-dir", str(tiny_run), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "2"]
    argv += ["--quiet", "--keyframe-every", "3", "--overlay", str(tmp_path / "overlay.avi")]
    argv += ["--labels-dir", str(tmp_path / "labels")]
    for extra in ([], ["--report", str(report)]):
        assert run_cli(runtime_main, [*argv, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert str(tiny_run / "model.onnx") in lines[0]
        assert "--keyframe-every applies to keyframe models" in lines[0]
    assert report.read_text() == "an earlier report"
    assert sorted(tmp_path.iterdir()) == [report]
    assert sorted(tiny_run.iterdir()) == before  # no run-fp32-onnxruntime-k3.json


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery to self is POSIX")
def test_ctrl_c_stops_after_the_current_frame_and_reports(tiny_run):
    contract = read_onnx_contract(tiny_run / "model.onnx")

    def frames():
        for i, frame in enumerate(_frames(30)):
            if i == 5:
                os.kill(os.getpid(), signal.SIGINT)
            yield frame

    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        result = run_loop(runner, frames(), _quiet(), source_fps=17.0)
    assert result.interrupted
    assert result.frames == 6  # frame 5 (already read) completes, nothing after it


# ---- NaN/Inf state -------------------------------------------------------------------------------


def _poison_state_after(runner: OnnxRuntimeRunner, frame: int) -> list[int]:
    """Make the state that frame `frame` writes NaN (as a corrupted frame would) in an active runner.
    Returns a log that gets, per reset_state() call, the number of frames run before it."""
    infer, reset_state = runner.infer, runner.reset_state
    resets: list[int] = []
    done = [0]

    def poisoned_infer() -> PhaseTimes:
        times = infer()
        if done[0] == frame:
            runner.current_state().fill(np.nan)
        done[0] += 1
        return times

    def logged_reset() -> None:
        resets.append(done[0])
        reset_state()

    runner.infer, runner.reset_state = poisoned_infer, logged_reset
    return resets


def _stream_labels(runner: OnnxRuntimeRunner, frames: list[Frame], options: LoopOptions) -> list[np.ndarray]:
    labels: list[np.ndarray] = []
    run_loop(runner, frames, options, source_fps=17.0, sinks=(lambda frame, out: labels.append(out.copy()),))
    return labels


def test_after_a_nan_reset_the_stream_goes_on_as_a_fresh_one(tiny_run):
    """The state written at frame 1 is NaN: frames 2 and 3 get exactly the labels of a stream that starts at 2."""
    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = _frames(4)
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        _poison_state_after(runner, 1)
        labels = _stream_labels(runner, frames, _quiet())
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as fresh:
        expected = _stream_labels(fresh, frames[2:], _quiet())
    assert np.array_equal(labels[2], expected[0])
    assert np.array_equal(labels[3], expected[1])


def test_a_nan_reset_restarts_the_frames_since_reset_count(tiny_run):
    """With --reset-every 2, a NaN reset after frame 1 is followed by 2 frames on the new state (2 and 3),
    as after any reset: the every-N reset comes before frame 4, not before frame 3."""
    contract = read_onnx_contract(tiny_run / "model.onnx")
    with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
        resets_at = _poison_state_after(runner, 1)
        result = run_loop(runner, _frames(6), _quiet(policy=StatePolicy(reset_every=2)), source_fps=17.0)
    assert resets_at == [0, 2, 4]  # start, NaN after frame 1 (2 frames run), every-N before frame 4
    assert result.resets == {"start": 1, "sequence": 0, "every_n": 1, "scene_cut": 0, "non_finite": 1}


# ---- no torch on the deployment side -------------------------------------------------------------

NO_TORCH = '''
"""Started by Python before anything else: `import torch` raises, as on a Jetson without PyTorch."""
import importlib.abc
import sys


class RefuseTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is not installed here (test: deployment without torch)")
        return None


sys.meta_path.insert(0, RefuseTorch())
'''


def _without_torch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python *args` in the repository with a sitecustomize.py that refuses torch."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    return run_python(*args, env={"PYTHONPATH": str(tmp_path)})


def test_runtime_and_engine_run_without_torch(tmp_path):
    refused = _without_torch(tmp_path, "-c", "import torch")
    assert refused.returncode != 0  # the prelude does refuse torch
    assert "not installed here" in refused.stderr
    help_text = _without_torch(tmp_path, "-m", "tempseg.runtime", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: python -m tempseg.runtime" in help_text.stdout
    imports = (
        "import sys\n"
        "import tempseg.runtime.loop, tempseg.runtime.session, tempseg.runtime.report\n"
        "import tempseg.runtime.backends.ort_runner, tempseg.runtime.__main__\n"
        "import tempseg.engine, tempseg.engine.build, tempseg.engine.__main__\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    imported = _without_torch(tmp_path, "-c", imports)
    assert imported.returncode == 0, imported.stderr


def test_the_runtime_library_loads_no_model_code_renderer_or_cityscapesscripts():
    """What a Jetson loads: every runtime library module (the torch backend included: it loads its model lazily,
    behind the backend choice) imports neither tempseg.models nor the synthetic renderer nor cityscapesscripts."""
    code = (
        "import importlib, pkgutil, sys, tempseg.runtime\n"
        "for m in pkgutil.walk_packages(tempseg.runtime.__path__, 'tempseg.runtime.'):\n"
        "    if m.name.rsplit('.', 1)[-1] not in ('__main__', 'demo'):\n"
        "        importlib.import_module(m.name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "tempseg.runtime.backends.torch_runner" in loaded
    leaked = [m for m in loaded if m.startswith(("tempseg.models", "tempseg.data.synthetic", "cityscapesscripts"))]
    assert not leaked, leaked
