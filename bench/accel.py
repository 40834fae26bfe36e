"""Accel against keyframe interval (the paper's Table 2) beside the per-frame families, measured in one run.

`python -m bench.accel [--runs runs/compare-compare] [--models ...] [--intervals 1 5 10] [--baselines ...]`

Every row streams the same synthetic val frames (12 sequences x 20 frames, as `make compare`) through the
runtime's loop on one backend and precision, one row after the other in this process: mIoU of clean and
degraded frames with 95 % intervals, the difference to the first baseline (fcresnet18) on the same frames
with its interval, mean / p99 latency, the split by frame kind (keyframe, update, and the host flow inside an
update frame), the worst frame, memory (engines and activations of both graphs from their TensorRT-RTX build
records), and mIoU per millisecond of mean latency. Rows are trained with one recipe (compare checks it);
Accel and fcresnet18 start from different bases, so the difference is measured on the same frames but is not
the controlled pair of a temporal row and its control (fcresnet18x0.5 is that control).

The flow cost of each source, twice: from the loop (DIS on the host is the `flow` phase of update frames; a flow
net's is inside the update graph, the difference of the two update graphs' compute, the same update network and
warp otherwise) and isolated (the two update graphs and GridFlow's DIS called in alternating rounds on the same
inputs, medians: `bench/runtime_ratios.py` interleaved), which a second process on the cores moves less.

Latency is ONNX Runtime on this machine's CPU unless --backend says otherwise; a second process on the same
cores moves every row, so read the ratios of one run, not absolute milliseconds across runs.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.compare import deployed_memory, engine_figures, measure, memory_bytes, trained_recipe
from bench.runtime_ratios import interleaved
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json, write_text
from tempseg.common.text import number, table
from tempseg.data.flow import GridFlow
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.metrics.paired import miou_interval

MODELS = ("fcresnet18x0.5_accel34", "fcresnet18x0.5_accel34_flownet")
BASELINES = ("fcresnet18", "fcresnet18x0.5", "fcresnet18_t66", "fcresnet18_lma3r4")
INTERVALS = (1, 5, 10)
MB = 2**20
COLUMNS = (
    "model",
    "every",
    "mIoU clean [95 %]",
    "mIoU degraded [95 %]",
    "d clean",
    "d degraded",
    "mean ms",
    "p99 ms",
    "keyframe ms",
    "update ms (flow)",
    "worst ms",
    "engines MB",
    "memory MB",
    "mIoU/ms x1000",
)  # of the Markdown table, one row per measured run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.accel", description=__doc__)
    p.add_argument("--runs", type=Path, default=Path("runs/compare-compare"), help="trained run directories")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="keyframe models (Accel)")
    p.add_argument("--intervals", nargs="+", type=int, default=list(INTERVALS), help="keyframe intervals")
    p.add_argument("--baselines", nargs="+", default=list(BASELINES), help="per-frame rows; the first is the reference")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16"))
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "tensorrt_rtx", "torch"))
    p.add_argument("--sequences", type=int, default=12)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--reuse", action="store_true", help="reuse reports measured earlier (latency from another run)")
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md (default bench/results/accel-DATE)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.intervals) < 1:
        raise UserError(f"keyframe intervals are at least 1, not {min(args.intervals)}")
    started = time.perf_counter()
    for model in [*args.baselines, *args.models]:
        trained_recipe(args.runs / model)  # every row must be trained (UserError naming the run otherwise)
    source_tag = f"synthetic val, {args.sequences} sequences x {args.frames} frames, TC with the exact flow"
    source = open_source(
        "synthetic",
        height=256,
        width=512,
        frames=args.sequences * args.frames,
        sequence_length=args.frames,
        with_flow=True,
    )
    with source:
        frames = list(source)
    rows, scores = [], {}
    runs = [(m, None) for m in args.baselines] + [(m, k) for m in args.models for k in args.intervals]
    for model, interval in runs:
        report, scores[(model, interval)] = measure(
            model,
            args.precision,
            args.backend,
            frames,
            source_tag,
            runs=args.runs,
            force=not args.reuse,
            keyframe_every=interval,
        )
        rows.append(row(report, interval, engine_figures(args.runs / model, args.precision)))
        print(f"measured {model}{'' if interval is None else f' every {interval}'}: {rows[-1]['mean_ms']} ms")
    reference = (args.baselines[0], None)
    for r in rows:
        r.update(deltas(scores[(r["model"], r["interval"])], scores[reference]))
    flow = flow_costs(rows)
    isolated = isolated_flow_costs(args.runs, args.models, args.precision, frames)
    out = args.out or Path("bench/results") / f"accel-{datetime.date.today().isoformat()}"
    header = f"{args.precision} on {rows[0]['backend']} ({rows[0]['device']}), 256x512, {source_tag}"
    record = {"header": header, "rows": rows, "flow_cost_ms": flow, "flow_cost_isolated_ms": isolated}
    write_json(out.with_suffix(".json"), record)
    text = markdown(rows, flow, header, args.baselines[0]) + isolated_text(isolated)
    write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"bench accel: {time.perf_counter() - started:.0f} s -> {out}.json, {out}.md")
    return 0


def row(report: dict, interval: int | None, engine: dict | None) -> dict:
    """The figures of one run report (and its engines' build records)."""
    acc, by_kind = report["accuracy"], report.get("latency_by_kind_ms") or {}
    memory = deployed_memory(report, engine)
    kind = {k: by_kind.get(k, {}) for k in ("keyframe", "update")}
    return {
        "model": report["model"],
        "interval": interval,
        "backend": report["backend"],
        "device": report["device"],
        "miou_clean": acc["miou_clean"],
        "miou_degraded": acc["miou_degraded"],
        "mean_ms": report["latency_ms"]["mean"],
        "p99_ms": report["latency_ms"]["p99"],
        "worst_ms": report["worst_frame"]["ms"],
        "worst_kind": report["worst_frame"]["kind"],
        "keyframe_ms": _stat(kind["keyframe"], "total"),
        "update_ms": _stat(kind["update"], "total"),
        "update_compute_ms": _stat(kind["update"], "compute"),
        "flow_ms": _stat(kind["update"], "flow"),
        "engine_mb": None if engine is None else round(engine["engine_file_bytes"] / MB, 1),
        "memory_mb": round(memory_bytes(memory) / MB, 1),
        "miou_per_ms": round(acc["miou"] / report["latency_ms"]["mean"], 5),
    }


def _stat(kind: dict, part: str) -> float | None:
    return kind.get(part, {}).get("mean") if kind.get("frames") else None


def deltas(scores: StreamScores, reference: StreamScores) -> dict:
    """mIoU intervals of the row and its difference to the reference row on the same frames (points)."""
    out: dict = {}
    for subset in ("clean", "degraded"):
        low, high = miou_interval(scores, subset)
        delta = paired_delta(scores, reference, subset)
        out[f"miou_{subset}_ci"] = [low, high]
        out[f"d_{subset}"] = delta.delta
        out[f"d_{subset}_ci"] = [delta.low, delta.high]
    return out


def flow_costs(rows: list[dict]) -> dict:
    """Mean ms of each flow source on update frames: host DIS (its phase), the flow net (the difference of the
    two update graphs' compute at the same interval)."""
    cost: dict = {}
    updates = {(r["model"], r["interval"]): r for r in rows if r["update_ms"] is not None}
    for (model, interval), r in updates.items():
        if model.endswith("_flownet"):
            host = updates.get((model.removesuffix("_flownet"), interval))
            if host is not None:
                extra = r["update_compute_ms"] - host["update_compute_ms"]
                cost.setdefault("flow net (in the update graph)", []).append(round(extra, 2))
        else:
            cost.setdefault("OpenCV DIS on the host", []).append(r["flow_ms"])
    return cost


def isolated_flow_costs(runs: Path, models: list[str], precision: str, frames: list[Frame], rounds: int = 40) -> dict:
    """Median ms per call, in alternating rounds: each update graph (ONNX Runtime, zero inputs; spinning off, as
    the pair runner has it) and DIS on consecutive frames; the flow net's cost is the difference of the two
    update graphs. Empty unless both a host-flow and a flow-net model are given."""
    host = next((m for m in models if not m.endswith("_flownet")), None)
    net = next((m for m in models if m.endswith("_flownet")), None)
    if host is None or net is None:
        return {}
    graph = "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"
    sides = {f"update graph {m}": _session_call(runs / m / graph) for m in (host, net)}
    grid = GridFlow((256 // 8, 512 // 8))
    greys = [grid.grey(f.image) for f in frames[:21]]
    out = np.empty((2, 32, 64), np.float32)
    step = iter(range(10**9))

    def dis() -> float:
        t = next(step) % 20
        start = time.perf_counter()
        grid(grid.grey(frames[t + 1].image), greys[t], out=out)
        return (time.perf_counter() - start) * 1e3

    sides["DIS (GridFlow, grey + calc + resize)"] = dis
    medians = interleaved(sides, rounds)
    flow_net = medians[f"update graph {net}"] - medians[f"update graph {host}"]
    return {**{k: round(v, 3) for k, v in medians.items()}, "flow net (difference)": round(flow_net, 3)}


def _session_call(path: Path):
    """A timed call of the graph at `path` on zero inputs (a plain session, spinning off as in the pair runner)."""
    from tempseg.export.parity import ort_session

    session = ort_session(str(path))
    feeds = {
        i.name: np.zeros(
            [d if isinstance(d, int) else 1 for d in i.shape], np.float16 if "16" in i.type else np.float32
        )
        for i in session.get_inputs()
    }

    def call() -> float:
        start = time.perf_counter()
        session.run(None, feeds)
        return (time.perf_counter() - start) * 1e3

    return call


def isolated_text(isolated: dict) -> str:
    if not isolated:
        return ""
    lines = ["", "Isolated (median ms per call, alternating rounds on the same inputs):"]
    return "\n".join([*lines, *(f"- {name}: {number(ms, 2)}" for name, ms in isolated.items())]) + "\n"


def markdown(rows: list[dict], flow: dict, header: str, reference: str) -> str:
    lines = [
        f"Accel against keyframe interval, {header}. d = difference to {reference} on the same frames "
        "(points, 95 % interval over sequences).",
        "",
        *table(COLUMNS, [_cells(r) for r in rows]),
        "",
        "Flow cost per update frame (ms, one value per interval): ",
    ]
    lines += [f"- {source}: {', '.join(number(v, 2) for v in values)}" for source, values in flow.items()]
    return "\n".join(lines) + "\n"


def _cells(r: dict) -> list:
    """One row of the table, a cell per column of COLUMNS."""
    update = "-" if r["update_ms"] is None else f"{number(r['update_ms'], 1)} ({number(r['flow_ms'], 2)})"
    return [
        r["model"],
        r["interval"] or "every frame",
        _ci(r, "clean"),
        _ci(r, "degraded"),
        _d(r, "clean"),
        _d(r, "degraded"),
        number(r["mean_ms"], 1),
        number(r["p99_ms"], 1),
        number(r["keyframe_ms"], 1),
        update,
        f"{number(r['worst_ms'], 1)} ({r['worst_kind']})",
        number(r["engine_mb"], 1),
        number(r["memory_mb"], 1),
        number(1000 * r["miou_per_ms"], 2),
    ]


def _ci(r: dict, subset: str) -> str:
    low, high = r[f"miou_{subset}_ci"]
    return f"{100 * r[f'miou_{subset}']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _d(r: dict, subset: str) -> str:
    low, high = r[f"d_{subset}_ci"]
    return f"{r[f'd_{subset}']:+.1f} [{low:+.1f}, {high:+.1f}]"


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
