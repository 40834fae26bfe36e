"""Reliability: bad input fails clearly (one line naming the file, exit 2, nothing overwritten);
faults (kills, NaN, corrupted frames, Ctrl-C) lose nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from tempseg.calibration.__main__ import main as calibration_main
from tempseg.common.contract import METADATA_KEY
from tempseg.common.errors import run_cli
from tempseg.common.io import atomic_write
from tempseg.data.synthetic import SyntheticVideo, split_seed, write_cityscapes_tree
from tempseg.export.__main__ import main as export_main
from tempseg.models import build_model
from tempseg.models.__main__ import main as models_main
from tempseg.models.checkpoint import save_checkpoint
from tempseg.runtime.__main__ import main as runtime_main
from tempseg.train.__main__ import main as train_main
from tests.conftest import TINY, TINY_HW

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One row of the table: a command on bad input, the words its error must contain."""

    main: Callable
    argv: Callable[[Path, Path], list[str]]  # (tiny run dir, scratch dir) -> argv
    expect: str
    names_file: Callable[[Path, Path], str] | None = None  # the file the message must name


def _write_images(folder: Path, count: int, hw: tuple[int, int], channels: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(SyntheticVideo(split_seed("test", 0), *hw, length=count)):
        image = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY) if channels == 1 else frame.image
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    return folder


def _truncated(run: Path, tmp: Path) -> str:
    path = tmp / "truncated.pt"
    path.write_bytes((run / "checkpoint.pt").read_bytes()[:2000])
    return str(path)


def _foreign(run: Path, tmp: Path) -> str:
    path = tmp / "foreign.pt"
    torch.save(build_model(TINY).state_dict(), path)
    return str(path)


def _other_classes(run: Path, tmp: Path) -> str:
    path = tmp / "classes12.pt"
    save_checkpoint(path, build_model(TINY, num_classes=12), TINY)
    return str(path)


def _corrupt_onnx(run: Path, tmp: Path) -> str:
    path = tmp / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    return str(path)


def _contract_edit(edit: Callable[[dict], None], name: str) -> Callable[[Path, Path], str]:
    def make(run: Path, tmp: Path) -> str:
        model = onnx.load(str(run / "model.onnx"))
        prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
        meta = json.loads(prop.value)
        edit(meta)
        prop.value = json.dumps(meta)
        path = tmp / name
        onnx.save(model, str(path))
        return str(path)

    return make


def _state_shape_wrong(meta: dict) -> None:
    meta["states"][0]["shape"] = [1, 19, 9, 9]


def _extra_state_promised(meta: dict) -> None:
    meta["states"].append({"input": "state_in.1", "output": "state_out.1", "shape": [1, 8, 4, 8], "dtype": "float32"})


def _not_a_video(run: Path, tmp: Path) -> str:
    path = tmp / "clip.mp4"
    path.write_text("this is not a video")
    return str(path)


def _empty_folder(run: Path, tmp: Path) -> str:
    (tmp / "empty").mkdir(exist_ok=True)
    return str(tmp / "empty")


def _few_frames(run: Path, tmp: Path) -> str:
    return str(_write_images(tmp / "three", 3, TINY_HW))


def _cityscapes_missing(run: Path, tmp: Path) -> str:
    root = write_cityscapes_tree(tmp / "cs", snippets=1, height=64, width=128)
    victim = sorted((root / "leftImg8bit_sequence").rglob("*.png"))[5]
    victim.unlink()
    return f"cityscapes:{root}"


def _run(tiny: Path, *extra: str) -> list[str]:
    return ["--model-dir", str(tiny), "--backend", "onnxruntime", "--precision", "fp32", "--quiet", *extra]


