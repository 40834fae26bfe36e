"""What local memory attention (LMANet, `_lma{S}r{R}[p{pos}]`) costs against the frame-by-frame base.

For each variant, in one run: ONNX Runtime CPU FP32 latency per frame (state carried), the FP16 TensorRT-RTX
engine built on this machine (engine bytes, the builder's activation bytes), params, GFLOPs, state bytes, and
the ONNX graphs' node counts and file bytes; ratios against the base (the first variant) and of the two export
forms of the local correlation ("slice": pad + static slices; "onehot": a depthwise conv with one-hot kernels).

A variant is a model name, and for a memory model `@slice` or `@onehot` (default slice). Latencies are
measured in interleaved rounds (A, B, C, A, B, C...) and summarised by medians, as bench/runtime_ratios.py
does, so a neighbour's load hits every side alike. Random weights: latency and sizes do not depend on them.

    python -m bench.memory_attention [--height 256 --width 512 --rounds 5 --iters 20 --out-dir bench/results]

Writes OUT_DIR/memory_attention-<date>.json and .md; graphs and engines are cached under
runs/bench-graphs/memory_attention/<tag>-HxW/.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.machine import cpu_name
from bench.runtime_ratios import interleaved, per_call_ms
from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import sha256_file, write_json
from tempseg.common.platform import versions
from tempseg.common.text import number, table
from tempseg.models import UnknownModelError, check_model_input, model_config
from tempseg.models.memory import CORRELATIONS
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner

if TYPE_CHECKING:  # for the annotations; variant_model imports the model code when it runs
    from tempseg.models.accel import Accel
    from tempseg.models.fcresnet import FCResNet

# Apart from bench/graphs.py's cache: these graphs come from models.random_model (biases, non-fresh BN), those
# from a fresh init, so one folder name must not mean two different graphs.
CACHE = Path("runs/bench-graphs/memory_attention")
DEFAULT_VARIANTS = (
    "fcresnet18",
    "fcresnet18_t66",
    "fcresnet18_lma3r4@slice",
    "fcresnet18_lma3r4@onehot",
    "fcresnet18_lma3r4p5",
)
GRAPH_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
ENGINE_FILE = "fp16.engine"
MIB = 2**20
ONEHOT_KEYS = ("latency_ms", "engine_bytes", "activation_bytes")  # what onehot vs slice is judged on
# Versions of what produced the figures (the engines' TensorRT-RTX, else the installed one: --no-engines).
VERSIONS = ("onnxruntime", "onnx", "torch", "tensorrt_rtx")
COLUMNS = (
    "variant",
    "params M",
    "GFLOPs (graph form)",
    "state KiB fp32",
    "ONNX nodes fp32/fp16",
    "ONNX MiB fp32/fp16",
    "ORT fp32 ms",
    "x base",
    "engine fp16 MiB",
    "activations MiB",
)  # of the Markdown table, one row per variant


@dataclass(frozen=True)
class Variant:
    """A model and, for a memory model, the export form of its local correlation."""

    model: str
    correlation: str | None = None  # None: the model has no memory attention

    @property
    def tag(self) -> str:
        """`fcresnet18`, `fcresnet18_lma3r4@onehot`: the key of every figure and of the cache folder."""
        return self.model if self.correlation is None else f"{self.model}@{self.correlation}"


def parse_variant(text: str) -> Variant:
    """`MODEL[@slice|@onehot]`; UserError for an unknown model or a form on a model without memory."""
    model, _, form = text.partition("@")
    try:
        config = model_config(model)
    except UnknownModelError as err:
        raise UserError(str(err)) from None
    if config.memory is None:
        if form:
            raise UserError(f"{model} has no memory attention: '@{form}' does not apply (variant {text!r})")
        return Variant(model)
    form = form or "slice"
    if form not in CORRELATIONS:
        raise UserError(f"correlation form {form!r} of {text!r} is not one of {', '.join(CORRELATIONS)}")
    return Variant(model, form)


def check_sizes(variants: Sequence[Variant], height: int, width: int) -> None:
    """Refuse a size a variant cannot run at (stride, a window wider than the map) before any export."""
    for v in variants:
        try:
            check_model_input(model_config(v.model), height, width)
        except ValueError as err:
            raise UserError(f"{v.tag}: {err}") from None


def variant_model(variant: Variant) -> FCResNet | Accel:
    """The random-weight torch model of `variant`, its correlation form set (the attribute export reads)."""
    from tempseg.models import random_model
    from tempseg.models.fcresnet import FCResNet

    model = random_model(variant.model)
    if variant.correlation is not None:
        memory = model.memory if isinstance(model, FCResNet) else None  # a memory model is an FCResNet
        if memory is None:  # parse_variant gives a form only to a model with memory attention
            raise UserError(f"{variant.model} has no memory attention: a correlation form does not apply")
        memory.correlation = variant.correlation
    return model


# ---- graphs ---------------------------------------------------------------------------------------------


def source_fingerprint() -> str:
    """Hash of the code that shapes a graph (models/, export/): a graph cached from older code is re-exported."""
    import tempseg.export
    import tempseg.models

    digest = hashlib.sha256()
    for package in (tempseg.models, tempseg.export):
        init = package.__file__
        if init is None:  # both are regular packages, with an __init__.py
            raise RuntimeError(f"{package.__name__} has no __init__.py to find its sources by")
        for path in sorted(Path(init).parent.glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_graphs(variant: Variant, height: int, width: int, cache: Path, fingerprint: str) -> dict[str, Path]:
    """FP32 and FP16 ONNX graphs of `variant` at `height` x `width`, exported once per code version."""
    folder = cache / f"{variant.tag}-{height}x{width}"
    paths = {p: folder / name for p, name in GRAPH_FILES.items()}
    record = folder / "graph.json"
    fresh = record.is_file() and json.loads(record.read_text()).get("source_sha256") == fingerprint
    if not (fresh and all(p.is_file() for p in paths.values())):
        export_variant(variant, height, width, folder)
        write_json(record, {"variant": variant.tag, "input_hw": [height, width], "source_sha256": fingerprint})
    return paths


def export_variant(variant: Variant, height: int, width: int, folder: Path) -> None:
    """The export stage's own functions, without its parity check (random weights need none here)."""
    from tempseg.export.fp16 import convert_fp16
    from tempseg.export.onnx_graph import build_contract, export_fp32
    from tempseg.export.pipeline import save_graphs

    model = variant_model(variant)
    contract = build_contract(model, variant.model, height=height, width=width, batch=1, checkpoint_sha256=None)
    fp32 = export_fp32(model, contract)
    save_graphs({"fp32": (fp32, contract), "fp16": convert_fp16(fp32, contract)}, folder)


