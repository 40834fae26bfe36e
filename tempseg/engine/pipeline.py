"""The engine stage as one call: a contract graph -> <out>.engine + its record, a keyframe pair's keyframe first.

An update graph of a keyframe pair (Accel) names its keyframe graph: both contracts are read and checked as a
pair before TensorRT is even imported, the keyframe engine is written first, next to OUT as keyframe.<OUT name>,
and the update engine's record names it (the runtime finds the pair from the update engine alone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.contract import Contract, check_keyframe_pair, read_onnx_contract
from tempseg.engine.build import BuildOptions, BuildResult, build_engine
from tempseg.engine.trt import load_tensorrt


def build_engines(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: BuildOptions | None = None,
    *,
    flavour: str = "auto",
) -> list[BuildResult]:
    """Build `onnx_path` into `out` with the TensorRT `flavour` (auto: tensorrt, else tensorrt_rtx); an update
    graph's keyframe graph first; options default to BuildOptions(), the CLI's. Returns the builds in order,
    `out`'s last. UserError on bad input (a broken graph, no TensorRT, a parser or builder error)."""
    onnx_path, out, options = Path(onnx_path), Path(out), options or BuildOptions()
    contract = read_onnx_contract(onnx_path)  # a broken graph stops here, before TensorRT is even imported
    keyframe = keyframe_graph(contract, onnx_path)
    trt = load_tensorrt(flavour, verbose=options.verbose)
    results = []
    if keyframe is not None:
        keyframe_out = out.with_name(f"keyframe.{out.name}")
        results.append(build_engine(trt, keyframe[0], keyframe_out, options, contract=keyframe[1]))
        contract = contract.with_changes(schedule={**contract.schedule, "keyframe_graph": keyframe_out.name})
    results.append(build_engine(trt, onnx_path, out, options, contract=contract))
    return results


def keyframe_graph(contract: Contract, onnx_path: Path) -> tuple[Path, Contract] | None:
    """The keyframe graph an update graph names (checked as its pair), or None for a single graph."""
    if contract.role != "update":
        return None
    path = onnx_path.parent / contract.schedule["keyframe_graph"]
    keyframe = read_onnx_contract(path)
    check_keyframe_pair(contract, keyframe, str(path))
    return path, keyframe


def stage_lines(results: Sequence[BuildResult], seconds: float) -> list[str]:
    """What the CLI prints: a line per keyframe engine, then `stage engine: 1.23 s -> OUT (MiB, flavour version)`."""
    *keyframes, last = results
    lines = [f"stage engine: keyframe graph -> {r.engine_path} ({_mib(r)} MiB)" for r in keyframes]
    trt = last.sidecar["tensorrt"]
    lines.append(
        f"stage engine: {seconds:.2f} s -> {last.engine_path} ({_mib(last)} MiB, {trt['flavour']} {trt['version']})"
    )
    return lines


def _mib(result: BuildResult) -> str:
    return f"{result.engine_bytes / (1 << 20):.1f}"
