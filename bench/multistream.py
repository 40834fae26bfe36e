"""Many cameras, one engine: K streams batched through one graph against K single-stream runners, as ratios
measured in one run (`python -m bench.multistream [--streams 1 2 4 8] [--ticks 24] [--rounds 2]`).

Three ways to serve K synthetic streams with ONNX Runtime on this CPU, the same model at one input size:
- batched: one runner of a graph exported at batch K, one call per tick (runtime/batch.py's BatchStream);
- sequential: K runners of the batch-1 graph, called one after the other each tick (a single-camera loop
  per stream, run by one thread);
- threads: K runners of the batch-1 graph, each streaming its camera in its own thread, as fast as it goes
  (ONNX Runtime releases the GIL while it computes), each runner given cores/K threads (at least one).
Where K > 1 the K sessions of the single-stream ways run with ONNX Runtime's spinning off (see _single).
Per way: throughput (frames of all streams a second), per-frame latency p50/p99 (batched: a frame's read to
its labels; sequential: the tick's start to the stream's labels, so the last stream of a tick waits for the
others; threads: each frame's own read to labels), and memory: the growth of the resident set of a fresh
process from before its runners are made to after they have run (weights, ONNX Runtime's arenas, state and
I/O of one runner batched, of K runners otherwise; one process per way and K, so no way inherits another's
arenas). The ways take turns in `rounds` rounds, and each way's timing figures are its medians over the
rounds, so a neighbour's load falls on every way alike.

Frames are rendered before timing (rendering is not serving). Weights are random: latency and memory do not
depend on them (bench/graphs.py). Results: bench/results/multistream-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.graphs import benchmark_graph
from bench.machine import describe
from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json, write_text
from tempseg.common.text import number, table
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.batch import BatchStream
from tempseg.runtime.memory import current_rss_bytes
from tempseg.runtime.stream import stream

RESULTS = Path("bench/results")
WAYS = ("batched", "sequential", "threads")


def render(streams: int, ticks: int, height: int, width: int) -> list[list[Frame]]:
    """`streams` different synthetic videos of `ticks` frames each, in memory."""
    return [list(SyntheticVideo(split_seed("val", k), height, width, length=ticks)) for k in range(streams)]


@dataclass
class Served:
    """K streams served one way: each timed frame's latency (ms), the seconds from the first timed tick to the end,
    and each stream's labels per frame where kept."""

    latency: list[float]
    seconds: float
    labels: list[list[np.ndarray]]


def serve_batched(runner: Runner, videos: list[list[Frame]], *, skip: int = 0, keep_labels: bool = False) -> Served:
    """The streams through one active runner at batch K (runtime/batch.py), one call per tick; a frame's latency is
    its read to its labels. The first `skip` ticks are not timed."""
    latency: list[float] = []
    labels: list[list[np.ndarray]] = [[] for _ in videos]
    started = time.perf_counter()
    for index, tick in enumerate(BatchStream(runner, videos)):
        started = tick.started if index == skip else started
        latency += [step.latency_ms for step in tick.steps] if index >= skip else []
        for step in tick.steps if keep_labels else ():
            labels[step.slot].append(step.labels.copy())
    return Served(latency, time.perf_counter() - started, labels)


def serve_sequential(
    runners: Sequence[Runner], videos: list[list[Frame]], *, skip: int = 0, keep_labels: bool = False
) -> Served:
    """The streams through K active batch-1 runners called in turn each tick; a frame's latency is the tick's start
    to its labels, so a tick's last stream waits for the others. The first `skip` ticks are not timed."""
    streams = [stream(runner, video) for runner, video in zip(runners, videos, strict=True)]
    latency: list[float] = []
    labels: list[list[np.ndarray]] = [[] for _ in videos]
    started = time.perf_counter()
    for index in range(len(videos[0])):
        begun = time.perf_counter()
        started = begun if index == skip else started
        for k, frames in enumerate(streams):
            step = next(frames)
            latency += [(step.inferred - begun) * 1e3] if index >= skip else []
            labels[k] += [step.labels.copy()] if keep_labels else []
    return Served(latency, time.perf_counter() - started, labels)