CASES = {
    "unknown model lists close names": Case(models_main, lambda r, t: ["fcresnet19"], "did you mean fcresnet18"),
    "unknown model in train": Case(
        train_main, lambda r, t: ["--model", "fcresnet18_t666", "--out-dir", str(t)], "did you mean fcresnet18_t66"
    ),
    "feedback connection": Case(
        train_main,
        lambda r, t: ["--model", "fcresnet18_t65", "--out-dir", str(t)],
        "feedback connection 6-5 (out 6 > in 5)",
    ),
    "size not divisible by stride": Case(
        export_main,
        lambda r, t: [
            "--model",
            TINY,
            "--checkpoint",
            str(r / "checkpoint.pt"),
            "--height",
            "250",
            "--out-dir",
            str(t),
        ],
        "height 250: try 224 or 256",
    ),
    "missing checkpoint": Case(
        export_main,
        lambda r, t: ["--model", TINY, "--checkpoint", str(t / "none.pt"), "--out-dir", str(t)],
        "checkpoint not found",
        lambda r, t: str(t / "none.pt"),
    ),
    "truncated checkpoint": Case(
        export_main,
        lambda r, t: ["--model", TINY, "--checkpoint", _truncated(r, t), "--out-dir", str(t)],
        "truncated or corrupt",
        lambda r, t: str(t / "truncated.pt"),
    ),
    "foreign checkpoint": Case(
        export_main,
        lambda r, t: ["--model", TINY, "--checkpoint", _foreign(r, t), "--out-dir", str(t)],
        "not a tempseg checkpoint",
        lambda r, t: str(t / "foreign.pt"),
    ),
    "checkpoint of another model": Case(
        export_main,
        lambda r, t: ["--model", "fcresnet18x0.25_t55", "--checkpoint", str(r / "checkpoint.pt"), "--out-dir", str(t)],
        f"checkpoint is for model '{TINY}', not 'fcresnet18x0.25_t55'",
        lambda r, t: str(r / "checkpoint.pt"),
    ),
    "teacher of another class count": Case(
        train_main,
        lambda r, t: [
            "--model",
            TINY,
            "--preset",
            "smoke",
            "--teacher",
            _other_classes(r, t),
            "--kd-loss",
            "0.1",
            "--out-dir",
            str(t / "o"),
        ],
        "teacher has 12 classes, the data 19",
        lambda r, t: str(t / "classes12.pt"),
    ),
    "missing onnx": Case(runtime_main, lambda r, t: _run(r, "--onnx", str(t / "none.onnx")), "ONNX file not found"),
    "corrupt onnx": Case(
        runtime_main,
        lambda r, t: _run(r, "--onnx", _corrupt_onnx(r, t)),
        "not a valid ONNX model",
        lambda r, t: str(t / "corrupt.onnx"),
    ),
    "onnx state shape disagrees with metadata": Case(
        runtime_main,
        lambda r, t: _run(r, "--onnx", _contract_edit(_state_shape_wrong, "shape.onnx")(r, t)),
        "is [1, 19, 9, 9] float32 in the metadata but [1, 19, 4, 8] float32 in the file",
        lambda r, t: str(t / "shape.onnx"),
    ),
    "onnx missing a promised state pair": Case(
        runtime_main,
        lambda r, t: _run(r, "--onnx", _contract_edit(_extra_state_promised, "pairs.onnx")(r, t)),
        "metadata promises input 'state_in.1' but the file has none",
        lambda r, t: str(t / "pairs.onnx"),
    ),
    "video that does not open": Case(
        runtime_main, lambda r, t: _run(r, "--source", _not_a_video(r, t)), "open", lambda r, t: str(t / "clip.mp4")
    ),
    "empty image folder": Case(
        runtime_main, lambda r, t: _run(r, "--source", _empty_folder(r, t)), "no image", lambda r, t: str(t / "empty")
    ),
    "calibration with fewer frames than asked": Case(
        calibration_main,
        lambda r, t: [
            "--onnx",
            str(r / "model.onnx"),
            "--out",
            str(t / "m.int8.onnx"),
            "--data",
            _few_frames(r, t),
            "--frames",
            "16",
        ],
        "3",
        lambda r, t: str(t / "three"),
    ),
    "cityscapes tree with a missing file": Case(
        runtime_main, lambda r, t: _run(r, "--source", _cityscapes_missing(r, t)), "missing", lambda r, t: str(t / "cs")
    ),
}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()}


def _truncated_engine(engines: Path, tmp: Path) -> str:
    path = tmp / "fp32.engine"
    path.write_bytes((engines / "fp32.engine").read_bytes()[:-1000])
    (tmp / "fp32.engine.json").write_bytes((engines / "fp32.engine.json").read_bytes())
    return str(path)


ENGINE_CASES = {
    "engine built for another precision": (
        lambda e, t: str(e / "fp32.engine"),
        "fp16",
        "precision differs: expected fp16, engine has fp32",
    ),
    "truncated engine file": (_truncated_engine, "fp32", "engine size differs"),
}


@pytest.mark.rtx
@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_bad_engine_is_refused_before_deserializing(name, tiny_run, tiny_engines, tmp_path, capsys):
    make_path, precision, expect = ENGINE_CASES[name]
    engine = make_path(tiny_engines, tmp_path)
    argv = [
        "--model-dir",
        str(tiny_run),
        "--backend",
        "tensorrt_rtx",
        "--precision",
        precision,
        "--engine",
        engine,
        "--quiet",
    ]
    code = run_cli(runtime_main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    assert expect in error_lines[0]
    assert engine in error_lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_keeps_artefacts(name, tiny_run, tmp_path, capsys):
    case = CASES[name]
    before = _digest(tiny_run)
    argv = case.argv(tiny_run, tmp_path)
    code = run_cli(case.main, argv)
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(error_lines) == 1, err
    assert case.expect in error_lines[0]
    if case.names_file is not None:
        assert case.names_file(tiny_run, tmp_path) in error_lines[0]
    assert _digest(tiny_run) == before  # nothing already written was touched


def test_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="did you mean"):
        run_cli(models_main, ["fcresnet19", "--debug"])