def graph_figures(path: Path) -> dict[str, Any]:
    """File bytes, node count and the op histogram (the two correlation forms differ in Slice vs Conv)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    return {"path": str(path), "bytes": path.stat().st_size, "nodes": len(graph.node), "ops": dict(sorted(ops.items()))}


# ---- sizes ----------------------------------------------------------------------------------------------


def size_figures(variant: Variant, height: int, width: int) -> dict[str, Any]:
    """Params, GFLOPs and state bytes from models.summary, and GFLOPs of the graph's own correlation form."""
    from tempseg.models.summary import summarize

    info = summarize(variant.model, height=height, width=width)
    return {
        "params": info["params"],
        "gflops": info["gflops"],
        "gflops_graph_form": form_gflops(variant, height, width),
        "state_bytes_fp32": info["state_bytes_fp32"],
        "states": [s["shape"] for s in info["states"]],
    }


def form_gflops(variant: Variant, height: int, width: int) -> float:
    """summarize's count runs the default (slice) form, whose products are elementwise and uncounted; the
    onehot form's depthwise conv is counted, and it is real work the exported graph does (multiplies by 0)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = variant_model(variant)
    image = torch.zeros(1, 3, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, *model.initial_states(image))
    return counter.get_total_flops() / 1e9


# ---- engines --------------------------------------------------------------------------------------------


def engine_figures(graph: Path, trt: Any) -> dict[str, Any]:
    """FP16 TensorRT-RTX engine of `graph` (built beside it, reused while graph and version match)."""
    from tempseg.engine.build import BuildOptions, build_engine
    from tempseg.engine.sidecar import read_sidecar

    engine = graph.parent / ENGINE_FILE
    reused = engine_is_current(engine, graph, trt.version)
    if not reused:
        try:
            build_engine(trt, graph, engine, BuildOptions(timing_cache=None))  # = --no-timing-cache
        except UserError as err:  # e.g. a form the RTX parser refuses: a finding, not a crash
            return engine_unavailable(f"build failed: {err}")
    record = read_sidecar(engine)
    memory = record["device_memory"]
    return {
        "engine_bytes": record["engine"]["bytes"],
        "activation_bytes": memory.get("build_log", {}).get("activation_bytes"),
        "device_memory_bytes": memory.get("bytes"),
        "build_seconds": record["build"]["seconds"],
        "compute_capabilities": record["compute_capabilities"],
        "path": str(engine),
        "reused": reused,
        "reason": None,
    }


def engine_is_current(engine: Path, graph: Path, version: str) -> bool:
    """A cached engine counts only if its record names this graph's bytes and this TensorRT-RTX version."""
    from tempseg.engine.sidecar import read_sidecar, sidecar_path

    if not (engine.is_file() and sidecar_path(engine).is_file()):
        return False
    try:
        record = read_sidecar(engine)
    except UserError:
        return False
    return (
        record["source_onnx"]["sha256"] == sha256_file(graph)
        and record["tensorrt"]["version"] == version
        and record["engine"]["bytes"] == engine.stat().st_size
    )