def batched(graph: Path, videos: list[list[Frame]], threads: int) -> dict[str, Any]:
    with OnnxRuntimeRunner(read_onnx_contract(graph), graph, threads=threads) as runner:
        served = serve_batched(runner, videos)
        memory = current_rss_bytes()
    return _figures(served.latency, served.seconds, memory)


def _single(graph: Path, threads: int, count: int) -> OnnxRuntimeRunner:
    """One of `count` batch-1 runners. Several ONNX Runtime sessions share the cores: spinning is off, or each
    session's idle workers busy-wait after its call and take the cores from the next session's (measured here:
    sequential K=2..8 served half the frames a second with spinning on)."""
    return OnnxRuntimeRunner(read_onnx_contract(graph), graph, threads=threads, spinning=count == 1)


def sequential(graph: Path, videos: list[list[Frame]], threads: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(_single(graph, threads, len(videos))) for _ in videos]
        served = serve_sequential(runners, videos)
        memory = current_rss_bytes()
    return _figures(served.latency, served.seconds, memory)


def in_threads(graph: Path, videos: list[list[Frame]], threads: int) -> dict[str, Any]:
    per_runner = max(1, threads // len(videos))
    latencies: list[list[float]] = [[] for _ in videos]
    with contextlib.ExitStack() as stack:
        runners = [stack.enter_context(_single(graph, per_runner, len(videos))) for _ in videos]

        def serve(k: int) -> None:
            for step in stream(runners[k], videos[k]):
                latencies[k].append((step.inferred - step.started) * 1e3)

        workers = [threading.Thread(target=serve, args=(k,)) for k in range(len(videos))]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - started
        memory = current_rss_bytes()
    return {**_figures([x for values in latencies for x in values], wall, memory), "threads_per_runner": per_runner}


def _figures(latency: list[float], wall: float, rss: int) -> dict[str, Any]:
    """Timing figures, and the resident set while the runners were alive (what probe_memory subtracts from)."""
    p50, p99 = np.percentile(latency, [50, 99])
    return {"fps": len(latency) / wall, "p50_ms": float(p50), "p99_ms": float(p99), "rss_bytes": rss}


def probe_memory(way: str, k: int, args: argparse.Namespace) -> int:
    """The resident-set growth of `way` serving K streams, in a fresh process (bytes)."""
    argv = ["--model", args.model, "--height", str(args.height), "--width", str(args.width)]
    argv += ["--threads", str(args.threads), "--streams", str(k), "--probe", way]
    done = subprocess.run(
        [sys.executable, "-m", "bench.multistream", *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {way} at K={k} failed: {done.stderr.strip()[-500:]}")
    return int(done.stdout.strip().splitlines()[-1])


def _probe(args: argparse.Namespace) -> int:
    """In the probe process: run the way on two frames per stream, print its resident-set growth."""
    k = args.streams[0]
    hw = (args.height, args.width)
    graph = benchmark_graph(args.model, "fp32", *hw, batch=k if args.probe == "batched" else 1)
    videos = render(k, 2, *hw)
    gc.collect()
    before = current_rss_bytes()
    figures = WAY_FUNCTIONS[args.probe](graph, videos, args.threads)
    print(figures["rss_bytes"] - before)
    return 0


WAY_FUNCTIONS = {"batched": batched, "sequential": sequential, "threads": in_threads}


def measure(model: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """The three ways for K streams, `args.rounds` rounds in turn; medians per way, and their ratios."""
    hw = (args.height, args.width)
    single, batch = benchmark_graph(model, "fp32", *hw), benchmark_graph(model, "fp32", *hw, batch=k)
    videos = render(k, args.ticks, *hw)
    ways = {
        "batched": lambda: batched(batch, videos, args.threads),
        "sequential": lambda: sequential(single, videos, args.threads),
        "threads": lambda: in_threads(single, videos, args.threads),
    }
    samples: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way, run in ways.items():
            samples[way].append(run())
    medians = {way: _median(runs) for way, runs in samples.items()}
    for way, figures in medians.items():
        del figures["rss_bytes"]  # this process's, with every way's arenas: the probe measures each way alone
        figures["memory_bytes"] = probe_memory(way, k, args)
    return {"streams": k, **medians, "ratios": ratios(medians)}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ratios(ways: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Batched against each single-stream way: throughput (>1: batching serves more), p99 latency and memory
    (<1: batching is faster / smaller)."""
    b = ways["batched"]
    out = {}
    for way in ("sequential", "threads"):
        other = ways[way]
        out[f"throughput_vs_{way}"] = b["fps"] / other["fps"]
        out[f"p99_vs_{way}"] = b["p99_ms"] / other["p99_ms"]
        out[f"memory_vs_{way}"] = b["memory_bytes"] / other["memory_bytes"]
    return out


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    h, w = results["input_hw"]
    bf16 = "yes" if m["avx512_bf16"] else "no"
    lines = [
        f"# K cameras: one batched graph against K single-stream runners ({results['model']}, {h}x{w}, FP32)",
        "",
        f"`{results['command']}` on {m['cpu']} ({m['cores']} cores, AVX-512 BF16 {bf16}), "
        f"ONNX Runtime {results['onnxruntime']} on the CPU, {results['threads']} threads; "
        f"{results['ticks']} frames per stream, medians of {results['rounds']} rounds; load averages at the end "
        f"{m['load_avg_1_5_15']}. Memory in MiB (2^20 bytes).",
        "",
    ]
    header = ["K", "way", "frames/s", "p50 ms", "p99 ms", "memory MiB"]
    rows = []
    for entry in results["runs"]:
        for way in WAYS:
            f = entry[way]
            rows.append(
                [
                    entry["streams"],
                    way,
                    number(f["fps"], 2),
                    number(f["p50_ms"], 1),
                    number(f["p99_ms"], 1),
                    number(f["memory_bytes"], 1, scale=2**20),
                ]
            )
    lines += [*table(header, rows, align=">"), ""]
    header = ["K", "throughput vs sequential", "vs threads", "p99 vs sequential", "vs threads", "memory vs K runners"]
    rows = [
        [
            e["streams"],
            *(
                number(e["ratios"][key], 2, suffix="x")
                for key in (
                    "throughput_vs_sequential",
                    "throughput_vs_threads",
                    "p99_vs_sequential",
                    "p99_vs_threads",
                    "memory_vs_sequential",
                )
            ),
        ]
        for e in results["runs"]
    ]
    lines += [
        "Batched against the single-stream ways (throughput >1x: batching serves more frames a second; p99 "
        "and memory <1x: batching is faster, smaller):",
        "",
        *table(header, rows, align=">"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.multistream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="fcresnet18_t66")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8], help="values of K (default 1 2 4 8)")
    p.add_argument("--ticks", type=int, default=24, help="frames per stream and way (default 24)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the three ways in turn (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads (default: cores)")
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/multistream-<date>.json)")
    p.add_argument("--probe", choices=WAYS, help=argparse.SUPPRESS)  # the memory probe's own process
    args = p.parse_args(argv)
    if args.probe:
        return _probe(args)
    if min(args.streams) < 1 or args.ticks < 2 or args.rounds < 1:
        raise UserError("--streams must be >= 1, --ticks >= 2 and --rounds >= 1")
    import onnxruntime

    runs = []
    for k in args.streams:
        runs.append(measure(args.model, k, args))
        r = runs[-1]["ratios"]
        print(
            f"K={k}: throughput {r['throughput_vs_sequential']:.2f}x sequential, {r['throughput_vs_threads']:.2f}x "
            f"threads; p99 {r['p99_vs_sequential']:.2f}x / {r['p99_vs_threads']:.2f}x; "
            f"memory {r['memory_vs_sequential']:.2f}x"
        )
    date = datetime.date.today().isoformat()
    results = {
        "command": " ".join(["python -m bench.multistream", *(sys.argv[1:] if argv is None else argv)]),
        "date": date,
        "model": args.model,
        "input_hw": [args.height, args.width],
        "precision": "fp32",
        "onnxruntime": onnxruntime.__version__,
        "threads": args.threads,
        "ticks": args.ticks,
        "rounds": args.rounds,
        "machine": describe(),
        "runs": runs,
    }
    out = args.out or RESULTS / f"multistream-{date}.json"
    write_json(out, results)
    write_text(out.with_suffix(".md"), markdown(results))
    print(markdown(results))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
