"""Compare scaled variants: memory, latency and accuracy side by side, with a Pareto plot.

`make compare MODELS="fcresnet18 fcresnet18_t66 ..." PRECISIONS="fp32 fp16 int8" [BACKEND=]`:
builds what is missing through make (checkpoint, graphs, INT8, engines), runs every model x
precision through the runtime on the same frames, and writes runs/compare/compare.json,
compare.csv, compare.md and compare.png. A run whose report already exists for the same frames
is reused unless --force.

Engines are built whenever a TensorRT builder imports, also where the runtime backend cannot run
them: TensorRT-RTX compiles on a CPU-only machine, so the engine and activation sizes in the
table are those of real engines even where latency comes from ONNX Runtime.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError, run_cli
from common.io import atomic_path, atomic_write, write_json
from data import Frame, open_source
from runtime.loop import LoopOptions, run_loop
from runtime.report import build_report
from runtime.session import make_runner, select

MB = 2**20


def build_artefacts(
    model: str, precisions: list[str], *, engines: bool, preset: str, height: int, width: int, runs: Path, frames: int
) -> None:
    """`make` the graphs (and engines) that are missing; make skips what is up to date."""
    targets = ["export"] + (["calibrate"] if "int8" in precisions else [])
    common = [f"MODEL={model}", f"PRESET={preset}", f"HEIGHT={height}", f"WIDTH={width}", f"RUNS={runs}"]
    # the compare runs measure every precision's accuracy; calibration's own check can be short
    common += [f"CALIB_FRAMES={frames}", "CALIB_ARGS=--eval-sequences 2"]
    _make([*targets, *common])
    if engines:
        for precision in precisions:
            _make(["engine", *common, f"PRECISION={precision}"])


def engine_builder() -> str | None:
    """The TensorRT flavour `make engine` would build with here, or None when none imports."""
    from engine.trt import load_tensorrt

    try:
        return load_tensorrt("auto").flavour
    except UserError:
        return None


def engine_figures(run_dir: Path, precision: str) -> dict | None:
    """File size and activation memory of runs/MODEL/<precision>.engine from its build record."""
    from engine.sidecar import read_sidecar, sidecar_path

    engine_path = run_dir / f"{precision}.engine"
    if not sidecar_path(engine_path).is_file():
        return None
    record = read_sidecar(engine_path)  # UserError naming the record if it is corrupt or outdated
    memory = record["device_memory"]
    activation = memory["bytes"] if memory["bytes"] is not None else memory["build_log"].get("activation_bytes")
    return {
        "engine_file_bytes": record["engine"]["bytes"],
        "activation_bytes": activation,
        "activation_source": memory.get("source") or "build log",
        "tensorrt": f"{record['tensorrt']['flavour']} {record['tensorrt']['version']}",
        "compute_capabilities": record.get("compute_capabilities") or [],
    }


def _make(args: list[str]) -> None:
    result = subprocess.run(["make", "--no-print-directory", *args], check=False)
    if result.returncode != 0:
        raise UserError(f"`make {' '.join(args)}` failed with exit code {result.returncode}")


def measure(
    model: str, precision: str, backend: str, frames: list[Frame], source_tag: str, *, runs: Path, force: bool
) -> dict:
    """The run report of one model x precision on `frames` (reused when already measured on them)."""
    run_dir = runs / model
    selection = select(run_dir, precision, backend)
    path = run_dir / f"run-{precision}-{selection.backend}.json"
    if path.is_file() and not force:
        report = json.loads(path.read_text())
        if report.get("source") == source_tag and report.get("frames") == len(frames):
            return report
    runner = make_runner(selection)
    options = LoopOptions(warmup=min(10, len(frames) // 4), progress=False)
    with runner:
        result = run_loop(runner, frames, options, source_fps=17.0, total=len(frames))
        memory, device = runner.memory(), runner.device_name
    report = build_report(selection.contract, selection.backend, device, result, memory, source=source_tag)
    report["artefact_bytes"] = selection.artefact.stat().st_size
    write_json(path, report)
    return report


def base_model(name: str) -> str:
    """The non-temporal model of the same depth and width: fcresnet18x0.5_t66 -> fcresnet18x0.5."""
    return name.split("_t", 1)[0]


def deployed_memory(report: dict, engine: dict | None) -> dict:
    """The report's memory figures, with the engine's file size and activation memory.

    A TensorRT backend measured them itself. Elsewhere they come from the engine's build record:
    ONNX Runtime's CPU arena has no activation figure that compares across runs in one process.
    """
    memory = dict(report["memory"])
    if report["backend"] not in ("tensorrt", "tensorrt_rtx"):
        memory["activation_bytes"] = None if engine is None else engine["activation_bytes"]
        memory["engine_file_bytes"] = None if engine is None else engine["engine_file_bytes"]
    return memory


def memory_bytes(memory: dict) -> int:
    """What the model occupies while running: weights + activations + state + I/O buffers."""
    return sum(memory.get(k) or 0 for k in ("weights_bytes", "activation_bytes", "state_bytes", "io_bytes"))


def table_rows(reports: list[dict], engines: dict[tuple[str, str], dict | None]) -> list[dict]:
    """One row per report; `engines` maps (model, precision) to engine_figures() (None: no engine)."""
    by_key = {(r["model"], r["precision"]): r for r in reports}
    memory = {key: deployed_memory(r, engines.get(key)) for key, r in by_key.items()}
    rows = []
    for r in reports:
        key = (r["model"], r["precision"])
        m, acc = memory[key], r.get("accuracy") or {}
        base_key = (base_model(r["model"]), r["precision"])
        base = by_key.get(base_key)
        row = {
            "model": r["model"],
            "precision": r["precision"],
            "backend": r["backend"],
            "params_m": round((m.get("params") or 0) / 1e6, 3),
            "weights_mb": _mb(m.get("weights_bytes")),
            "engine_mb": _mb(m.get("engine_file_bytes")),
            "activation_mb": _mb(m.get("activation_bytes")),
            "state_kb": None if m.get("state_bytes") is None else round(m["state_bytes"] / 1024, 1),
            "memory_mb": _mb(memory_bytes(m)),
            "p50_ms": r["latency_ms"]["p50"],
            "p99_ms": r["latency_ms"]["p99"],
            "fps": r["fps"],
            "miou": acc.get("miou"),
            "flame": acc.get("flame_miou"),
            "tc": acc.get("tc"),
            "d_miou": None,
            "d_latency": None,
            "d_memory": None,
        }
        if base is not None and base is not r:
            base_acc = base.get("accuracy") or {}
            if row["miou"] is not None and base_acc.get("miou") is not None:
                row["d_miou"] = round(100 * (row["miou"] - base_acc["miou"]), 2)
            row["d_latency"] = round(100 * (r["latency_ms"]["p50"] / base["latency_ms"]["p50"] - 1), 1)
            row["d_memory"] = round(100 * (memory_bytes(m) / memory_bytes(memory[base_key]) - 1), 1)
        rows.append(row)
    return rows


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 2)


COLUMNS = [
    ("model", "model"),
    ("precision", "prec"),
    ("params_m", "params M"),
    ("weights_mb", "weights MB"),
    ("engine_mb", "engine MB"),
    ("activation_mb", "activation MB"),
    ("state_kb", "state KB"),
    ("memory_mb", "memory MB"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("fps", "fps"),
    ("miou", "mIoU"),
    ("flame", "FLAME"),
    ("tc", "TC"),
    ("d_miou", "ΔmIoU (pts)"),
    ("d_latency", "Δlatency %"),
    ("d_memory", "Δmemory %"),
]


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[key], signed=key.startswith("d_")) for key, _ in COLUMNS) + " |")
    lines += [
        "",
        "Δ columns: against the non-temporal model of the same depth and width at the same precision "
        "(the format of LMANet's Tables IV/V).",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: object, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if signed:
        return f"{value:+.1f}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another with lower-or-equal cost and higher-or-equal accuracy (cost, acc)."""
    front, best = [], float("-inf")
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["miou"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = dict(zip(sorted({r["model"] for r in scored}), "osD^vP*Xh<>p", strict=False))
    colours = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    for ax, cost_key, label in (
        (axes[0], "p50_ms", "latency p50 (ms)"),
        (axes[1], "memory_mb", "memory while running (MB)"),
    ):
        for r in scored:
            ax.scatter(
                r[cost_key],
                r["miou"],
                marker=markers[r["model"]],
                color=colours.get(r["precision"], "grey"),
                s=70,
                zorder=3,
            )
        front = pareto_front([(r[cost_key], r["miou"]) for r in scored])
        ax.plot(*zip(*front, strict=True), "--", color="black", lw=1, zorder=2, label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("mIoU (synthetic val)")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=mk, color="black", label=m) for m, mk in markers.items()]
    handles += [plt.Line2D([], [], ls="", marker="s", color=c, label=p) for p, c in colours.items()]
    handles += [plt.Line2D([], [], ls="--", color="black", label="Pareto front")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def table_header(reports: list[dict], figures: dict[tuple[str, str], dict | None], what: str) -> str:
    """Where latency and the memory figures come from."""
    header = f"Latency and accuracy: {reports[0]['backend']} on {reports[0]['device']}, {what}."
    built = [f for f in figures.values() if f is not None]
    if built and reports[0]["backend"] not in ("tensorrt", "tensorrt_rtx"):
        capabilities = ", ".join(built[0]["compute_capabilities"]) or "this GPU"
        header += (
            f" Engine and activation MB: {built[0]['tensorrt']} engines built here for compute capability "
            f"{capabilities} ({built[0]['activation_source']}), not run."
        )
    return header


def _listed(figures: dict[tuple[str, str], dict | None]) -> list[dict]:
    return [{"model": m, "precision": p, **f} for (m, p), f in figures.items() if f is not None]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"], choices=("fp32", "fp16", "int8"))
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt", "tensorrt_rtx", "torch"))
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--frames", type=int, default=60, help="synthetic val frames every run sees (default 60)")
    p.add_argument("--preset", default="compare", help="training preset for models without a checkpoint")
    p.add_argument("--force", action="store_true", help="re-run measurements that already have a report")
    p.add_argument("--calib-frames", type=int, default=32, help="INT8 calibration frames (default 32)")
    p.add_argument("--no-engines", action="store_true", help="skip engines unless the backend runs them")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run directories live here (default runs/)")
    p.add_argument("--out", type=Path, help="where the table goes (default RUNS/compare)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = args.out or args.runs / "compare"
    engines = args.backend in ("tensorrt", "tensorrt_rtx") or (not args.no_engines and engine_builder() is not None)
    for model in args.models:
        build_artefacts(
            model,
            args.precisions,
            engines=engines,
            preset=args.preset,
            height=args.height,
            width=args.width,
            runs=args.runs,
            frames=args.calib_frames,
        )
    source_tag = f"synthetic val, {args.frames} frames"
    with open_source("synthetic", height=args.height, width=args.width, frames=args.frames) as source:
        frames = list(source)
    reports = []
    for model in args.models:
        for precision in args.precisions:
            reports.append(
                measure(model, precision, args.backend, frames, source_tag, runs=args.runs, force=args.force)
            )
            r = reports[-1]
            print(
                f"measured {model} {precision} on {r['backend']}: "
                f"p50 {r['latency_ms']['p50']:.1f} ms, mIoU {r['accuracy']['miou']}"
            )
    figures = {(r["model"], r["precision"]): engine_figures(args.runs / r["model"], r["precision"]) for r in reports}
    rows = table_rows(reports, figures)
    header = table_header(reports, figures, f"{args.height}x{args.width}, {source_tag}")
    write_json(out / "compare.json", {"header": header, "rows": rows, "reports": reports, "engines": _listed(figures)})
    write_csv(rows, out / "compare.csv")
    text = markdown(rows, header)
    with atomic_write(out / "compare.md", "w") as handle:
        handle.write(text)
    plot(rows, out / "compare.png", header)
    print(text)
    print(f"stage compare: {time.perf_counter() - started:.1f} s -> {out}/compare.{{json,csv,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