def engine_unavailable(reason: str) -> dict[str, Any]:
    return {"engine_bytes": None, "activation_bytes": None, "device_memory_bytes": None, "reason": reason}


def all_engines(graphs: dict[str, Path], enabled: bool) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Engine figures per tag, and the TensorRT-RTX version (None where it does not import or is off)."""
    if not enabled:
        return {tag: engine_unavailable("--no-engines") for tag in graphs}, None
    from tempseg.engine.trt import load_tensorrt

    try:
        trt = load_tensorrt("tensorrt_rtx")
    except UserError as err:
        return {tag: engine_unavailable(str(err)) for tag in graphs}, None
    return {tag: engine_figures(path, trt) for tag, path in graphs.items()}, trt.version


# ---- latency --------------------------------------------------------------------------------------------


def ort_side(graph: Path, iters: int, threads: int, samples: list[float]) -> Callable[[], float]:
    """A measurement of one graph: a session per round, so no idle session's spinning threads slow another."""
    contract = read_onnx_contract(graph)
    image = np.random.default_rng(0).standard_normal(contract.image.shape).astype(np.float32)

    def measure() -> float:
        with OnnxRuntimeRunner(contract, graph, threads=threads) as runner:
            runner.image[...] = image
            runner.infer()  # the state carried from here on (the runner swaps its two state buffers)
            ms = per_call_ms(runner.infer, iters)
        samples.append(ms)
        return ms

    return measure


def ort_latency(graphs: dict[str, Path], iters: int, rounds: int, threads: int, pause_s: float) -> dict[str, dict]:
    """Median ms per frame of each graph over interleaved rounds, and each round's figure (warm-up left out)."""
    samples: dict[str, list[float]] = {tag: [] for tag in graphs}
    sides = {tag: ort_side(g, iters, threads, samples[tag]) for tag, g in graphs.items()}
    medians = interleaved(sides, rounds, pause_s=pause_s)
    return {tag: {"median_ms": medians[tag], "rounds_ms": samples[tag][1:]} for tag in graphs}


# ---- ratios and the record ------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(variants: Sequence[Variant], figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every variant against the base (the first), and onehot against slice of each model that has both."""
    base = variants[0].tag
    keys = ("latency_ms", "params", "gflops_graph_form", "engine_bytes", "activation_bytes")  # base has no state
    out: dict[str, Any] = {"base": base}
    for key in keys:
        out[f"{key}_vs_base"] = {
            v.tag: ratio(figures[v.tag][key], figures[base][key]) for v in variants if v.tag != base
        }
    pairs = [(v.model, f"{v.model}@onehot", f"{v.model}@slice") for v in variants if v.correlation == "onehot"]
    out["onehot_vs_slice"] = {
        model: {
            key: ratio(figures[one][key], figures[sl][key])
            for key in ("latency_ms", "engine_bytes", "activation_bytes")
        }
        for model, one, sl in pairs
        if sl in figures
    }
    return out


def variant_record(variant: Variant, graphs: dict[str, Path], sizes: dict, engine: dict, latency: dict) -> dict:
    """The flat figures of one variant (the keys ratios() reads) and the detail behind them."""
    onnx = {p: graph_figures(path) for p, path in graphs.items()}
    return {
        "model": variant.model,
        "correlation": variant.correlation,
        "latency_ms": latency["median_ms"],
        "latency_rounds_ms": latency["rounds_ms"],
        **sizes,
        "onnx_nodes": {p: g["nodes"] for p, g in onnx.items()},
        "onnx_bytes": {p: g["bytes"] for p, g in onnx.items()},
        "engine_bytes": engine["engine_bytes"],
        "activation_bytes": engine["activation_bytes"],
        "engine": engine,
        "onnx": onnx,
    }


