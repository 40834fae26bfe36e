"""What a temporal connection buys, and why: paired ablations from one trained base.

Every variant and its control (the frame-by-frame model with the same fine-tune settings) are
fine-tuned from the same base checkpoint for the same steps on the same clips, then scored on the
same val frames. Each variant's delta against its control comes with its 95 % bootstrap interval
over sequences, on all, clean and degraded frames, and on degraded frames split by whether the
frame before was clean (`first`: the state saw the scene) or degraded too (`later`: a state from one
frame back has nothing clean to give). Temporal consistency (TC, ETC's warp-mIoU with the
generator's exact flow) is paired the same way, on all frames and on clean and degraded frames
apart. Several seeds repeat the fine-tunes with other clips.

    python -m bench.ablation --base runs/fcresnet18/base/checkpoint.pt \\
        --variants fcresnet18_t66 fcresnet18_t66_add fcresnet18_t66k3 fcresnet18_t44 fcresnet18_t66:clip=4

A variant is a model name, optionally with `:clip=L` (clips of L frames, L-1 supervised) or `:steps=N`.
Results: OUT_DIR/ablation.md and ablation.json; trained runs are kept in OUT_DIR and reused.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import sha256_file, write_json, write_text
from tempseg.common.text import number, table
from tempseg.metrics import StreamScores, paired_delta
from tempseg.models import resolve_name
from tempseg.models.checkpoint import load_model
from tempseg.models.registry import base_model, split_name
from tempseg.train.config import TrainConfig, preset_config, recipe
from tempseg.train.evaluate import stream_scores
from tempseg.train.trainer import train

SUBSETS = ("all", "clean", "degraded", "degraded_first", "degraded_later", "tc", "tc_clean", "tc_degraded")
# The Markdown table's, a row per variant and seed: its mIoU, its Δ on SUBSETS[:5], its TC, its Δ on SUBSETS[5:].
COLUMNS = ("variant", "control", "seed", "mIoU clean", "Δ all", "Δ clean", "Δ degraded", "Δ deg. first")
COLUMNS += ("Δ deg. later", "TC", "Δ TC", "Δ TC clean", "Δ TC degraded")


@dataclass(frozen=True)
class Variant:
    """A model and the fine-tune settings it differs by (its control shares them)."""

    model: str
    clip_length: int | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, options = text.partition(":")
        fields: dict[str, int] = {}
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key not in ("clip", "steps") or not value.isdigit():
                raise UserError(f"variant option {option!r}: use clip=L or steps=N", text)
            fields["clip_length" if key == "clip" else "steps"] = int(value)
        return cls(resolve_name(name), **fields)

    @property
    def control(self) -> Variant:
        return Variant(base_model(self.model), self.clip_length, self.steps)

    @property
    def tag(self) -> str:
        extra = (f"-clip{self.clip_length}" if self.clip_length else "") + (f"-{self.steps}steps" if self.steps else "")
        return self.model + extra


def config_of(variant: Variant, preset: str, base: Path, seed: int, teacher: Path | None = None) -> TrainConfig:
    """The variant's fine-tune; `teacher` goes to the variants that distil (`+kd`) only."""
    distils = "kd" in split_name(variant.model)[1]
    return preset_config(
        preset,
        "finetune",
        model=variant.model,
        init_from=str(base),
        seed=seed,
        clip_length=variant.clip_length,
        steps=variant.steps,
        eval_every=variant.steps,
        teacher=str(teacher) if teacher is not None and distils else None,
    )


def trained(variant: Variant, preset: str, base: Path, seed: int, out: Path, teacher: Path | None = None) -> Path:
    """The run directory of a variant and seed, fine-tuned now unless it holds this very recipe."""
    config = config_of(variant, preset, base, seed, teacher)
    run_dir = out / f"{variant.tag}-seed{seed}"
    record = run_dir / "train.json"
    if record.is_file() and (run_dir / "checkpoint.pt").is_file():
        saved = json.loads(record.read_text())["recipe"]
        same_base = (saved.get("init") or {}).get("sha256") == sha256_file(base)
        if same_base and all(recipe(saved).get(k) == v for k, v in recipe(config).items() if k != "amp"):
            return run_dir
    train(config, run_dir)
    return run_dir


