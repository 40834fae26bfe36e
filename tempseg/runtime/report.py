"""The run report: one JSON schema for every backend and precision, so that any two runs compare, and its table."""

from __future__ import annotations

import datetime
import functools
import platform
from dataclasses import asdict

import numpy as np

from tempseg.common.contract import Contract
from tempseg.common.text import number, table
from tempseg.runtime.backends.base import MemoryInfo
from tempseg.runtime.batch import BatchResult, StreamResult
from tempseg.runtime.loop import PHASES, LoopResult
from tempseg.runtime.memory import is_jetson, peak_rss_bytes
from tempseg.runtime.schedule import FRAME, KEYFRAME, UPDATE

SCHEMA = "tempseg-run/1"
STATS = ("mean", "p50", "p90", "p99", "max")  # the latency statistics of every row, in the table's order
_figure = functools.partial(number, digits=4, large_digits=1)  # every figure here: 0.1234, 12.3, None: "-"


def latency_stats(values: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p90, p99, max in ms; None for an empty run."""
    if values.size == 0:
        return dict.fromkeys(("mean", "p50", "p90", "p99", "max"))
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        k: round(float(v), 4)
        for k, v in (("mean", values.mean()), ("p50", p50), ("p90", p90), ("p99", p99), ("max", values.max()))
    }


def latency_by_kind(rows: np.ndarray, kinds: list[str]) -> dict[str, dict] | None:
    """Per frame kind of a graph pair (keyframe, update): frame count, total latency and its flow and compute
    parts; None for a single graph. Keyframes are the burst an edge user sizes for."""
    if not rows.size or set(kinds) <= {FRAME}:
        return None
    out = {}
    for kind in (KEYFRAME, UPDATE):
        mask = np.array([k == kind for k in kinds])
        out[kind] = {
            "frames": int(mask.sum()),
            "total": latency_stats(rows[mask, PHASES.index("total")]),
            "flow": latency_stats(rows[mask, PHASES.index("flow")]),
            "compute": latency_stats(rows[mask, PHASES.index("compute")]),
        }
    return out


def worst_frame(rows: np.ndarray, kinds: list[str], first: int) -> dict | None:
    """The slowest of the timed frames `rows` (frame `first` onwards): its index, kind and total ms."""
    if not rows.size:
        return None
    index = int(np.argmax(rows[:, PHASES.index("total")]))
    ms = float(rows[index, PHASES.index("total")])
    return {"frame": first + index, "kind": kinds[index], "ms": round(ms, 4)}


def build_report(
    contract: Contract, backend: str, device: str, result: LoopResult, memory: MemoryInfo, *, source: str
) -> dict:
    rows = result.timings.rows(result.warmup)
    phases = {name: latency_stats(rows[:, i]) for i, name in enumerate(PHASES)}
    total = phases["total"]
    kinds = result.timings.kinds_of(result.warmup)
    by_kind = latency_by_kind(rows, kinds)
    mem, notes = _memory(memory)
    mean_ms = total["mean"]
    accuracy = (
        result.accuracy.summary(contract.class_names(), mean_ms or 0.0, result.source_fps) if result.accuracy else None
    )
    return {
        **_header(contract, backend, device, source, result.source_fps),
        "frames": result.frames,
        "warmup_frames": min(result.warmup, result.frames),
        "interrupted": result.interrupted,
        "latency_ms": total,
        "phases_ms": phases,
        "latency_by_kind_ms": by_kind,
        "keyframe_every": contract.schedule.get("keyframe_every"),
        "worst_frame": worst_frame(rows, kinds, min(result.warmup, result.frames)),
        "fps": None if not mean_ms else round(1000.0 * contract.batch / mean_ms, 3),
        "wall_seconds": round(result.wall_seconds, 3),
        "memory": mem,
        "memory_notes": notes,
        "resets": result.resets,
        "accuracy": accuracy,
    }


def _header(contract: Contract, backend: str, device: str, source: str, source_fps: float) -> dict:
    """The fields every report starts with: what ran, where, when, on what."""
    return {
        "schema": SCHEMA,
        "model": contract.model,
        "precision": contract.precision,
        "backend": backend,
        "device": device,
        "host": f"{platform.node()} {platform.machine()} {platform.system()}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "source_fps": source_fps,
        "input_hw": [contract.height, contract.width],
        "batch": contract.batch,
    }


def _memory(memory: MemoryInfo) -> tuple[dict, list[str]]:
    """The report's memory section and its notes."""
    mem = asdict(memory)
    notes = mem.pop("notes")
    mem["host_rss_peak_bytes"] = peak_rss_bytes()
    if is_jetson():
        notes.append("Jetson: GPU and CPU share the same DRAM; device_used_bytes is part of system memory")
    return mem, notes


def build_batch_report(
    contract: Contract, backend: str, device: str, result: BatchResult, memory: MemoryInfo, *, sources: list[str]
) -> dict:
    """The report of a batched run (runtime/batch.py): the run report's fields for the batch as a whole (latency
    and phases of each engine call, memory of the batch, `fps` the frames of every stream a second), and
    `streams`: one entry per stream with its frames, latency (its frame read to its labels), resets and accuracy.
    Each stream's first `warmup` frames, and the first `warmup` calls, are left out of the latency statistics."""
    rows = result.ticks.rows(result.warmup)
    phases = {name: latency_stats(rows[:, i]) for i, name in enumerate(PHASES)}
    timed_frames = sum(result.live[result.warmup :])
    busy_ms = float(rows[:, PHASES.index("total")].sum())
    mem, notes = _memory(memory)
    resets: dict[str, int] = {}
    for stream in result.streams:
        for reason, count in stream.resets.items():
            resets[reason] = resets.get(reason, 0) + count
    return {
        **_header(contract, backend, device, " ".join(sources), result.source_fps),
        "frames": sum(stream.frames for stream in result.streams),
        "calls": result.ticks.count,
        "warmup_frames": min(result.warmup, result.ticks.count),
        "interrupted": result.interrupted,
        "latency_ms": phases["total"],
        "phases_ms": phases,
        "latency_by_kind_ms": latency_by_kind(rows, result.ticks.kinds_of(result.warmup)),
        "keyframe_every": contract.schedule.get("keyframe_every"),
        "worst_frame": worst_frame(rows, result.ticks.kinds_of(result.warmup), min(result.warmup, result.ticks.count)),
        "fps": None if not busy_ms else round(1000.0 * timed_frames / busy_ms, 3),
        "wall_seconds": round(result.wall_seconds, 3),
        "memory": mem,
        "memory_notes": notes,
        "resets": resets,
        "accuracy": None,
        "streams": [_stream_entry(contract, stream, result) for stream in result.streams],
    }


def _stream_entry(contract: Contract, stream: StreamResult, result: BatchResult) -> dict:
    latency = latency_stats(np.asarray(stream.latency[result.warmup :], np.float64))
    accuracy = stream.accuracy
    summary = accuracy.summary(contract.class_names(), latency["mean"] or 0.0, result.source_fps) if accuracy else None
    return {
        "slot": stream.slot,
        "source": stream.name,
        "frames": stream.frames,
        "ended": stream.ended,
        "latency_ms": latency,
        "resets": stream.resets,
        "accuracy": summary,
    }


def format_batch_report(report: dict) -> str:
    """The run report's table for the batch, then one row per stream."""
    lines = format_report(report).splitlines()
    lines[0] += f"; {len(report['streams'])} streams in a batch of {report['batch']}, {report['calls']} calls"
    cells = [
        [
            stream["slot"],
            stream["source"],
            f"{stream['frames']} (ended)" if stream["frames"] < report["calls"] else stream["frames"],  # before the run
            _figure(stream["latency_ms"]["p50"]),
            _figure(stream["latency_ms"]["p99"]),
            _figure((stream["accuracy"] or {}).get("miou")),
            sum(stream["resets"].values()),
        ]
        for stream in report["streams"]
    ]
    header = ["stream", "source", "frames", "p50 ms", "p99 ms", "mIoU", "resets"]
    lines += ["  " + line for line in table(header, cells, align="<<", widths=(7, 24, 14, 9, 9, 9, 7), sep="")]
    return "\n".join(lines)


def format_report(report: dict) -> str:
    h, w = report["input_hw"]
    lines = [
        f"{report['model']} {report['precision']} on {report['backend']} ({report['device']}), {h}x{w}, "
        f"{report['frames']} frames ({report['warmup_frames']} warm-up)"
        + (", interrupted" if report["interrupted"] else ""),
    ]
    # (row name, its statistics, a note after the row): the phases that took time, then each frame kind
    rows = [(phase, stats, "") for phase, stats in report["phases_ms"].items() if phase == "total" or stats["max"]]
    rows += [
        (kind + "s", stats["total"], f"   ({stats['frames']} frames; flow mean {_figure(stats['flow']['mean'])} ms)")
        for kind, stats in (report.get("latency_by_kind_ms") or {}).items()
    ]
    cells = [[name, *(_figure(stats[k]) for k in STATS)] for name, stats, _ in rows]
    latency = table(["latency ms", *STATS], cells, align="<", widths=(13, *[9] * len(STATS)), sep="")
    notes = ["", *(note for _, _, note in rows)]
    lines += ["  " + line + note for line, note in zip(latency, notes, strict=True)]
    worst = report.get("worst_frame")
    if worst:
        lines.append(f"  worst frame   {_figure(worst['ms'])} ms (frame {worst['frame']}, {worst['kind']})")
    lines.append(f"  fps           {_figure(report['fps'])}")
    m = report["memory"]
    lines.append(
        "  memory        "
        + "  ".join(
            f"{label} {_bytes(m[key])}"
            for label, key in (
                ("weights", "weights_bytes"),
                ("engine", "engine_file_bytes"),
                ("activations", "activation_bytes"),
                ("state", "state_bytes"),
                ("io", "io_bytes"),
                ("host peak", "host_rss_peak_bytes"),
            )
        )
        + (f"  params {m['params'] / 1e6:.2f}M" if m.get("params") else "")
    )
    lines += _device_lines(m)
    acc = report["accuracy"]
    if acc and acc.get("labelled_frames"):
        flame = acc["flame"]
        lines.append(
            f"  accuracy      mIoU {_figure(acc['miou'])}  pixel acc {_figure(acc['pixel_acc'])}  "
            f"FLAME {_figure(acc['flame_miou'])} (k={flame['offset_frames']} at {report['source_fps']:g} fps)  "
            f"TC {_figure(acc['tc'])}{_flow(acc)}"
        )
        lines.append(
            f"  frames        clean mIoU {_figure(acc['miou_clean'])}  degraded mIoU {_figure(acc['miou_degraded'])}  "
            f"({acc['frames']} labelled frames in {acc['sequences']} sequences)"
        )
    elif acc:
        lines.append(f"  accuracy      no labels in the source; TC {_figure(acc['tc'])}{_flow(acc)}")
    lines.append("  resets        " + ", ".join(f"{k} {v}" for k, v in report["resets"].items()))
    return "\n".join(lines)


def _device_lines(memory: dict) -> list[str]:
    """Two device figures, where the backend has them: what the runner holds (its buffers plus what TensorRT says
    it needs) and cudaMemGetInfo's view of the whole GPU (CUDA context, libraries and other processes too)."""
    runner, used = memory.get("device_runner_bytes"), memory.get("device_used_bytes")
    lines = []
    if runner is not None:
        lines.append(f"  device        {_bytes(runner)} held by the runner (buffers + TensorRT's contexts and weights)")
    if used is not None:
        lines.append(f"  GPU in use    {_bytes(used)} (cudaMemGetInfo: whole GPU, CUDA context and other processes)")
    return lines


def _flow(accuracy: dict) -> str:
    """Which optical flow the TC figure rests on ("exact": the synthetic generator's; "dis": OpenCV DIS)."""
    return f" ({accuracy['tc_flow']} flow)" if accuracy.get("tc_flow") else ""


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