def host() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# ---- output ---------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    s, ver = results["settings"], results["versions"]
    engines = f"TensorRT-RTX {ver['tensorrt_rtx']}, built on this machine" if s["engines"] else "not built"
    lines = [
        f"# Memory attention cost, {s['height']}x{s['width']}, {results['date']}",
        "",
        f"{results['host']['cpu']}; ONNX Runtime {ver['onnxruntime']} CPU FP32, {s['threads']} threads, "
        f"median of {s['rounds']} interleaved rounds x {s['iters']} frames; FP16 engines: {engines}.",
        "",
    ]
    vs_base = results["ratios"]["latency_ms_vs_base"]
    rows = [
        [
            tag,
            number(v["params"], 2, scale=1e6),
            f"{number(v['gflops'])} ({number(v['gflops_graph_form'])})",
            number(v["state_bytes_fp32"], 0, scale=1024),
            f"{v['onnx_nodes']['fp32']}/{v['onnx_nodes']['fp16']}",
            f"{number(v['onnx_bytes']['fp32'], 1, scale=MIB)}/{number(v['onnx_bytes']['fp16'], 1, scale=MIB)}",
            number(v["latency_ms"], 2),
            number(vs_base.get(tag), suffix="x", missing="base"),
            number(v["engine_bytes"], 1, scale=MIB),
            number(v["activation_bytes"], 1, scale=MIB),
        ]
        for tag, v in results["variants"].items()
    ]
    lines += table(COLUMNS, rows, align="-" + ">" * (len(COLUMNS) - 1))  # figures aligned right
    for model, r in results["ratios"]["onehot_vs_slice"].items():
        lines.append("")
        shown = ", ".join(f"{key} {number(r[key], suffix='x')}" for key in ONEHOT_KEYS)
        lines.append(f"{model} onehot / slice: {shown}")
    reasons = {v["engine"]["reason"] for v in results["variants"].values() if v["engine"]["reason"]}
    lines += [""] + [f"- no engine: {reason}" for reason in sorted(reasons)]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.memory_attention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (after one warm-up round)")
    p.add_argument("--iters", type=int, default=20, help="frames per round")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--pause", type=float, default=1.0, help="seconds before each round: the last session's threads stop spinning"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        metavar="MODEL[@FORM]",
        help="the first is the base of the ratios; FORM of a memory model: slice (default) or onehot",
    )
    p.add_argument("--no-engines", action="store_true", help="skip the TensorRT-RTX FP16 engine builds")
    p.add_argument("--out-dir", type=Path, default=Path("bench/results"), help="folder of the .json and .md")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"graph and engine cache (default {CACHE})")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.iters < 1:
        raise UserError("--rounds and --iters must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [parse_variant(text) for text in args.variants]
    if len({v.tag for v in variants}) != len(variants):
        raise UserError(f"a variant is listed twice: {', '.join(v.tag for v in variants)}")
    hw = (args.height, args.width)
    check_sizes(variants, *hw)
    fingerprint = source_fingerprint()
    graphs = {v.tag: cached_graphs(v, *hw, args.cache, fingerprint) for v in variants}
    sizes = {v.tag: size_figures(v, *hw) for v in variants}
    # Builds before the timed rounds: a build keeps the cores busy and would load the first rounds.
    engines, rtx_version = all_engines({tag: g["fp16"] for tag, g in graphs.items()}, not args.no_engines)
    fp32 = {tag: g["fp32"] for tag, g in graphs.items()}
    latency = ort_latency(fp32, args.iters, args.rounds, args.threads, args.pause)
    records = {v.tag: variant_record(v, graphs[v.tag], sizes[v.tag], engines[v.tag], latency[v.tag]) for v in variants}
    date = datetime.date.today().isoformat()
    results = {
        "bench": "memory_attention",
        "date": date,
        "command": "python -m bench.memory_attention " + " ".join(sys.argv[1:] if argv is None else argv),
        "host": host(),
        "versions": {**versions(VERSIONS), **({"tensorrt_rtx": rtx_version} if rtx_version else {})},
        "settings": {
            **{k: getattr(args, k) for k in ("height", "width", "rounds", "iters", "threads", "pause")},
            "variants": [v.tag for v in variants],
            "engines": not args.no_engines,
        },
        "variants": records,
        "ratios": ratios(variants, records),
        "notes": NOTES,
    }
    out = args.out_dir / f"memory_attention-{date}.json"
    write_json(out, results)
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


NOTES = [
    "latency_ms: median over interleaved rounds of ms per frame, OnnxRuntimeRunner.infer (IO binding, the state "
    "carried between frames), a new session per round; latency_rounds_ms: each round, the warm-up left out",
    "gflops: models.summary (torch FlopCounterMode, convs and matmuls; the slice correlation's elementwise products "
    "are not counted); gflops_graph_form: the same count on the model in the graph's correlation form",
    "params, gflops, state_bytes_fp32: the torch model at this input size (both correlation forms alike)",
    "activation_bytes: TensorRT-RTX's build log (Total Activation Memory) of the FP16 engine; device_memory_bytes "
    "only where the engine could be deserialized on a GPU",
    "random weights (models.random_model): latency and sizes do not depend on them",
]


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
