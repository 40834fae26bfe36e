"""The wheel: every stage folder and subpackage under one `tempseg` namespace, installable without the checkout.

Slow: a fresh venv and pip (the dependencies come from the local caches and the package registry).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
STAGES = ("common", "data", "models", "train", "export", "calibration", "engine", "runtime", "metrics", "bench")


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)], REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("tempseg-*.whl")
    return path


def test_wheel_holds_every_package_of_the_checkout_under_tempseg_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"tempseg", next(t for t in tops if t.endswith(".dist-info"))}  # no top-level `data`, `models`
    folders = {p.parent for stage in STAGES for p in (REPO / stage).rglob("*.py") if "__pycache__" not in p.parts}
    for folder in folders:
        init = f"tempseg/{folder.relative_to(REPO).as_posix()}/__init__.py"
        assert init in names, f"{folder.relative_to(REPO)} is not a package of the wheel"
    assert "tempseg/runtime/backends/ort_runner.py" in names


@pytest.mark.slow
def test_installed_wheel_runs_the_runtime_from_another_directory(wheel, tiny_run, tmp_path):
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    python = str(venv / "bin" / "python")
    installed = _run([python, "-m", "pip", "install", "-q", str(wheel)], tmp_path, timeout=900)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    run_dir = elsewhere / TINY
    run_dir.mkdir(parents=True)
    shutil.copy(tiny_run / "model.onnx", run_dir)
    help_text = _run([python, "-m", "tempseg.runtime", "--help"], elsewhere)
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert "--model-dir" in help_text.stdout
    argv = ["--model-dir", str(run_dir), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "4"]
    ran = _run([python, "-m", "tempseg.runtime", *argv, "--quiet", "--warmup", "1", "--no-tc"], elsewhere)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads((run_dir / "run-fp32-onnxruntime.json").read_text())["frames"] == 4
    for name in ("data", "models", "common", "runtime"):  # the user's own packages of these names stay theirs
        probe = _run([python, "-c", f"import {name}"], elsewhere)
        assert "ModuleNotFoundError" in probe.stderr, name
