"""Shared fixtures: a tiny model (64x128, width 0.25) exported once per session in all precisions."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = "fcresnet18x0.25_t66"
TINY_HW = (64, 128)


def make_tiny_model(name: str = TINY):
    """A random model whose BatchNorm statistics are not the identity, so that the exported convs
    have non-zero biases (a fresh model's fold to none, and bias handling would go untested), and
    whose upsamplings are not the bilinear start: a fresh concat merge has zero weights on the
    state's channels, so the state would not reach the labels and no test could see it carried."""
    import torch

    from models import build_model

    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
            if isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
    return model


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/<TINY>: checkpoint.pt, model.onnx, model.fp16.onnx and model.int8.onnx (+ calib.json)."""
    from calibration import CalibConfig, calibrate
    from export.fp16 import convert_fp16
    from export.onnx_graph import build_contract, export_fp32, save_onnx
    from models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("runs") / TINY
    model = make_tiny_model()
    save_checkpoint(run / "checkpoint.pt", model, TINY)
    contract = build_contract(model, TINY, height=TINY_HW[0], width=TINY_HW[1], batch=1, checkpoint_sha256=None)
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
        pytest.skip(f"needs a GPU that TensorRT runs on ({reason}); CI has none")
    return trt
