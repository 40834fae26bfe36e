"""What makes training faster on these cores, and the new recipe against the previous one, in one run.

1. Throughput (`--part speed`): optimizer steps per second of the base model under each choice,
   measured in interleaved rounds (A, B, C, ... A, B, C) and summarised by medians, so a neighbour's
   load hits every choice alike: fp32 against bf16 autocast, NCHW against channels_last, rendering
   each clip against the frame cache, and batch/crop shapes of the same pixel count.
2. Accuracy (`--part recipe`): the previous recipe (fp32, no class weights, 64 sequences of 60
   frames, 220 steps) and the current `default` base recipe, trained side by side in one process,
   their steps interleaved in proportion to their budgets, then scored on the same val frames:
   mIoU of each, clean and degraded, the paired delta with its 95 % interval, and the seconds and
   steps per second each one took.

`python -m bench.train_speed [--part speed|recipe|all] [--model fcresnet18]`; results go to
bench/results/train_speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from tempseg.common.errors import run_cli
from tempseg.common.io import write_json
from tempseg.data.classes import CLASS_NAMES
from tempseg.metrics import paired_delta
from tempseg.train.clips import SyntheticClipSampler
from tempseg.train.config import TrainConfig, preset_config
from tempseg.train.evaluate import stream_scores
from tempseg.train.trainer import TrainingRun

RESULTS = Path("bench/results")
# The base recipe on main before this benchmark (train/config.py at commit 1b57cdc).
PREVIOUS = {
    "amp": "fp32",
    "channels_last": False,
    "class_weights": "none",
    "train_sequences": 64,
    "sequence_length": 60,
    "steps": 220,
    "frame_cache_mb": 0,
}


def speed_variants(base: TrainConfig) -> dict[str, TrainConfig]:
    """The choices measured for throughput, each one change away from its neighbour."""
    previous = replace(base, **PREVIOUS)
    return {
        "previous (fp32, NCHW, render per clip)": previous,
        "fp32 + channels_last": replace(previous, channels_last=True),
        "bf16 autocast": replace(previous, amp="bf16"),
        "bf16 + channels_last": replace(previous, amp="bf16", channels_last=True),
        "bf16 + channels_last + frame cache (current)": replace(base, amp="bf16"),
        "current, batch 16 of 96x192": replace(base, amp="bf16", batch_size=16, crop=(96, 192)),
        "current, batch 4 of 192x384": replace(base, amp="bf16", batch_size=4, crop=(192, 384), min_scale=0.75),
    }


def measure_speed(base: TrainConfig, rounds: int, steps_per_round: int) -> dict:
    """Median seconds per step of each variant over interleaved rounds; ratios to the previous recipe."""
    runs = {name: TrainingRun(config) for name, config in speed_variants(base).items()}
    for run in runs.values():  # warm-up: oneDNN kernels, and every cached frame rendered once
        run.step(0)
        if isinstance(run.sampler, SyntheticClipSampler):  # the sampler with a frame cache
            run.sampler.warm_cache()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    step = 1
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            for k in range(steps_per_round):
                run.step(step + k)
            samples[name].append((time.perf_counter() - started) / steps_per_round)
        step += steps_per_round
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    reference = next(iter(seconds.values()))
    return {
        name: {
            "seconds_per_step": round(s, 4),
            "steps_per_second": round(1.0 / s, 3),
            "pixels_per_second": round(_pixels(runs[name].config) / s),
            "speedup_vs_previous": round(reference / s, 3),
        }
        for name, s in seconds.items()
    }


def _pixels(config: TrainConfig) -> int:
    h, w = config.crop or (config.height, config.width)
    return config.batch_size * h * w


def compare_recipes(current: TrainConfig) -> dict:
    """Train the previous and the current recipe side by side; score both on the same val frames."""
    previous = replace(current, **PREVIOUS)
    runs = {"previous": TrainingRun(previous), "current": TrainingRun(current)}
    for run in runs.values():
        run.initialise()
    done = dict.fromkeys(runs, 0)
    seconds = dict.fromkeys(runs, 0.0)
    while any(done[n] < runs[n].config.steps for n in runs):
        # the run furthest behind its own budget goes next, so both progress at one pace
        name = min((n for n in runs if done[n] < runs[n].config.steps), key=lambda n: done[n] / runs[n].config.steps)
        started = time.perf_counter()
        runs[name].step(done[name])
        seconds[name] += time.perf_counter() - started
        done[name] += 1
    scores = {name: stream_scores(run.model, current, run.device) for name, run in runs.items()}
    names = list(CLASS_NAMES)
    out = {
        name: {
            "steps": run.config.steps,
            "train_seconds": round(seconds[name], 1),
            "steps_per_second": round(run.config.steps / seconds[name], 3),
            **{k: v for k, v in scores[name].summary(names).items() if k != "per_class_iou"},
        }
        for name, run in runs.items()
    }
    out["delta_current_minus_previous"] = {
        subset: paired_delta(scores["current"], scores["previous"], subset).to_dict()
        for subset in ("all", "clean", "degraded")
    }
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__)
    p.add_argument("--part", choices=("speed", "recipe", "all"), default="all")
    p.add_argument("--model", default="fcresnet18")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds of the speed part (default 6)")
    p.add_argument("--steps-per-round", type=int, default=4)
    p.add_argument("--out", type=Path, help="result JSON (default bench/results/train_speed-<date>.json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    current = preset_config("default", "base", model=args.model)
    result: dict = {
        "host": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": "python -m bench.train_speed " + " ".join(argv or []),
        "date": datetime.date.today().isoformat(),
    }
    if args.part in ("speed", "all"):
        result["speed"] = measure_speed(current, args.rounds, args.steps_per_round)
        for name, row in result["speed"].items():
            print(f"{name:<48} {row['steps_per_second']:6.2f} steps/s  x{row['speedup_vs_previous']:.2f}")
    if args.part in ("recipe", "all"):
        result["recipe"] = compare_recipes(current)
        for name in ("previous", "current"):
            r = result["recipe"][name]
            print(
                f"{name:<9} {r['steps']} steps in {r['train_seconds']:.0f} s: mIoU clean {r['miou_clean']}, "
                f"degraded {r['miou_degraded']}"
            )
        for subset, d in result["recipe"]["delta_current_minus_previous"].items():
            print(f"delta {subset}: {d['delta']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] points")
    out = args.out or RESULTS / f"train_speed-{result['date']}.json"
    write_json(out, result)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
