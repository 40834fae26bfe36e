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
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tempseg.data.frames import Frame, FrameSource
from tempseg.data.streams import Conformed
from tests.conftest import TINY, TINY_HW
from tests.test_platform import make, ready_venv

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
    """The README's Jetson command on a run directory copied over (graphs, no checkpoint): make creates a venv
    without torch (EXTRAS= TORCH_SPEC=; pip gets `.`, or `.[rtx]` on x86-64 Linux), takes the graphs as they are
    (no training, no export) and runs them. A torch on PYTHONPATH that fails loudly when imported shows nothing
    imports it; the venv itself has no torch."""
    runs = tmp_path / "runs"
    (runs / TINY).mkdir(parents=True)
    for name in ("model.onnx", "model.fp16.onnx"):
        shutil.copy(tiny_run / name, runs / TINY / name)  # a copy: fresh mtimes, as on the target machine
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
    assert sorted(p.name for p in (runs / TINY).iterdir()) == [
        "model.fp16.onnx",
        "model.onnx",
        "run-fp16-onnxruntime.json",
    ]
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
