"""Soak: 10,000+ frames through the real loop, host RSS / device memory / p99 sampled every 1,000.

Pass criteria (issue 7): no host RSS (or device memory) growth beyond 5 MB after the first
sample, latency p99 of every window within 10 % of the first window's. Runs on ONNX Runtime by
default; `--backend tensorrt` where TensorRT and a GPU are present.

`python -m bench.soak [--model fcresnet18_t66] [--frames 10000] [--every 1000] [--replay 300]`

By default the loop replays 300 pre-rendered synthetic frames, so the RSS figure is the
runtime's own: rendering live (`--replay 0`) grew the process by about 1 MB per 1,000 frames at
128x256 with no growth of Python objects (tracemalloc), i.e. in the renderer's native
allocations, which a camera or video source does not share.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.graphs import benchmark_graph
from common.io import write_json
from data import Frame, open_source
from runtime.loop import LoopOptions, run_loop
from runtime.memory import current_rss_bytes
from runtime.session import make_runner, select

RESULTS = Path("bench/results")
MB = 1e6


class MemorySampler:
    """A loop sink that records host RSS (and device memory when the runner can tell) every N frames."""

    def __init__(self, every: int, device_used) -> None:
        self.every, self.count, self.samples = every, 0, []
        self._device_used = device_used

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.samples.append(
                {"frame": self.count, "rss_bytes": current_rss_bytes(), "device_used_bytes": self._device_used()}
            )


def windows(latencies: np.ndarray, every: int) -> list[dict]:
    out = []
    for start in range(0, len(latencies) - every + 1, every):
        chunk = latencies[start : start + every]
        out.append(
            {
                "frames": [start + 1, start + every],
                "p50_ms": float(np.percentile(chunk, 50)),
                "p99_ms": float(np.percentile(chunk, 99)),
            }
        )
    return out


def verdict(samples: list[dict], lat_windows: list[dict], growth_limit_mb: float = 5.0, p99_band: float = 0.10) -> dict:
    rss = [s["rss_bytes"] for s in samples]
    device = [s["device_used_bytes"] for s in samples if s["device_used_bytes"] is not None]
    p99 = [w["p99_ms"] for w in lat_windows]
    rss_growth = (max(rss) - rss[0]) / MB if rss else 0.0
    device_growth = (max(device) - device[0]) / MB if device else None
    p99_spread = max(abs(v / p99[0] - 1.0) for v in p99) if p99 else 0.0
    return {
        "rss_growth_mb": round(rss_growth, 3),
        "device_growth_mb": None if device_growth is None else round(device_growth, 3),
        "p99_max_deviation": round(p99_spread, 4),
        "pass": rss_growth <= growth_limit_mb
        and (device_growth is None or device_growth <= growth_limit_mb)
        and p99_spread <= p99_band,
    }


def replayed(frames: list[Frame], total: int) -> Iterator[Frame]:
    """`total` frames cycling through `frames`: the source allocates nothing while the loop runs."""
    return itertools.islice(itertools.cycle(frames), total)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="fcresnet18_t66")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt", "tensorrt_rtx", "torch"))
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--every", type=int, default=1_000)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--replay", type=int, default=300, help="cycle this many pre-rendered frames (0: render live)")
    args = p.parse_args(argv)
    graph = benchmark_graph(args.model, args.precision, args.height, args.width)
    selection = select(graph.parent, args.precision, args.backend, onnx=graph)
    runner = make_runner(selection, threads=args.threads)
    source = open_source("synthetic", height=args.height, width=args.width, frames=args.frames)
    options = LoopOptions(warmup=0, max_frames=args.frames, accuracy=False, consistency=False)
    with source, runner:
        frames = replayed(list(itertools.islice(source, args.replay)), args.frames) if args.replay else source
        sampler = MemorySampler(
            args.every, lambda: runner.memory().device_used_bytes if args.backend.startswith("tensorrt") else None
        )
        result = run_loop(runner, frames, options, source_fps=source.fps, sinks=(sampler,), total=args.frames)
        device = runner.device_name
    lat_windows = windows(result.timings.rows()[:, -1], args.every)
    report = {
        "date": datetime.date.today().isoformat(),
        "host": f"{platform.node()} {platform.machine()}",
        "device": device,
        "command": "python -m bench.soak " + " ".join(argv or []),
        "model": args.model,
        "precision": args.precision,
        "backend": selection.backend,
        "frames": result.frames,
        "source": f"{args.replay} synthetic frames replayed" if args.replay else "synthetic, rendered live",
        "resets": result.resets,
        "memory_samples": sampler.samples,
        "latency_windows": lat_windows,
        "verdict": verdict(sampler.samples, lat_windows),
    }
    out = RESULTS / f"soak-{args.model}-{selection.backend}-{report['date']}.json"
    write_json(out, report)
    print(f"{'frames':>12} {'RSS MB':>10} {'device MB':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for sample, window in zip(sampler.samples, lat_windows, strict=False):
        dev = "-" if sample["device_used_bytes"] is None else f"{sample['device_used_bytes'] / MB:.1f}"
        print(
            f"{sample['frame']:>12} {sample['rss_bytes'] / MB:>10.1f} {dev:>10} "
            f"{window['p50_ms']:>8.2f} {window['p99_ms']:>8.2f}"
        )
    v = report["verdict"]
    print(
        f"RSS growth {v['rss_growth_mb']:.2f} MB (limit 5), "
        f"p99 max deviation {100 * v['p99_max_deviation']:.1f} % (limit 10) "
        f"-> {'PASS' if v['pass'] else 'FAIL'}; wrote {out}"
    )
    return 0 if v["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
