"""Compare scaled variants: memory, latency and paired accuracy side by side, with a plot of the paired deltas.

`make compare MODELS="fcresnet18 fcresnet18_t66 ..." PRECISIONS="fp32 fp16 int8" [BACKEND=] [PRESET=]`:
builds what is missing (bench/artefacts.py: the stages' library functions, make's rule and layout; base, fine-tune,
graphs, INT8, engines; each only when missing or older than its input) under RUNS (default
runs/compare-<preset>, apart from `make engine`'s runs/, so nothing trained with another recipe is
reused or overwritten), runs every model x precision through the runtime on the same frames, and
writes RUNS/compare.json, compare.csv, compare.md and compare.png. A run whose report already exists
for the same frames is reused unless --force. The plot is each row's paired Δ mIoU against its control over
latency and memory; `--replot TABLE.json` draws it again from a table's JSON, beside it, measuring nothing.

Accuracy is paired: every row was fine-tuned from the same trained base with the same recipe (its
train.json says so, and compare refuses rows that differ), so the frame-by-frame row of a backbone
is the control of its temporal rows. Deltas are measured on the same frames of the same sequences,
clean and degraded frames apart, with 95 % bootstrap intervals over sequences. For temporal models
the same frames are scored again with the state zeroed before every frame: what the state buys.

`--data folder:PATH` / `camvid:PATH` (make compare DATA=...): every row is trained and calibrated on that
labelled video (bases in RUNS/BASE/base-KIND-NAME-CKSUM, as the Makefile names them) and scored on its whole val
split with its classes. What only the synthetic video has is not faked: TC follows DIS optical flow (no exact
flow), and with no degraded frames marked there is no clean/degraded split (figures are over all frames).

Engines are built whenever a TensorRT builder imports, also where the runtime backend cannot run
them: TensorRT-RTX compiles on a CPU-only machine, so the engine and activation sizes in the
table are those of real engines even where latency comes from ONNX Runtime.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.artefacts import SYNTHETIC, build_artefacts, check_row, check_trained_on, engine_builder
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import atomic_path, atomic_write, write_json, write_text
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.metrics.paired import miou_interval
from tempseg.models.registry import base_model, model_config, split_name
from tempseg.runtime.loop import LoopOptions, run_loop
from tempseg.runtime.policy import StatePolicy
from tempseg.runtime.report import build_report
from tempseg.runtime.session import make_runner, select
from tempseg.train.config import preset_config, recipe

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.text import Annotation

MB = 2**20


def precisions_of(model: str, precisions: list[str]) -> list[str]:
    """The precisions a model has: a keyframe pair (Accel) has no INT8 calibration yet, so no INT8 row."""
    if model_config(model).accel is None or "int8" not in precisions:
        return precisions
    print(f"compare: {model} has no INT8 row (calibration of keyframe pairs is not supported yet)")
    return [p for p in precisions if p != "int8"]


def engine_figures(run_dir: Path, precision: str) -> dict | None:
    """File size and activation memory of runs/MODEL/<precision>.engine from its build record."""
    from tempseg.engine.sidecar import read_sidecar, sidecar_path

    engine_path = run_dir / f"{precision}.engine"
    if not sidecar_path(engine_path).is_file():
        return None
    record = read_sidecar(engine_path)  # UserError naming the record if it is corrupt or outdated
    activation = _activation(record)
    engine_bytes = record["engine"]["bytes"]
    keyframe = record["contract"].get("schedule", {}).get("keyframe_graph")
    if keyframe:  # a keyframe pair (Accel): both engines are loaded, each context with its own activations
        keyframe_record = read_sidecar(run_dir / keyframe)
        engine_bytes += keyframe_record["engine"]["bytes"]
        keyframe_activation = _activation(keyframe_record)
        activation = None if activation is None or keyframe_activation is None else activation + keyframe_activation
    return {
        "engine_file_bytes": engine_bytes,
        "activation_bytes": activation,
        "activation_source": record["device_memory"].get("source") or "build log",
        "tensorrt": f"{record['tensorrt']['flavour']} {record['tensorrt']['version']}",
        "compute_capabilities": record.get("compute_capabilities") or [],
    }


def _activation(record: dict) -> int | None:
    memory = record["device_memory"]
    return memory["bytes"] if memory["bytes"] is not None else memory["build_log"].get("activation_bytes")


# ---- recipes ----------------------------------------------------------------------------------


def trained_recipe(run_dir: Path) -> dict:
    """The recipe a run directory's checkpoint was trained with (from its train.json)."""
    path = run_dir / "train.json"
    try:
        return json.loads(path.read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        raise UserError("no readable training recipe (train.json without 'recipe'): retrain this run", path) from None


def check_recipes(models: list[str], runs: Path, preset: str, data: str = SYNTHETIC) -> dict:
    """The common recipe of every row; UserError naming the first run trained otherwise.

    Each fine-tune must match the preset's fine-tune stage on `data`, its base the preset's base stage, all
    with one autocast, and a temporal model must start from the same base checkpoint as its control.
    """
    base_recipe = recipe(preset_config(preset, "base", data=data))
    recipes = {m: trained_recipe(runs / m) for m in models}
    for model, got in recipes.items():
        finetune = recipe(preset_config(preset, "finetune", model=model, data=data))
        expected = {"finetune": finetune, "base": base_recipe}
        for stage, have in (("finetune", recipe(got)), ("base", recipe((got.get("init") or {}).get("recipe") or {}))):
            differ = [k for k, v in expected[stage].items() if k != "amp" and have.get(k) != v]
            if differ:
                raise UserError(
                    f"{stage} stage was trained with another recipe than preset {preset!r} "
                    f"({', '.join(differ)}); compare does not mix recipes: remove the run or choose another --runs",
                    runs / model / "train.json",
                )
    amps = {m: (r["amp"], r["init"]["recipe"].get("amp")) for m, r in recipes.items()}
    if len(set(amps.values())) > 1:
        raise UserError(f"rows were trained with different autocast settings: {amps}")
    for model, got in recipes.items():
        control = recipes.get(base_model(model))
        if control is not None and control["init"]["sha256"] != got["init"]["sha256"]:
            raise UserError(
                f"{model} and its control {base_model(model)} start from different bases; retrain both",
                runs / model / "train.json",
            )
    return recipes[models[0]]


def recipe_text(rec: dict, preset: str) -> str:
    """One paragraph: how every row was trained."""
    base = rec["init"]["recipe"]

    def stage(r: dict) -> str:
        crop = "x".join(map(str, r["crop"])) if r["crop"] else f"{r['height']}x{r['width']}"
        return (
            f"{r['steps']} steps x {r['batch_size']} clips of {r['clip_length']} frame(s) at {crop}, "
            f"Adam {r['lr']:g} {r['schedule']}, {r['amp']}, class weights {r['class_weights']}, seed {r['seed']}"
        )

    return (
        f"Recipe (preset `{preset}`, the same for every row): base from scratch: {stage(base)}; "
        f"then every row fine-tuned from its backbone's base: {stage(rec)}; a memory of S frames reads clips "
        "of S+1, the loss on the last frame of each clip for every temporal row (one supervised frame per clip, "
        "as the control's). The frame-by-frame row of a backbone is the control of its temporal rows (same base, "
        "steps and clips)."
    )


# ---- measurement ------------------------------------------------------------------------------


def measure(
    model: str,
    precision: str,
    backend: str,
    frames: list[Frame],
    source_tag: str,
    *,
    runs: Path,
    force: bool,
    zero_state: bool = False,
    keyframe_every: int | None = None,
    source_fps: float = 17.0,
) -> tuple[dict, StreamScores]:
    """The run report and scores of one model x precision on `frames` (reused when already measured).

    `zero_state` zeroes the state before every frame (the runtime's --reset-every 1); `keyframe_every` runs a
    keyframe model (Accel) at that interval instead of its default (the runtime's --keyframe-every).
    """
    run_dir = runs / model
    selection = select(run_dir, precision, backend, keyframe_every=keyframe_every)
    suffix = ("-zeroed" if zero_state else "") + (f"-k{keyframe_every}" if keyframe_every else "")
    path = run_dir / f"run-{precision}-{selection.backend}{suffix}.json"
    scores_path = path.with_suffix(".scores.npz")
    if path.is_file() and scores_path.is_file() and not force:
        report = json.loads(path.read_text())
        if report.get("source") == source_tag and report.get("frames") == len(frames):
            with np.load(scores_path) as arrays:
                return report, StreamScores.from_arrays(dict(arrays))
    runner = make_runner(selection)
    policy = StatePolicy(reset_every=1 if zero_state else None)
    options = LoopOptions(warmup=min(10, len(frames) // 4), progress=False, policy=policy, consistency=not zero_state)
    with runner:
        result = run_loop(runner, frames, options, source_fps=source_fps, total=len(frames))
        memory, device = runner.memory(), runner.device_name
    report = build_report(selection.contract, selection.backend, device, result, memory, source=source_tag)
    report["artefact_bytes"] = selection.artefact.stat().st_size
    if result.accuracy is None:  # LoopOptions scores accuracy by default, and the options above keep it on
        raise RuntimeError(f"the run of {model} {precision} kept no accuracy to compare")
    scores = result.accuracy.scores
    with atomic_path(scores_path) as tmp:
        np.savez(tmp, allow_pickle=True, **scores.to_arrays())  # savez's default, named: no array can take it
    write_json(path, report)
    return report, scores


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


# ---- the table ---------------------------------------------------------------------------------


def table_rows(
    reports: list[dict],
    engines: dict[tuple[str, str], dict | None],
    scores: dict[tuple[str, str], StreamScores] | None = None,
) -> list[dict]:
    """One row per report; `engines` maps (model, precision) to engine_figures() (None: no engine);
    `scores` (same keys) gives the paired deltas and intervals where present."""
    scores = scores or {}
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
            "miou_clean": acc.get("miou_clean"),
            "miou_degraded": acc.get("miou_degraded"),
            "flame": acc.get("flame_miou"),
            "tc": acc.get("tc"),
            **_interval(scores.get(key)),
            **_deltas(scores.get(key), scores.get(base_key) if base is not None and base is not r else None),
            "d_latency": None,
            "d_memory": None,
        }
        if base is not None and base is not r:
            row["d_latency"] = round(100 * (r["latency_ms"]["p50"] / base["latency_ms"]["p50"] - 1), 1)
            row["d_memory"] = round(100 * (memory_bytes(m) / memory_bytes(memory[base_key]) - 1), 1)
        rows.append(row)
    return rows


def _interval(scores: StreamScores | None) -> dict:
    low, high = miou_interval(scores, "clean") if scores is not None else (None, None)
    return {"miou_clean_low": low, "miou_clean_high": high}


def _deltas(scores: StreamScores | None, control: StreamScores | None) -> dict:
    out: dict = {}
    subsets = (("clean", "d_miou_clean"), ("degraded", "d_miou_degraded"), ("tc", "d_tc"))
    subsets += (("tc_clean", "d_tc_clean"), ("tc_degraded", "d_tc_degraded"))
    for subset, key in subsets:
        delta = None
        # a subset exists where the run scored frames of it: TC where the run kept it (its clean/degraded split
        # where saved since the split), degraded frames only in the synthetic video
        if scores is not None and control is not None and None not in (scores.miou(subset), control.miou(subset)):
            delta = paired_delta(scores, control, subset)
        out[key] = None if delta is None else delta.delta
        out[f"{key}_ci"] = None if delta is None else [delta.low, delta.high]
    return out


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
    ("miou_clean", "mIoU clean"),
    ("miou_degraded", "mIoU degraded"),
    ("flame", "FLAME"),
    ("tc", "TC"),
    ("d_miou_clean", "ΔmIoU clean (pts, 95 % CI)"),
    ("d_miou_degraded", "ΔmIoU degraded (pts, 95 % CI)"),
    ("d_tc", "ΔTC (pts, 95 % CI)"),
    ("d_tc_clean", "ΔTC clean frames"),
    ("d_tc_degraded", "ΔTC degraded frames"),
    ("d_latency", "Δlatency %"),
    ("d_memory", "Δmemory %"),
]


# Columns that only data with degraded frames marked (the synthetic video) fills; elsewhere every frame is
# scored as clean, so the clean columns hold the all-frames figures and are titled so.
SPLIT_ONLY = ("miou_degraded", "d_miou_degraded", "d_tc_clean", "d_tc_degraded")
UNSPLIT_TITLES = {"miou_clean": "mIoU", "d_miou_clean": "ΔmIoU (pts, 95 % CI)"}
DELTA_NOTE = (
    "Δ columns: against the frame-by-frame model of the same depth and width at the same precision, its "
    "control (the format of LMANet's Tables IV/V); ΔmIoU and ΔTC on the same frames, with the 95 % "
    "bootstrap interval over sequences in brackets. TC: ETC's warp-mIoU of consecutive predictions, "
)
SPLIT_NOTE = "with the synthetic generator's exact flow; its clean/degraded split by the frame scored."
UNSPLIT_NOTE = (
    "with DIS optical flow (recorded video has no exact flow). No clean/degraded split: this data marks no "
    "degraded frames, so mIoU, ΔmIoU and TC are over all frames (mIoU over the labelled ones)."
)


def columns(split: bool) -> list[tuple[str, str]]:
    """The table's columns: all of them with a clean/degraded split, else the all-frames ones."""
    if split:
        return COLUMNS
    return [(key, UNSPLIT_TITLES.get(key, title)) for key, title in COLUMNS if key not in SPLIT_ONLY]


def markdown(rows: list[dict], header: str, *, split: bool = True) -> str:
    shown = columns(split)
    lines = [header, "", "| " + " | ".join(title for _, title in shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_row_cell(row, key) for key, _ in shown) + " |")
    lines += ["", DELTA_NOTE + (SPLIT_NOTE if split else UNSPLIT_NOTE)]
    return "\n".join(lines) + "\n"


def _row_cell(row: dict, key: str) -> str:
    if (key.startswith("d_miou") or key.startswith("d_tc")) and row.get(key) is not None:
        low, high = row[f"{key}_ci"]
        return f"{row[key]:+.1f} [{low:+.1f}, {high:+.1f}]"
    return _cell(row.get(key), signed=key.startswith("d_"))


def _cell(value: object, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if signed:
        return f"{value:+.1f}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def state_gain_table(gains: dict[str, dict]) -> str:
    """What the state buys: the same frames with the state carried and zeroed, per temporal model (one column
    per subset: clean and degraded frames, or all frames where the data has no split)."""
    if not gains:
        return ""
    subsets: list[str] = list(next(iter(gains.values())))
    lines = [
        "What the state buys (FP32 graphs): the same frames scored with the state carried and with the state "
        "zeroed before every frame; points, 95 % interval.",
        "",
        "| model | " + " | ".join(GAIN_TITLES.get(s, s) for s in subsets) + " |",
        "|---|" + "---|" * len(subsets),
    ]
    for model, gain in gains.items():
        lines.append(f"| {model} | " + " | ".join(gain[s].text() for s in subsets) + " |")
    return "\n".join(lines) + "\n"


GAIN_TITLES: dict[str, str] = {"all": "all frames"}


def per_class_table(reports: list[dict], *, split: bool = True) -> str:
    """Per-class IoU on clean frames of the FP32 rows (all frames where the data has no clean/degraded split),
    under the class names the rows' graphs carry (the data's)."""
    rows = [r for r in reports if r["precision"] == "fp32" and (r.get("accuracy") or {}).get("per_class_iou_clean")]
    if not rows:
        return ""
    names = list(rows[0]["accuracy"]["per_class_iou_clean"])
    title = "Per-class IoU, clean frames, FP32:" if split else "Per-class IoU, all frames, FP32:"
    lines = [title, "", "| model | " + " | ".join(names) + " |"]
    lines.append("|" + "---|" * (len(names) + 1))
    for r in rows:
        ious = r["accuracy"]["per_class_iou_clean"]
        lines.append(f"| {r['model']} | " + " | ".join(_cell(ious[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


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


# ---- the plot -----------------------------------------------------------------------------------

PLOT_TITLE = "Paired Δ mIoU vs the frame-by-frame control, 95 % intervals"
# Okabe-Ito colours stay apart under every common colour-vision deficiency (its yellow is left out: it does
# not read on white). One colour per row ties its two points and its name together where rows crowd.
ROW_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
CONTROL_STYLE = ("s", "black")
# Clean and degraded frames differ by marker shape and fill, so they read without colour.
SUBSET_MARKERS = {"clean": ("o", False), "degraded": ("^", True)}
# The two subsets' points of a row sit at one cost: nudged apart (points) so overlapping intervals stay apart.
SUBSET_DODGE = {"clean": -3.0, "degraded": 3.0}
COSTS = (
    ("p50_ms", "d_latency", "latency p50, ms"),
    ("memory_mb", "d_memory", "memory while running, MiB (weights + activations + state + I/O)"),
)


def is_control(row: dict) -> bool:
    """The frame-by-frame row of a backbone: the control of its temporal rows, so its Δ is 0 by definition."""
    return base_model(row["model"]) == row["model"]


def same_graph(row: dict) -> bool:
    """A training variant (+tc, +kd) of its control: the same graph, so any difference in cost is the
    measurement's, not the model's."""
    return not is_control(row) and split_name(row["model"])[0] == base_model(row["model"])


def split_rows(rows: list[dict]) -> bool:
    """Whether the rows score clean and degraded frames apart (only the synthetic video marks degraded frames)."""
    return any(r.get("miou_degraded") is not None for r in rows)


def plotted_precisions(rows: list[dict], subsets: Sequence[str]) -> list[str]:
    """FP32 alone where its rows have a paired Δ, else every precision the rows have.

    Every precision's Δ is paired against the control at that precision, and they repeat FP32's to a fraction
    of the interval: drawn together they triple the points without saying more. What the lower precisions
    change is their cost, which the table gives.
    """
    if any(r["precision"] == "fp32" and delta_points(r, subsets) for r in rows):
        return ["fp32"]
    return list(dict.fromkeys(r["precision"] for r in rows))


def delta_points(row: dict, subsets: Sequence[str]) -> list[tuple[str, float, tuple[float, float] | None]]:
    """(subset, Δ in points, 95 % interval) of every subset the row has a paired Δ for."""
    points = []
    for subset in subsets:
        delta, interval = row.get(f"d_miou_{subset}"), row.get(f"d_miou_{subset}_ci")
        if delta is not None:
            points.append((subset, float(delta), None if interval is None else (float(interval[0]), interval[1])))
    return points


def plot_notes(rows: list[dict], shown: list[dict], subsets: Sequence[str]) -> list[str]:
    """One line each: how to read the names, what the figure leaves out, what a reader would misread in it."""
    drawn = ", ".join(p.upper() for p in sorted({r["precision"] for r in shown}))
    notes = [f"{drawn} rows; in brackets after a name: its latency or memory against its control's."]
    others = sorted({r["precision"] for r in rows} - {r["precision"] for r in shown})
    if others:
        listed = ", ".join(p.upper() for p in others)
        notes.append(f"{listed} rows not drawn: {_precision_spread(rows, subsets)}.")
    missing = [f"{r['model']} {r['precision']}" for r in shown if not is_control(r) and not delta_points(r, subsets)]
    if missing:
        notes.append(f"Not drawn, no paired Δ in the table: {', '.join(missing)}.")
    for r in shown:
        if same_graph(r) and r.get("d_latency") is not None:
            notes.append(
                f"* {r['model']} runs its control's graph (trained otherwise): its latency differs from the "
                f"control's ({r['d_latency']:+.0f} %) by measurement alone."
            )
    lacking = [f"{r['model']} {r['precision']}" for r in shown if r.get("activation_mb") is None]
    if lacking:
        notes.append(f"Memory without activations (no engine built): {', '.join(lacking)}.")
    return notes


def _precision_spread(rows: list[dict], subsets: Sequence[str]) -> str:
    fp32 = {(r["model"], s): d for r in rows if r["precision"] == "fp32" for s, d, _ in delta_points(r, subsets)}
    spread = [
        abs(d - fp32[(r["model"], s)])
        for r in rows
        if r["precision"] != "fp32"
        for s, d, _ in delta_points(r, subsets)
        if (r["model"], s) in fp32
    ]
    if not spread:
        return "see the table"
    return (
        f"each paired against the control at its precision, their Δ within {max(spread):.2f} pts of FP32's "
        "(the table gives them and their cost)"
    )


def plot_figure(rows: list[dict], title: str = PLOT_TITLE, *, measured_on: str | None = None) -> Figure:
    """Each row's paired Δ mIoU against its control, over latency (left) and memory (right).

    Clean and degraded frames as two markers with their 95 % bootstrap interval over sequences; the control
    at 0 without interval; the FP32 rows where there are several precisions (plotted_precisions). The notes
    under the legend say what is not drawn. `measured_on` names where latency was measured.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    subsets = ("clean", "degraded") if split_rows(rows) else ("clean",)
    precisions = plotted_precisions(rows, subsets)
    shown = [r for r in rows if r["precision"] in precisions]
    temporal = [r for r in shown if not is_control(r)]
    colours = {id(r): ROW_COLOURS[i % len(ROW_COLOURS)] for i, r in enumerate(temporal)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for ax, (cost, relative, label) in zip(axes, COSTS, strict=True):
        for r in shown:
            if r.get(cost) is not None:
                name = f"{r['model']} {r['precision']}" if len(precisions) > 1 else r["model"]
                _plot_row(ax, r, (cost, relative), subsets, name=name, colour=colours.get(id(r), CONTROL_STYLE[1]))
        ax.axhline(0, ls="--", lw=1, color="grey", zorder=1)
        ax.set_xlabel(label if cost != "p50_ms" else f"{label} ({measured_on or rows[0]['backend']})")
        ax.grid(alpha=0.3)
        _set_xlim(ax, [r[cost] for r in shown if r.get(cost) is not None])
    axes[0].set_ylabel("Δ mIoU vs control, points")
    _set_ylim(axes[0], shown, subsets)
    notes = plot_notes(rows, shown, subsets)
    line = 0.035  # of the figure's height, one line of notes
    legend_at = (0.5, 0.02 + line * len(notes))
    fig.legend(
        handles=_legend(subsets), loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=legend_at
    )
    for i, note in enumerate(notes):
        fig.text(0.5, 0.02 + line * (len(notes) - 1 - i), note, ha="center", va="bottom", fontsize=7.5)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08 + line * len(notes), 1, 0.97))
    for ax in axes:  # once the layout is final: the names are placed in pixels
        _place_labels(ax, [t for t in ax.texts if isinstance(t, Annotation)])
    return fig


def _plot_row(ax: Axes, row: dict, cost: tuple[str, str], subsets: Sequence[str], *, name: str, colour: str) -> None:
    """The row's points on `ax` at its cost (`cost`: the row's keys of it, absolute and against the control),
    and its name above them (below the control's)."""
    from matplotlib.transforms import ScaledTranslation

    x, relative = row[cost[0]], row.get(cost[1])
    if is_control(row):
        ax.plot([x], [0.0], marker=CONTROL_STYLE[0], color=colour, ls="none", ms=7, zorder=2, label=f"{name} control")
        _label(ax, f"{name} (control)", (x, 0.0), colour, below=True)
        return
    points = delta_points(row, subsets)
    for subset, delta, interval in points:
        marker, filled = SUBSET_MARKERS[subset]
        # the point is the Δ of summed counts, the interval a bootstrap percentile: clamp rounding past the point
        yerr = None if interval is None else [[max(0.0, delta - interval[0])], [max(0.0, interval[1] - delta)]]
        shift = ScaledTranslation(SUBSET_DODGE[subset] / 72, 0, ax.figure.dpi_scale_trans)
        ax.errorbar(
            [x],
            [delta],
            yerr=yerr,
            marker=marker,
            color=colour,
            markerfacecolor=colour if filled else "white",
            markeredgewidth=1.5,
            ms=7,
            capsize=3,
            ls="none",
            zorder=3,
            transform=ax.transData + shift,
            label=f"{name} {subset}",
        )
    if points:
        text = name + (" *" if same_graph(row) else "") + ("" if relative is None else f" ({relative:+.0f} %)")
        _label(ax, text, (x, max(d if ci is None else max(d, ci[1]) for _, d, ci in points)), colour, below=False)


def _label(ax: Axes, text: str, at: tuple[float, float], colour: str, *, below: bool) -> None:
    ax.annotate(
        text,
        at,
        xytext=(0, -9 if below else 4),
        textcoords="offset points",
        ha="center",
        va="top" if below else "bottom",
        fontsize=8,
        color=colour,
        zorder=5,
    )


def _place_labels(ax: Axes, labels: list[Annotation]) -> None:
    """Keep the row names inside the axes and off each other: a name that would leave the axes is aligned to
    its point's side, and one that overlaps a name already placed moves away from its point (up, down for
    controls) until it is free."""
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's canvas has one
    frame = ax.get_window_extent(renderer)
    placed = []
    for label in sorted(labels, key=lambda t: ax.transData.transform(t.xy)[1]):
        box = label.get_window_extent(renderer)
        if box.x0 < frame.x0 or box.x1 > frame.x1:
            label.set_horizontalalignment("left" if box.x0 < frame.x0 else "right")
        step = 8 if label.xyann[1] > 0 else -8
        for _ in range(12):
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            label.xyann = (label.xyann[0], label.xyann[1] + step)
        placed.append(label.get_window_extent(renderer))


def _set_xlim(ax: Axes, costs: list[float]) -> None:
    """Every row's cost with a margin for the names; set here, as autoscaling skips the nudged points."""
    if costs:
        low, high = min(costs), max(costs)
        pad = 0.15 * (high - low) or 0.1 * abs(high) or 1.0
        ax.set_xlim(low - pad, high + pad)


def _set_ylim(ax: Axes, rows: list[dict], subsets: Sequence[str]) -> None:
    """From below 0 to above the highest interval, with room for the names above the points."""
    ends = [0.0]
    for r in rows:
        for _, delta, interval in delta_points(r, subsets):
            ends += [delta] if interval is None else [delta, *interval]
    low, high = min(ends), max(ends)
    span = max(high - low, 0.5)
    ax.set_ylim(low - 0.15 * span, high + 0.2 * span)


def _legend(subsets: Sequence[str]) -> list[Line2D]:
    from matplotlib.lines import Line2D

    names = {"clean": "clean frames", "degraded": "degraded frames"} if len(subsets) > 1 else {"clean": "all frames"}
    handles = []
    for subset in subsets:
        marker, filled = SUBSET_MARKERS[subset]
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker=marker,
                color="dimgrey",
                markerfacecolor="dimgrey" if filled else "white",
                markeredgewidth=1.5,
                label=f"Δ {names[subset]}, 95 % interval",
            )
        )
    handles.append(Line2D([], [], ls="none", marker=CONTROL_STYLE[0], color=CONTROL_STYLE[1], label="control (Δ = 0)"))
    handles.append(Line2D([], [], ls="--", color="grey", label="no change"))
    return handles


def plot(rows: list[dict], path: Path, title: str = PLOT_TITLE, *, measured_on: str | None = None) -> None:
    """plot_figure() written to `path` as PNG (whole or absent)."""
    fig = plot_figure(rows, title, measured_on=measured_on)  # selects Agg before pyplot is imported here
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def replot(json_path: Path) -> Path:
    """Draw the plot of a compare table again from its JSON, beside it (NAME.png), without measuring."""
    try:
        table = json.loads(json_path.read_text())
        rows, reports = table["rows"], table.get("reports") or []
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError("not a readable compare table (JSON with 'rows')", json_path) from None
    if not rows:
        raise UserError("the compare table has no rows to plot", json_path)
    measured_on = f"{reports[0]['backend']} on {reports[0]['device']}" if reports else None
    out = json_path.with_suffix(".png")
    plot(rows, out, measured_on=measured_on)
    return out


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
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--models", nargs="+")
    what.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="draw the plot of a compare table again from its JSON, beside it (NAME.png); nothing is measured",
    )
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "int8"], choices=("fp32", "fp16", "int8"))
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt", "tensorrt_rtx", "torch"))
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument(
        "--data",
        default=SYNTHETIC,
        help="what every row is trained, calibrated and scored on: synthetic (default), folder:PATH or camvid:PATH "
        "(labelled video: scored on its whole val split)",
    )
    p.add_argument("--sequences", type=int, default=12, help="synthetic val sequences every run sees (default 12)")
    p.add_argument("--frames", type=int, default=20, help="synthetic: frames per sequence (default 20)")
    p.add_argument("--preset", default="compare", help="training preset of every row (default compare)")
    p.add_argument("--force", action="store_true", help="re-run measurements that already have a report")
    p.add_argument("--calib-frames", type=int, default=32, help="INT8 calibration frames (default 32)")
    p.add_argument("--no-engines", action="store_true", help="skip engines unless the backend runs them")
    p.add_argument("--runs", type=Path, help="run directories live here (default runs/compare-PRESET)")
    p.add_argument("--out-dir", type=Path, help="where the table goes (default: the runs directory)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        print(f"compare: plot drawn again from {args.replot} -> {replot(args.replot)}")
        return 0
    started = time.perf_counter()
    runs = args.runs or Path("runs") / f"compare-{args.preset}"
    out = args.out_dir or runs
    for model in args.models:  # every row checked before anything is trained
        check_row(model, args.height, args.width)
        check_trained_on(runs / model, args.data)
    engines = args.backend in ("tensorrt", "tensorrt_rtx") or (not args.no_engines and engine_builder() is not None)
    for model in args.models:
        build_artefacts(
            model,
            precisions_of(model, args.precisions),
            engines=engines,
            preset=args.preset,
            height=args.height,
            width=args.width,
            runs=runs,
            frames=args.calib_frames,
            data=args.data,
        )
    rec = check_recipes(args.models, runs, args.preset, args.data)
    split = args.data == SYNTHETIC  # only the synthetic video marks degraded frames
    frames, source_tag, fps = scoring_frames(args)
    reports, scores = [], {}
    for model in args.models:
        for precision in precisions_of(model, args.precisions):
            report, scores[(model, precision)] = measure(
                model, precision, args.backend, frames, source_tag, runs=runs, force=args.force, source_fps=fps
            )
            reports.append(report)
            acc = report["accuracy"]
            figures = f"clean {acc['miou_clean']}, degraded {acc['miou_degraded']}" if split else f"{acc['miou']}"
            print(
                f"measured {model} {precision} on {report['backend']}: p50 {report['latency_ms']['p50']:.1f} ms, "
                f"mIoU {figures}"
            )
    gains = state_gains(args, frames, (source_tag, fps), runs, scores, ("clean", "degraded") if split else ("all",))
    figures = {(r["model"], r["precision"]): engine_figures(runs / r["model"], r["precision"]) for r in reports}
    rows = table_rows(reports, figures, scores)
    header = table_header(reports, figures, f"{args.height}x{args.width}, {source_tag}")
    recipe_line = recipe_text(rec, args.preset)
    write_json(
        out / "compare.json",
        {
            "header": header,
            "recipe": rec,
            "recipe_text": recipe_line,
            "rows": rows,
            "state_gain": {m: {s: d.to_dict() for s, d in g.items()} for m, g in gains.items()},
            "reports": reports,
            "engines": _listed(figures),
        },
    )
    write_csv(rows, out / "compare.csv")
    tables = [markdown(rows, header, split=split), state_gain_table(gains), per_class_table(reports, split=split)]
    text = "\n".join([recipe_line, "", *tables])
    write_text(out / "compare.md", text)
    plot(rows, out / "compare.png", measured_on=f"{reports[0]['backend']} on {reports[0]['device']}")
    print(text)
    print(f"stage compare: {time.perf_counter() - started:.1f} s -> {out}/compare.{{json,csv,md,png}}")
    return 0


def scoring_frames(args: argparse.Namespace) -> tuple[list[Frame], str, float]:
    """The frames every row is scored on, how the reports name them, and their rate: --sequences x --frames of
    synthetic val (with exact flow), or the whole val split of labelled data (TC then with DIS flow)."""
    if args.data != SYNTHETIC:
        with open_source(args.data, height=args.height, width=args.width, split="val") as source:
            frames, fps = list(source), source.fps
        labelled = sum(frame.label is not None for frame in frames)
        sequences = len({frame.sequence for frame in frames})
        tag = f"{args.data} val, {sequences} sequences, {len(frames)} frames ({labelled} labelled), TC with DIS flow"
        return frames, tag, fps
    source_tag = f"synthetic val, {args.sequences} sequences x {args.frames} frames, TC with the exact flow"
    source = open_source(
        SYNTHETIC,
        height=args.height,
        width=args.width,
        frames=args.sequences * args.frames,
        sequence_length=args.frames,
        with_flow=True,  # TC with the generator's exact flow (DIS follows degraded pixels, not the scene)
    )
    with source:
        return list(source), source_tag, 17.0


def state_gains(
    args: argparse.Namespace,
    frames: list[Frame],
    source: tuple[str, float],
    runs: Path,
    scores: dict[tuple[str, str], StreamScores],
    subsets: tuple[str, ...] = ("clean", "degraded"),
) -> dict[str, dict]:
    """Carried minus zeroed state on the same frames (`source`: their tag and rate), per subset, for every
    temporal model with an FP32 row."""
    gains = {}
    for model in args.models:
        if not model_config(model).stateful or "fp32" not in args.precisions:  # no state to zero
            continue
        tag, fps = source
        _, zeroed = measure(
            model, "fp32", args.backend, frames, tag, runs=runs, force=args.force, zero_state=True, source_fps=fps
        )
        carried = scores[(model, "fp32")]
        gains[model] = {s: paired_delta(carried, zeroed, s) for s in subsets}
    return gains


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
