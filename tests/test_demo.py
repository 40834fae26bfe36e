"""`python -m tempseg.runtime.demo`: two models side by side in one video, with labels, badges and a metrics strip."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from tempseg.common.errors import UserError, run_cli
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.runtime.demo import FrameConsistency, Layout, check_pair, frame_miou, main
from tempseg.runtime.session import select
from tests.conftest import TINY, TINY_HW
from tests.test_runtime import _without_torch

FRAMES = 12


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two more FP32 run directories of the tiny model: other weights (seed 1) at the tiny size, and the
    same weights at half the height (a model the demo must refuse to pair with the tiny one)."""
    from tempseg.data.classes import CITYSCAPES
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.models import random_model
    from tests.conftest import make_tiny_model

    root = tmp_path_factory.mktemp("demo-runs")
    other = random_model(TINY, seed=1)
    contract = build_contract(other, TINY, height=TINY_HW[0], width=TINY_HW[1], classes=CITYSCAPES)
    save_onnx(export_fp32(other, contract), root / "other" / "model.onnx")
    tiny = make_tiny_model()
    half = build_contract(tiny, TINY, height=TINY_HW[0] // 2, width=TINY_HW[1], classes=CITYSCAPES)
    save_onnx(export_fp32(tiny, half), root / "half" / "model.onnx")
    return root / "other", root / "half"


def _demo(*args: str) -> int:
    return run_cli(main, ["--precision", "fp32", "--backend", "onnxruntime", *args])


def _read(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def test_demo_writes_two_models_side_by_side(tiny_run, other_runs, tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    code = _demo("--model-dir", str(tiny_run), "--model-dir2", str(other_runs[0]), "--frames", "2")
    assert code == 0, capsys.readouterr().err
    default = tiny_run.parent / f"demo-{tiny_run.name}-vs-other.mp4"
    assert default.is_file()  # the default path: beside model A's run directory
    code = _demo(
        "--model-dir", str(tiny_run), "--model-dir2", str(other_runs[0]), "--frames", str(FRAMES), "--out", str(out)
    )
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2  # one line per run
    assert str(out) in printed[-1]
    assert f"{FRAMES} frames" in printed[-1]
    for what in ("A: ", "B: ", "clean mIoU", "degraded mIoU", "TC"):
        assert what in printed[-1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left

    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    layout = Layout(*TINY_HW)
    width, height = layout.size
    assert (width, height) == (2 * TINY_HW[1], 2 * TINY_HW[0] + layout.strip_h)
    assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == width
    assert int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == height
    capture.release()
    video = _read(out)
    assert len(video) == FRAMES
    assert all(image.shape == (height, width, 3) for image in video)

    # Different weights: the two model panels differ (below their titles), frame after frame.
    title = layout.text_h + 4
    differences = [
        np.abs(
            layout.model_a.view(image)[title:].astype(np.int16) - layout.model_b.view(image)[title:].astype(np.int16)
        ).mean()
        for image in video
    ]
    assert min(differences) > 3.0, differences

    # The badge: green on a clean frame, red on a degraded one (the clip has both).
    with open_source("synthetic", height=TINY_HW[0], width=TINY_HW[1], frames=FRAMES) as source:
        kinds = [frame.degraded for frame in source]
    clean, degraded = kinds.index(None), next(i for i, kind in enumerate(kinds) if kind)
    b, g, r = layout.badge.view(video[clean]).reshape(-1, 3).mean(0)
    assert g > max(r, b) + 40, (b, g, r)
    b, g, r = layout.badge.view(video[degraded]).reshape(-1, 3).mean(0)
    assert r > max(g, b) + 40, (b, g, r)

    # The strip runs: more of it is drawn at the end than at the start, and it moves with the cursor.
    first, last = (layout.strip.view(video[i]).astype(np.int16) for i in (0, -1))
    assert np.abs(last - first).mean() > 1.0
    assert layout.strip.view(video[-1]).max() > 100


def test_the_same_model_twice_gives_equal_panels(tiny_run, tmp_path):
    out = tmp_path / "same.avi"
    assert _demo("--model-dir", str(tiny_run), "--model-dir2", str(tiny_run), "--frames", "4", "--out", str(out)) == 0
    layout = Layout(*TINY_HW)
    title = layout.text_h + 4
    for image in _read(out):
        a, b = layout.model_a.view(image)[title:], layout.model_b.view(image)[title:]
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 3.0


@pytest.mark.parametrize("broken", ["missing", "empty"])
def test_a_bad_run_dir_is_one_line_exit_2_and_keeps_the_old_video(tiny_run, tmp_path, capsys, broken):
    bad = tmp_path / broken
    if broken == "empty":
        bad.mkdir()  # a run directory without graphs
    out = tmp_path / "demo.mp4"
    out.write_bytes(b"an earlier demo")
    code = _demo("--model-dir", str(tiny_run), "--model-dir2", str(bad), "--frames", "3", "--out", str(out))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err
    assert out.read_bytes() == b"an earlier demo"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({broken, "demo.mp4"} - {"missing"})


def test_models_of_different_input_sizes_are_refused(tiny_run, other_runs, tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    code = _demo("--model-dir", str(tiny_run), "--model-dir2", str(other_runs[1]), "--out", str(out))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(other_runs[1] / "model.onnx") in err
    assert "same input size" in err
    assert not out.exists()


def test_models_with_different_classes_are_refused(tiny_run):
    a = select(tiny_run, "fp32", "onnxruntime")
    b = type(a)(a.backend, Path("other/model.onnx"), a.contract.with_changes(num_classes=7))
    with pytest.raises(UserError, match="same classes"):
        check_pair(a, b)


def test_bad_output_suffix_is_refused_before_anything_runs(tiny_run, tmp_path, capsys):
    code = _demo("--model-dir", str(tiny_run), "--model-dir2", str(tiny_run), "--out", str(tmp_path / "demo.gif"))
    assert code == 2
    assert "demo.gif" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_per_frame_miou_and_tc():
    label = np.zeros((8, 16), np.uint8)
    label[:, 8:] = 1
    assert frame_miou(label, label, 19) == 1.0
    wrong = label.copy()
    wrong[:, 4:8] = 1  # class 0: 32/64 right; class 1: 64/96
    assert frame_miou(wrong, label, 19) == pytest.approx((32 / 64 + 64 / 96) / 2)
    assert math.isnan(frame_miou(label, np.full_like(label, 255), 19))  # nothing labelled

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8), (5, 5), 0)
    prediction = np.zeros((64, 128), np.int32)
    prediction[:, 64:] = 2
    tc = FrameConsistency(19, ["a", "b"])
    first = tc.update(Frame(image, None, 0, "s"), {"a": prediction, "b": prediction})
    assert all(math.isnan(v) for v in first.values())  # no previous frame
    flipped = np.where(prediction == 2, 0, 2)
    second = tc.update(Frame(image, None, 1, "s"), {"a": prediction, "b": flipped})
    assert second["a"] > 0.95  # a still scene, the same prediction
    assert second["b"] < 0.05  # every pixel changed class
    new = tc.update(Frame(image, None, 0, "t"), {"a": prediction, "b": prediction})
    assert all(math.isnan(v) for v in new.values())  # a new sequence starts afresh


def test_demo_imports_and_runs_without_torch(tiny_run, tmp_path):
    help_text = _without_torch(tmp_path, "-m", "tempseg.runtime.demo", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: python -m tempseg.runtime.demo" in help_text.stdout
    out = tmp_path / "demo.mp4"
    script = (
        "import sys\n"
        "from tempseg.common.errors import run_cli\n"
        "from tempseg.runtime.demo import main\n"
        f"code = run_cli(main, ['--model-dir', {str(tiny_run)!r}, '--model-dir2', {str(tiny_run)!r}, '--precision',"
        f" 'fp32', '--backend', 'onnxruntime', '--frames', '3', '--out', {str(out)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    ran = _without_torch(tmp_path, "-c", script)
    assert ran.returncode == 0, ran.stderr
    assert out.is_file()
