"""The frame loop on the CPU backends: state carry, no-copy swaps, resets, reports, outputs."""

from __future__ import annotations

import json
import os
import signal

import cv2
import numpy as np
import pytest

from common.contract import read_onnx_contract
from common.errors import UserError
from data import Frame, SyntheticVideo, split_seed
from runtime.__main__ import main as runtime_main
from runtime.backends.ort_runner import OnnxRuntimeRunner
from runtime.backends.torch_runner import TorchRunner
from runtime.loop import LoopOptions, run_loop
from runtime.policy import ResetTracker, StatePolicy
from runtime.preprocess import Preprocessor
from tests.conftest import TINY_HW


def _frames(n: int, seed: int = 0, sequence: str = "s") -> list[Frame]:
    video = SyntheticVideo(split_seed("val", seed), *TINY_HW, length=n)
    return [Frame(f.image, f.label, f.index, sequence) for f in video]


def _quiet(**kw) -> LoopOptions:
    return LoopOptions(warmup=0, progress=False, consistency=False, **kw)


def test_preprocess_matches_training_normalisation(tiny_run):
    from common.preprocess import normalize_bgr

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

    from common.preprocess import normalize_bgr
    from models.checkpoint import load_model

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
    assert summary["miou_by_frames_since_reset"]["1"] is not None  # frames right after each reset
    assert result.timings.rows().shape == (7, 6)


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


def test_cli_missing_graph_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="make export"):
        runtime_main(["--model-dir", str(tmp_path / "nothing"), "--backend", "onnxruntime", "--quiet"])


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