def _video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, TINY_HW[::-1])
    for frame in SyntheticVideo(split_seed("test", 1), *TINY_HW, length=frames):
        writer.write(frame.image)
    writer.release()
    return path


def test_video_that_ends_early_still_reports(tiny_run, tmp_path):
    video = _video(tmp_path / "short.avi", 9)
    report = tmp_path / "report.json"
    assert run_cli(runtime_main, _run(tiny_run, "--source", str(video), "--frames", "50", "--report", str(report))) == 0
    assert json.loads(report.read_text())["frames"] == 9


def test_frames_of_another_size_and_channel_count_are_converted(tiny_run, tmp_path, caplog):
    folder = _write_images(tmp_path / "gray", 6, (96, 160), channels=1)
    report = tmp_path / "report.json"
    with caplog.at_level("WARNING"):
        assert run_cli(runtime_main, _run(tiny_run, "--source", str(folder), "--report", str(report))) == 0
    assert json.loads(report.read_text())["frames"] == 6
    assert "resiz" in caplog.text.lower()
    assert "gray" in caplog.text.lower()


class _VanishingCamera:
    """A camera that delivers 5 frames, then stops answering (unplugged)."""

    def __init__(self, *args: object) -> None:
        self.frames = list(SyntheticVideo(split_seed("test", 2), *TINY_HW, length=5))

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0).image) if self.frames else (False, None)

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def set(self, *args: object) -> bool:
        return True

    def release(self) -> None:
        pass


def test_camera_that_disappears_stops_cleanly_and_reports(tiny_run, tmp_path, monkeypatch):
    from tempseg.data import streams

    monkeypatch.setattr(streams.cv2, "VideoCapture", _VanishingCamera)
    report = tmp_path / "report.json"
    assert run_cli(runtime_main, _run(tiny_run, "--source", "camera:0", "--report", str(report))) == 0
    assert json.loads(report.read_text())["frames"] == 5


def _write_and_get_interrupted(target: Path) -> None:
    with atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise KeyboardInterrupt


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "artefact.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        _write_and_get_interrupted(target)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def _train_cmd(out: Path, *extra: str) -> list[str]:
    args = ["--model", TINY, "--preset", "smoke", "--steps", "6", "--eval-every", "6", "--out-dir", str(out)]
    return [sys.executable, "-m", "tempseg.train", *args, *extra]


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_an_intact_snapshot(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference), cwd=REPO, env=env, check=True, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    snapshot = run / "checkpoint.last.pt"
    deadline = time.monotonic() + 120
    while not snapshot.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: only atomic writes keep files whole
    proc.wait()
    assert snapshot.exists()
    assert not (run / "checkpoint.pt").exists()  # make would not take the run as done
    step = torch.load(snapshot, weights_only=True)["step"]
    assert 0 < step < 6
    subprocess.run(_train_cmd(run, "--resume"), cwd=REPO, env=env, check=True, capture_output=True)
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]
    expected = torch.load(reference / "checkpoint.pt", weights_only=True)["state_dict"]
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_a_corrupted_frame_affects_at_most_the_next_frame(tiny_run):
    """The state is a function of the previous frame only (out <= in): two frames after a
    corrupted one, the stream's output equals the clean stream's exactly."""
    from tempseg.common.contract import read_onnx_contract
    from tempseg.data.frames import Frame
    from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
    from tempseg.runtime.preprocess import Preprocessor

    contract = read_onnx_contract(tiny_run / "model.onnx")
    frames = list(SyntheticVideo(split_seed("val", 3), *TINY_HW, length=8))
    noise = np.random.default_rng(0).integers(0, 256, frames[0].image.shape, dtype=np.uint8)
    corrupted = [*frames[:3], Frame(noise, None, 3, "s"), Frame(np.zeros_like(noise), None, 4, "s"), *frames[5:]]
    outputs = []
    for stream in (frames, corrupted):
        with OnnxRuntimeRunner(contract, tiny_run / "model.onnx") as runner:
            labels = []
            for frame in stream:
                Preprocessor(contract)(frame.image, runner.image)
                runner.infer()
                labels.append(runner.labels.copy())
            outputs.append(labels)
    clean, hit = outputs
    assert not np.array_equal(clean[3], hit[3])
    for t in (6, 7):
        np.testing.assert_array_equal(clean[t], hit[t])


@pytest.mark.slow
def test_ctrl_c_in_the_runtime_writes_the_report_of_the_frames_done(tiny_run, tmp_path):
    report = tmp_path / "report.json"
    labels = tmp_path / "labels"
    argv = _run(tiny_run, "--frames", "100000", "--report", str(report), "--no-tc", "--labels-dir", str(labels))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tempseg.runtime", *argv], cwd=REPO, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(labels.glob("*.png"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # wait until the loop is running: a few frames written
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    data = json.loads(report.read_text())
    assert data["interrupted"] is True
    assert 0 < data["frames"] < 100000
