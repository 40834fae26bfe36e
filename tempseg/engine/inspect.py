"""`python -m tempseg.engine.inspect runs/M/fp16.engine [--layers] [--deserialize]`: what an engine is, from its
build record.

Verifies the engine against its record first (size, sha256). `--deserialize` also loads it with the
recorded TensorRT flavour and prints the EngineInspector's layers: GPU only, not run by the CPU tests.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tempseg.common.errors import run_cli
from tempseg.engine.sidecar import check_engine


def summary(payload: dict[str, Any]) -> list[str]:
    """Human-readable lines of a build record."""
    engine, trt, build, memory = payload["engine"], payload["tensorrt"], payload["build"], payload["device_memory"]
    contract = payload["contract"]
    states = ", ".join(f"{s['input']} {s['shape']} {s['dtype']}" for s in contract["states"]) or "none"
    device = memory["bytes"] if memory["bytes"] is not None else f"unknown ({memory.get('reason')})"
    size = "x".join(map(str, [payload["batch"], *payload["input_hw"]]))
    targets = ", ".join(payload["compute_capabilities"]) or "unknown"
    lines = [
        f"model        {payload['model']}  precision {payload['precision']}  input {size}",
        f"engine       {engine['file']}  {engine['bytes'] / (1 << 20):.1f} MiB  sha256 {engine['sha256'][:16]}…",
        f"tensorrt     {trt['flavour']} {trt['version']}  targets {targets} ({payload['compute_capability_source']})",
        f"build        {build['seconds']:.2f} s  {build['created_utc']}  strongly typed {build['strongly_typed']}"
        f"  flags {', '.join(build['builder_flags']) or 'none'}",
        f"source       {payload['source_onnx']['path']}  sha256 {payload['source_onnx']['sha256'][:16]}…",
        f"states       {states}",
        f"device mem   {device}  build log {memory.get('build_log') or '-'}",
        f"layers       {payload['layers']['count']} ({payload['layers']['source']})",
    ]
    for kind in ("inputs", "outputs"):
        lines += [f"{kind[:-1]:<12} {t['name']} {t['shape']} {t['dtype']}" for t in payload["io"][kind]]
    return lines


def layer_lines(layers: list[Any]) -> list[str]:
    """One line per layer: inspector dicts/strings or the network's {name, type, precision}."""
    out = []
    for layer in layers:
        if isinstance(layer, dict) and "type" in layer:
            out.append(f"  {layer['type']:<16} {layer.get('precision', ''):<9} {layer['name']}")
        else:
            out.append(f"  {json.dumps(layer) if isinstance(layer, dict) else layer}")
    return out


def deserialized_layers(engine_path: Path, payload: dict[str, Any]) -> list[str]:
    """EngineInspector layers of the engine itself (GPU + the recorded TensorRT flavour); not run by the CPU tests."""
    from tempseg.engine.build import inspect_engine
    from tempseg.engine.trt import load_tensorrt

    trt = load_tensorrt(payload["tensorrt"]["flavour"])
    result = inspect_engine(trt, engine_path.read_bytes())
    if not result["ok"]:
        return [f"cannot deserialize: {result['reason']}"]
    return [f"device memory {result['device_memory_bytes']} bytes", *layer_lines(result["layers"])]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tempseg.engine.inspect", description=__doc__)
    p.add_argument("engine", type=Path, help="engine file (its build record ENGINE.json must be beside it)")
    p.add_argument("--layers", action="store_true", help="list the recorded layers")
    p.add_argument("--deserialize", action="store_true", help="load the engine (GPU) and list the inspector's layers")
    args = p.parse_args(argv)
    payload = check_engine(args.engine)
    lines = summary(payload)
    if args.layers:
        lines += layer_lines(payload["layers"]["items"])
    if args.deserialize:
        lines += deserialized_layers(args.engine, payload)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
