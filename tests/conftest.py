"""Shared fixtures: tiny trained-free models exported once per session (64x128, width 0.25)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = "fcresnet18x0.25_t66"
TINY_HW = (64, 128)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/<TINY> with checkpoint.pt (random init, seed 0), model.onnx and model.fp16.onnx."""
    import torch

    from export.fp16 import convert_fp16
    from export.onnx_graph import build_contract, export_fp32, save_onnx
    from models import build_model
    from models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("runs") / TINY
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    save_checkpoint(run / "checkpoint.pt", model, TINY)
    contract = build_contract(model, TINY, height=TINY_HW[0], width=TINY_HW[1], batch=1, checkpoint_sha256=None)
    graph = export_fp32(model, contract)
    save_onnx(graph, run / "model.onnx")
    fp16, _ = convert_fp16(graph, contract)
    save_onnx(fp16, run / "model.fp16.onnx")
    return run


@pytest.fixture(scope="session")
def tiny_engines(tiny_run, tmp_path_factory) -> Path:
    """TensorRT-RTX engines (fp32, fp16) of the tiny run, built on the CPU, in their own folder."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip extra `rtx`) builds engines without a GPU")
    from engine.__main__ import main as engine_main

    folder = tmp_path_factory.mktemp("engines")
    for precision, graph in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")):
        out = folder / f"{precision}.engine"
        assert engine_main(["--onnx", str(tiny_run / graph), "--out", str(out), "--no-timing-cache"]) == 0
    return folder


@pytest.fixture
def trt_on_gpu():
    """A TensorRT that can run engines on this machine's GPU; skips with the reason elsewhere."""
    from common.errors import UserError
    from engine.trt import cuda_gpu, gpu_support, load_tensorrt

    try:
        trt = load_tensorrt("auto")
    except UserError as err:
        pytest.skip(str(err))
    reason = gpu_support(trt, cuda_gpu())
    if reason:
        pytest.skip(f"needs a GPU that TensorRT runs on ({reason}); untested on the CPU-only machines")
    return trt
