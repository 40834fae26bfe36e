"""Deployment: what `make` does with bad sizes and with a run directory copied to a torch-free machine, and how
sources of another aspect ratio are announced.

The install test is slow (a fresh venv, pip from the local caches and PyPI): it is the README's Jetson command,
`make run MODEL=... EXTRAS= TORCH_SPEC=`, on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tempseg.data.frames import Frame, FrameSource
from tempseg.data.streams import Conformed
from tests.conftest import TINY, TINY_HW, run_python
from tests.test_platform import fake_machine_env, make, ready_venv

# ---- a bad HEIGHT/WIDTH stops make before export.args is touched ------------------------------------------


def trained_run(runs: Path, model: str = "m") -> Path:
    """A run directory with a checkpoint, its export.args and graphs newer than both: everything up to date."""
    run = runs / model
    run.mkdir(parents=True)
    for age, name in ((300, "checkpoint.pt"), (200, "export.args"), (100, "model.onnx"), (100, "model.fp16.onnx")):
        (run / name).write_bytes(b"64x128 batch 1\n" if name == "export.args" else b"artefact")
        stamp = time.time() - age
        os.utime(run / name, (stamp, stamp))
    return run


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and its mtime in ns."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("target", ["engine", "run", "export"])
@pytest.mark.parametrize(("name", "value"), [("HEIGHT", "0"), ("WIDTH", "500"), ("HEIGHT", "-64"), ("WIDTH", "2x")])
def test_bad_size_is_refused_before_export_args_is_written(tmp_path, target, name, value):
    run = trained_run(tmp_path / "runs")
    venv = ready_venv(tmp_path / "venv")
    before = snapshot(tmp_path)
    sizes = {"HEIGHT": "64", "WIDTH": "128", name: value}
    args = [f"MODEL={run.name}", f"RUNS={run.parent}", f"VENV={venv}", "BACKEND=onnxruntime"]
    result = make(target, *args, *(f"{k}={v}" for k, v in sizes.items()))
    assert result.returncode == 2
    assert result.stdout == ""  # nothing ran
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{name}={value} is not an input size the network takes: a positive multiple of 32" in lines[0]
    assert snapshot(tmp_path) == before  # export.args byte-identical, its mtime unchanged, nothing else written


# ---- a machine without torch: graphs that exist are taken as they are, stages that need torch say so ------


@pytest.fixture(scope="module")
def python_without_torch(tmp_path_factory) -> Path:
    """A real Python that has no torch (a bare venv of the base interpreter): what make asks on a Jetson."""
    folder = tmp_path_factory.mktemp("no-torch")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    assert "No module named 'torch'" in run_python_at(python, "import torch").stderr
    return python


def run_python_at(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60, check=False)


def copied_run(runs: Path, model: str = "m") -> Path:
    """A run directory as `cp -r` may leave it: the checkpoint newest (the order of the copy did that)."""
    run = trained_run(runs, model)
    stamp = time.time() - 50  # the graphs: 100 s ago
    os.utime(run / "checkpoint.pt", (stamp, stamp))
    return run


def test_without_torch_make_takes_the_graphs_its_newer_checkpoint_would_remake(tmp_path, python_without_torch):
    run = copied_run(tmp_path / "runs")
    venv = ready_venv(tmp_path / "venv")
    args = ["-n", "run", f"MODEL={run.name}", f"RUNS={run.parent}", f"VENV={venv}", "BACKEND=onnxruntime"]
    args += ["HEIGHT=64", "WIDTH=128"]
    without = make(*args, f"PY={python_without_torch}")
    assert without.returncode == 0, without.stderr
    assert "-m tempseg.export" not in without.stdout
    assert '-m tempseg.runtime --model-dir "' + str(run) in without.stdout
    graphs = f"{run}/model.onnx {run}/model.fp16.onnx"
    assert without.stderr.splitlines() == [
        f"Makefile:{warning_line()}: {graphs}: older than {run}/checkpoint.pt, used as they are "
        "(no torch here to export them again)"
    ]
    with_torch = make(*args, f"PY={sys.executable}")  # the same directory where torch is: exported again, silently
    assert with_torch.returncode == 0, with_torch.stderr
    assert f'-m tempseg.export --model "{run.name}"' in with_torch.stdout
    assert with_torch.stderr == ""


def test_the_stale_graph_warning_is_said_once_where_make_run_builds_the_engine(tmp_path, python_without_torch):
    """On a GPU machine `make run BACKEND=auto` builds the engine in a sub-make (shown under -n), which reads the
    same run directory: the warning is still one line."""
    run = copied_run(tmp_path / "runs")
    env = fake_machine_env(tmp_path, capability="8.6", rtx="8.6")
    venv = ready_venv(tmp_path / "venv")
    args = [f"MODEL={run.name}", f"RUNS={run.parent}", f"VENV={venv}", f"PY={python_without_torch}", "BACKEND=auto"]
    result = make("-n", "run", *args, "HEIGHT=64", "WIDTH=128", env=env)
    assert result.returncode == 0, result.stderr
    assert "backend auto -> tensorrt_rtx: make engine" in result.stdout  # the sub-make ran
    assert f'-m tempseg.engine --onnx "{run}/model.fp16.onnx"' in result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "older than" in result.stderr


def warning_line() -> int:
    """The Makefile line of the stale-graph warning."""
    lines = (Path(__file__).resolve().parents[1] / "Makefile").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith("$(warning ") and "older than" in line)


@pytest.mark.parametrize(
    ("target", "keep", "stage"),
    [
        ("export", ("checkpoint.pt", "export.args"), r"\S+/model(\.fp16)?\.onnx: export"),
        ("run", ("export.args",), r"\S+/checkpoint\.pt: training"),
        ("base", (), "make base"),
    ],
    ids=["export", "train", "base"],
)
def test_without_torch_a_stage_that_needs_it_says_so_in_one_line(tmp_path, python_without_torch, target, keep, stage):
    run = trained_run(tmp_path / "runs")
    for name in {"checkpoint.pt", "export.args", "model.onnx", "model.fp16.onnx"} - set(keep):
        (run / name).unlink()
    venv = ready_venv(tmp_path / "venv")
    before = snapshot(tmp_path)
    args = [f"MODEL={run.name}", f"RUNS={run.parent}", f"VENV={venv}", f"PY={python_without_torch}"]
    result = make(target, *args, "BACKEND=onnxruntime", "HEIGHT=64", "WIDTH=128")
    assert result.returncode == 2
    assert result.stdout == ""  # nothing ran
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"Makefile:\d+: \*\*\* {stage} needs torch, which \S+ does not have .*", lines[0])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("cli", ["export", "train"])
def test_a_cli_that_needs_torch_says_so_in_one_line_and_writes_nothing(tmp_path, cli):
    hide_torch = (
        f"import runpy, sys; sys.modules['torch'] = None; runpy.run_module('tempseg.{cli}', run_name='__main__')"
    )
    out = tmp_path / "out"
    result = run_python("-c", hide_torch, "--model", "m", "--checkpoint", str(tmp_path / "c.pt"), "--out-dir", str(out))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"python -m tempseg.{cli}: needs torch, which does not import here (")
    assert "pip install -e '.[train]'" in lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ---- a source of another aspect ratio is announced once as stretched ---------------------------------------


class Still(FrameSource):
    """`count` black frames of height x width."""

    def __init__(self, height: int, width: int, count: int = 3) -> None:
        self.height, self.width, self.length, self.fps, self.name = height, width, count, 30.0, "still"

    def __iter__(self) -> Iterator[Frame]:
        for index in range(self.length):
            yield Frame(np.zeros((self.height, self.width, 3), np.uint8), None, index, "still")


@pytest.mark.parametrize(
    ("source_hw", "stretch"),
    [
        ((720, 1280), "frames 1280x720 (16:9) are stretched to 512x256 (2:1)"),
        ((256, 518), "frames 518x256 (2.02:1) are stretched to 512x256 (2:1)"),  # 1.2 % wider
        ((256, 514), None),  # 0.4 %: the same picture, resized
        ((512, 1024), None),
        ((256, 512), None),  # no resize at all
    ],
)
def test_stretched_frames_are_announced_once(caplog, source_hw, stretch):
    caplog.set_level(logging.WARNING, logger="tempseg.data.streams")
    frames = list(Conformed(Still(*source_hw), height=256, width=512, frames=None))
    assert [f.image.shape for f in frames] == [(256, 512, 3)] * 3
    warned = [r.getMessage() for r in caplog.records if "stretched" in r.getMessage()]
    assert warned == ([] if stretch is None else [f"still: {stretch}, not cropped"])
    assert all(r.levelno == logging.WARNING for r in caplog.records)


# ---- the torch-free deployment install, for real -----------------------------------------------------------

POISON = """import os, sys
open(os.environ["TORCH_MARKER"], "w").write("torch was imported")
sys.stderr.write("torch imported on the deployment path\\n")
raise SystemExit(97)  # not an ImportError: a `try: import torch` cannot swallow it
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_deployment_install_runs_a_copied_run_directory_without_torch(tiny_run, tmp_path):
    """The README's Jetson command on a whole run directory copied over (`cp -r`: fresh mtimes, checkpoint.pt
    included, here left the newest): make creates a venv without torch (EXTRAS= TORCH_SPEC=; pip gets `.`, or
    `.[rtx]` on x86-64 Linux), takes the graphs as they are (no training, no export; one warning line that the
    checkpoint is newer) and runs them. A torch on PYTHONPATH that fails loudly when imported shows nothing
    imports it; the venv itself has no torch."""
    runs = tmp_path / "runs"
    run = runs / TINY
    shutil.copytree(tiny_run, run, copy_function=shutil.copy)  # as `cp -r`: new mtimes, nothing left behind
    os.utime(run / "checkpoint.pt")  # the copy's order may leave it newest; this takes that case
    copied = snapshot(run)
    poison, marker, venv = tmp_path / "poison", tmp_path / "torch-imported", tmp_path / "venv"
    (poison / "torch").mkdir(parents=True)
    (poison / "torch" / "__init__.py").write_text(POISON)
    env = {"PYTHONPATH": str(poison), "TORCH_MARKER": str(marker)}
    height, width = TINY_HW
    args = [f"MODEL={TINY}", f"RUNS={runs}", f"VENV={venv}", "EXTRAS=", "TORCH_SPEC=", "BACKEND=onnxruntime"]
    args += ["FRAMES=5", f"HEIGHT={height}", f"WIDTH={width}", "RUN_ARGS=--quiet --warmup 1"]

    started = time.perf_counter()
    result = make("run", *args, env=env, timeout=840)
    print(f"make run in a fresh venv: {time.perf_counter() - started:.1f} s")  # shown with -s / on failure
    assert result.returncode == 0, result.stdout + result.stderr
    assert not marker.exists(), result.stderr
    assert re.search(r'-m pip install -q -e "\.(\[rtx\])?"\n', result.stdout), result.stdout
    stale = f"{run}/model.onnx {run}/model.fp16.onnx: older than {run}/checkpoint.pt, used as they are"
    assert [line for line in result.stderr.splitlines() if "older than" in line] == [
        f"Makefile:{warning_line()}: {stale} (no torch here to export them again)"
    ]
    after = snapshot(run)
    assert sorted(set(after) - set(copied)) == ["run-fp16-onnxruntime.json"]
    assert {name: after[name] for name in copied} == copied  # no graph, checkpoint or record rewritten
    report = json.loads((runs / TINY / "run-fp16-onnxruntime.json").read_text())
    assert (report["backend"], report["frames"], report["input_hw"]) == ("onnxruntime", 5, [height, width])

    python = str(venv / "bin" / "python")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bare = subprocess.run([python, "-c", "import torch"], env=clean, capture_output=True, text=True, timeout=60)
    assert "No module named 'torch'" in bare.stderr  # the venv has no torch of its own
    poisoned = subprocess.run(
        [python, "-c", "import torch"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (poisoned.returncode, marker.exists()) == (97, True)  # and the poison does catch an import
