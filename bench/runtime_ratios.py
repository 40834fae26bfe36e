"""The runtime's performance targets, as ratios measured in one run (never a timed test).

1. loop overhead: the full frame loop vs the bare ONNX Runtime call, same model and input (<= 3 %);
2. ONNX Runtime FP32 vs torch eager on the same CPU threads, fcresnet18_t66 at 256x512 (>= 1.8x);
3. the temporal connection's cost: fcresnet18_t66 vs fcresnet18 latency (<= 1.05x), params (<= 1.02x).

Measurements are interleaved in rounds (A, B, A, B...) and summarised by medians, so a
neighbour's load hits both sides alike. `python -m bench.runtime_ratios [--rounds 5 --iters 20]`.
Results go to bench/results/runtime_ratios-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.graphs import benchmark_graph
from tempseg.common.contract import read_onnx_contract
from tempseg.common.io import write_json
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.loop import PHASES, LoopOptions, run_loop
from tempseg.runtime.policy import StatePolicy

RESULTS = Path("bench/results")


def per_call_ms(fn: Callable[[], object], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) * 1e3 / iters


def interleaved(sides: dict[str, Callable[[], float]], rounds: int, pause_s: float = 0.0) -> dict[str, float]:
    """Median per-call ms of each side over `rounds` alternating rounds (after one warm-up round).

    `pause_s` before each measurement lets the other side's worker threads stop spinning (ONNX
    Runtime's and OpenMP's threads busy-wait after their work, stealing the cores for a while).
    """
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for measure in sides.values():
        measure()
    for _ in range(rounds):
        for name, measure in sides.items():
            time.sleep(pause_s)
            samples[name].append(measure())
    return {name: statistics.median(values) for name, values in samples.items()}


def loop_overhead(graph: Path, frames: list, iters: int, rounds: int, threads: int) -> dict:
    """Whole loop per frame vs the bare session call on the same runner, model and input.

    Also from the loop's own timings (same frames, no drift between rounds): total per frame over
    the backend call (compute phase) per frame.
    """
    contract = read_onnx_contract(graph)
    options = LoopOptions(
        warmup=0, progress=False, accuracy=False, consistency=False, policy=StatePolicy(scene_cut=0.25)
    )
    in_run: list[float] = []
    runner = OnnxRuntimeRunner(contract, graph, threads=threads)  # not `as runner`: __enter__ returns a Runner
    with runner:
        session, binding = runner.session, runner._bindings[0]
        if session is None:  # activate() opened it
            raise RuntimeError("the ONNX Runtime session is not open")

        def looped() -> float:
            result = run_loop(runner, frames[:iters], options, source_fps=17.0)
            rows = result.timings.rows()
            total, call = rows[:, PHASES.index("total")], rows[:, PHASES.index("compute")]
            in_run.append(float(total.mean() / call.mean()) - 1.0)
            return result.wall_seconds * 1e3 / iters

        ms = interleaved(
            {
                "bare_call": lambda: per_call_ms(lambda: session.run_with_iobinding(binding), iters),
                "loop": looped,
            },
            rounds,
        )
    return {
        **ms,
        "overhead": ms["loop"] / ms["bare_call"] - 1.0,
        "overhead_in_run": statistics.median(in_run),
        "target": "<= 0.03",
    }


def ort_vs_torch(graph: Path, checkpoint: Path, iters: int, rounds: int, threads: int) -> dict:
    """The deployed graph in ONNX Runtime (frame to labels, argmax in the graph) vs torch eager.

    Two torch figures: frame to labels (forward + argmax over classes, what the torch backend does
    per frame; torch's argmax alone took ~28 ms at 256x512 on 2 CPU threads) and the forward pass alone (logits), which
    leaves torch's slow argmax out of the comparison.
    """
    import torch

    from tempseg.models.checkpoint import load_model

    torch.set_num_threads(threads)
    contract = read_onnx_contract(graph)
    model, _ = load_model(checkpoint)
    image = np.random.default_rng(0).standard_normal(contract.image.shape).astype(np.float32)
    states = [torch.zeros(s.shape) for s in contract.states]
    tensor = torch.from_numpy(image)

    def ort_side() -> float:  # a session per round: no idle ORT threads while torch runs
        with OnnxRuntimeRunner(contract, graph, threads=threads) as runner:
            runner.image[...] = image
            runner.infer()
            return per_call_ms(runner.infer, iters)

    def torch_labels() -> float:
        with torch.inference_mode():
            return per_call_ms(lambda: model(tensor, *states)[0].argmax(1), iters)

    def torch_forward() -> float:
        with torch.inference_mode():
            return per_call_ms(lambda: model(tensor, *states), iters)

    sides = {"onnxruntime": ort_side, "torch_eager": torch_labels, "torch_eager_forward_only": torch_forward}
    ms = interleaved(sides, rounds, pause_s=1.0)
    return {
        **ms,
        "speedup": ms["torch_eager"] / ms["onnxruntime"],
        "speedup_forward_only": ms["torch_eager_forward_only"] / ms["onnxruntime"],
        "threads": threads,
        "target": ">= 1.8",
    }


def temporal_cost(graphs: dict[str, Path], iters: int, rounds: int, threads: int) -> dict:
    """One session alive at a time: an idle session's spinning threads would slow the other."""

    def side(graph: Path):
        def measure() -> float:
            with OnnxRuntimeRunner(read_onnx_contract(graph), graph, threads=threads) as runner:
                runner.infer()
                return per_call_ms(runner.infer, iters)

        return measure

    ms = interleaved({name: side(g) for name, g in graphs.items()}, rounds, pause_s=1.0)
    params = {name: read_onnx_contract(g).extra.get("params") for name, g in graphs.items()}
    base, temporal = list(graphs)
    base_params, temporal_params = params[base], params[temporal]
    if base_params is None or temporal_params is None:  # export records it in every contract
        raise ValueError(f"a graph's contract has no parameter count: {params}")
    return {
        "latency_ms": ms,
        "latency_ratio": ms[temporal] / ms[base],
        "params": params,
        "params_ratio": temporal_params / base_params,
        "target": "latency <= 1.05, params <= 1.02",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.runtime_ratios", description=__doc__)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per comparison")
    p.add_argument("--iters", type=int, default=20, help="calls per round")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both ONNX Runtime and torch")
    args = p.parse_args(argv)
    hw = (args.height, args.width)
    t66 = benchmark_graph("fcresnet18_t66", "fp32", *hw)
    base = benchmark_graph("fcresnet18", "fp32", *hw)
    video = SyntheticVideo(split_seed("val", 0), *hw, length=args.iters)
    frames = list(video)
    results = {
        "host": f"{platform.node()} ({platform.processor() or platform.machine()}), {args.threads} threads",
        "date": datetime.date.today().isoformat(),
        "command": "python -m bench.runtime_ratios " + " ".join(argv or []),
        "input_hw": list(hw),
        "loop_overhead": loop_overhead(t66, frames, args.iters, args.rounds, args.threads),
        "ort_vs_torch": ort_vs_torch(t66, t66.parent / "checkpoint.pt", args.iters, args.rounds, args.threads),
        "temporal_cost": temporal_cost(
            {"fcresnet18": base, "fcresnet18_t66": t66}, args.iters, args.rounds, args.threads
        ),
    }
    out = RESULTS / f"runtime_ratios-{results['date']}.json"
    write_json(out, results)
    lo, ot, tc = results["loop_overhead"], results["ort_vs_torch"], results["temporal_cost"]
    print(
        f"loop overhead      {100 * lo['overhead']:+.2f} % vs the bare call, "
        f"{100 * lo['overhead_in_run']:+.2f} % in-run  "
        f"(loop {lo['loop']:.2f} ms vs bare call {lo['bare_call']:.2f} ms; target <= 3 %)"
    )
    print(
        f"ORT vs torch eager {ot['speedup']:.2f}x frame to labels, {ot['speedup_forward_only']:.2f}x vs torch's "
        f"forward alone  (ORT {ot['onnxruntime']:.2f} ms, torch {ot['torch_eager']:.2f} / "
        f"{ot['torch_eager_forward_only']:.2f} ms; target >= 1.8x)"
    )
    print(
        f"temporal cost      latency {tc['latency_ratio']:.3f}x, params {tc['params_ratio']:.4f}x  "
        f"(t66 {tc['latency_ms']['fcresnet18_t66']:.2f} ms vs {tc['latency_ms']['fcresnet18']:.2f} ms; "
        "targets <= 1.05x, <= 1.02x)"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
