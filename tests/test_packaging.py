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
    folders = {p.parent for p in (REPO / "tempseg").rglob("*.py") if "__pycache__" not in p.parts}
    for folder in folders:
        init = f"{folder.relative_to(REPO).as_posix()}/__init__.py"
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


def test_a_checkout_imports_each_module_once_under_its_file_path():
    """`import tempseg.<stage>` in a checkout: every module is loaded from the file its name says, and no stage
    is loaded a second time as a top-level package (`runtime`, `data`, ...)."""
    code = (
        "import importlib, pkgutil, sys, tempseg\n"
        "names = [m.name for m in pkgutil.walk_packages(tempseg.__path__, 'tempseg.') if '__main__' not in m.name]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
        "for name, module in sys.modules.items():\n"
        "    if name.split('.')[0] in ('common', 'data', 'models', 'train', 'export', 'calibration', 'engine',"
        " 'runtime', 'metrics'):\n"
        "        print('TOP-LEVEL', name)\n"
        "    elif name.startswith('tempseg'):\n"
        "        path = name.replace('.', '/')\n"
        "        assert module.__file__.endswith((path + '.py', path + '/__init__.py')), (name, module.__file__)\n"
    )
    result = _run([sys.executable, "-c", code], REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    count, *tops = result.stdout.split("\n")
    files = [p for p in (REPO / "tempseg").rglob("*.py") if p.name != "__main__.py" and "__pycache__" not in p.parts]
    assert int(count) == len(files) - 1  # every module of the package was imported (tempseg/__init__.py is the root)
    assert not [t for t in tops if t], tops