def score(run_dir: Path, config: TrainConfig) -> StreamScores:
    model, _ = load_model(run_dir / "checkpoint.pt")
    return stream_scores(model, config, torch.device("cpu"), consistency=True)


def run_ablation(
    variants: list[Variant], preset: str, base: Path, seeds: list[int], out: Path, teacher: Path | None = None
) -> list[dict]:
    rows = []
    for seed in seeds:
        scored: dict[Variant, StreamScores] = {}
        for variant in variants:
            for v in (variant.control, variant):
                if v not in scored:
                    started = time.perf_counter()
                    config = config_of(v, preset, base, seed, teacher)
                    scored[v] = score(trained(v, preset, base, seed, out, teacher), config)
                    print(
                        f"{v.tag} seed {seed}: clean {scored[v].miou('clean')} ({time.perf_counter() - started:.0f} s)"
                    )
            deltas = {s: paired_delta(scored[variant], scored[variant.control], s) for s in SUBSETS}
            rows.append(
                {
                    "variant": variant.tag,
                    "control": variant.control.tag,
                    "seed": seed,
                    "miou": {s: scored[variant].miou(s) for s in SUBSETS},
                    "control_miou": {s: scored[variant.control].miou(s) for s in SUBSETS},
                    "delta": {s: d.to_dict() for s, d in deltas.items()},
                    "text": {s: d.text() for s, d in deltas.items()},
                }
            )
    return rows


def markdown(rows: list[dict], preset: str, base: Path) -> str:
    lines = [
        f"Paired ablation: every row and its control fine-tuned from {base} with the `{preset}` preset's fine-tune "
        "stage (same steps, same clips), scored on the same val frames. Δ mIoU in points against the control, "
        "95 % bootstrap interval over sequences. degraded first: the frame before was clean; later: it was "
        "degraded too. TC: temporal consistency with the exact flow (ETC), and its paired Δ on all frames and "
        "on clean and degraded frames apart (by the frame scored).",
        "",
    ]
    return "\n".join(lines + table(COLUMNS, [_cells(r) for r in rows])) + "\n"


def _cells(r: dict) -> list:
    """One row of the table, a cell per column of COLUMNS."""
    deltas = [r["text"][s] for s in SUBSETS]
    miou, tc = number(r["miou"]["clean"], 4), number(r["miou"]["tc"], 4)
    return [r["variant"], r["control"], r["seed"], miou, *deltas[:5], tc, *deltas[5:]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ablation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", type=Path, required=True, help="trained base checkpoint (runs/BASE/base/checkpoint.pt)")
    p.add_argument("--variants", nargs="+", required=True, help="model[:clip=L][,steps=N] ...")
    p.add_argument("--preset", default="default", help="whose fine-tune stage to use (default: default)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tune seeds (default 0)")
    p.add_argument(
        "--out-dir", type=Path, default=Path("runs/ablation"), help="runs and results (default runs/ablation)"
    )
    p.add_argument("--teacher", type=Path, help="trained checkpoint the `+kd` variants distil from")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.base.is_file():
        raise UserError("base checkpoint not found: train it with `make base MODEL=...`", args.base)
    variants = [Variant.parse(v) for v in args.variants]
    started = time.perf_counter()
    rows = run_ablation(variants, args.preset, args.base, args.seeds, args.out_dir, args.teacher)
    text = markdown(rows, args.preset, args.base)
    write_json(args.out_dir / "ablation.json", {"base": str(args.base), "preset": args.preset, "rows": rows})
    write_text(args.out_dir / "ablation.md", text)
    print(text)
    print(f"stage ablation: {time.perf_counter() - started:.0f} s -> {args.out_dir}/ablation.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
