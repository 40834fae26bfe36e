"""Shared fixtures: a tiny model (64x128, width 0.25) exported once per session in all precisions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

TINY = "fcresnet18x0.25_t66"
TINY_HW = (64, 128)
REPO = Path(__file__).resolve().parents[1]


def run_python(
    *args: str, env: Mapping[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """`python *args` in a fresh interpreter at the repository root: what it imports is its own to inspect."""
    env = None if env is None else {**os.environ, **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def make_tiny_model(name: str = TINY):
    """The tiny model of the tests: random weights, with BatchNorm statistics and upsamplings that are not
    their fresh values (models.random_model), so biases and the carried state are exercised."""
    from tempseg.models import random_model

    return random_model(name)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/<TINY>: checkpoint.pt, model.onnx, model.fp16.onnx and model.int8.onnx (+ calib.json)."""
    from tempseg.calibration import CalibConfig, calibrate
    from tempseg.data.classes import CITYSCAPES
    from tempseg.export.fp16 import convert_fp16
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("runs") / TINY
    model = make_tiny_model()
    save_checkpoint(run / "checkpoint.pt", model, TINY)
    contract = build_contract(model, TINY, height=TINY_HW[0], width=TINY_HW[1], classes=CITYSCAPES)
    graph = export_fp32(model, contract)
    save_onnx(graph, run / "model.onnx")
    fp16, _ = convert_fp16(graph, contract)
    save_onnx(fp16, run / "model.fp16.onnx")
    config = CalibConfig(frames=8, sequence_length=8, chunk_frames=8, eval_sequences=0, use_cache=False)
    calibrate(run / "model.onnx", run / "model.int8.onnx", config)
    return run


@pytest.fixture(scope="session")
def tiny_engines(tiny_run, tmp_path_factory) -> Path:
    """TensorRT-RTX engines (fp32, fp16) of the tiny run, built on the CPU, in their own folder."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip extra `rtx`) builds engines without a GPU")
    from tempseg.engine.__main__ import main as engine_main

    folder = tmp_path_factory.mktemp("engines")
    for precision, graph in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")):
        out = folder / f"{precision}.engine"
        assert engine_main(["--onnx", str(tiny_run / graph), "--out", str(out), "--no-timing-cache"]) == 0
    return folder


@pytest.fixture
def trt_on_gpu():
    """A TensorRT that can run engines on this machine's GPU; skips with the reason elsewhere."""
    from tempseg.common.errors import UserError
    from tempseg.engine.trt import cuda_gpu, gpu_support, load_tensorrt

    try:
        trt = load_tensorrt("auto")
    except UserError as err:
        pytest.skip(str(err))
    reason = gpu_support(trt, cuda_gpu())
    if reason:
        pytest.skip(f"needs a GPU that TensorRT runs on ({reason}); CI has none")
    return trt
