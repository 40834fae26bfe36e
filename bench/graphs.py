"""Graphs for benchmarks: the trained run's if it exists at that size, else a random-init export.

Latency and memory do not depend on the weights, so benchmarks need no training; accuracy
benchmarks (compare, paper) use trained runs.
"""

from __future__ import annotations

from pathlib import Path

from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError

CACHE = Path("runs/bench-graphs")
GRAPHS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}


def benchmark_graph(
    model: str, precision: str, height: int, width: int, runs: Path = Path("runs"), *, batch: int = 1
) -> Path:
    """Path of an ONNX graph of `model` at `height` x `width` and `batch` (fp32 or fp16)."""
    if precision not in GRAPHS:
        raise UserError(f"benchmark graphs are fp32 or fp16, not {precision}")
    trained = runs / model / (f"batch{batch}" if batch > 1 else "") / GRAPHS[precision]
    if trained.is_file() and read_onnx_contract(trained).image.shape == (batch, 3, height, width):
        return trained
    cached = CACHE / f"{model}-{height}x{width}{f'-b{batch}' if batch > 1 else ''}" / GRAPHS[precision]
    if not cached.is_file():
        _export_random(model, height, width, cached.parent, batch)
    return cached


def _export_random(model: str, height: int, width: int, out_dir: Path, batch: int = 1) -> None:
    import torch

    from tempseg.data.classes import class_table
    from tempseg.export.fp16 import convert_fp16
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.models import build_model
    from tempseg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = build_model(model).eval()
    classes = class_table(net.config.num_classes)  # no data behind random weights: the default head's classes
    save_checkpoint(out_dir / "checkpoint.pt", net, model, classes=classes)
    contract = build_contract(net, model, height=height, width=width, batch=batch, classes=classes)
    graph = export_fp32(net, contract)
    save_onnx(graph, out_dir / "model.onnx")
    save_onnx(convert_fp16(graph, contract)[0], out_dir / "model.fp16.onnx")
