"""Does a folder dataset train as well as the synthetic video it was written from? A paired equivalence run.

The preset's synthetic train and val sequences are written as a folder tree (data/folder.py
write_synthetic_folder, lossless PNG, the 19 Cityscapes classes) labelled on every K-th frame only. The
preset's base is then trained twice with one recipe: (a) from the tree (`data=folder:TREE`), (b) from the
synthetic renderer with `label_every=K`, which supervises the same frames of the same sequences. Both
checkpoints are scored on the same frames (the tree's labelled val frames, whole sequences streamed with the
state carried, as training validates) and compared by the paired mIoU delta b - a with its 95 % bootstrap
interval over sequences.

The synthetic sampler re-renders frames at a random scale; a folder tree cannot, so both runs train with
min_scale 1.0. With one draw per clip over (sequence, labelled frame) pairs in the same order, the two
samplers draw the same clips at the same steps.

    python -m bench.equivalence [--preset default] [--label-every 5] [--model fcresnet18] [--out-dir bench/results]

Runs (and the tree) live in --runs-dir (default runs/equivalence/); a finished checkpoint of the same recipe
is reused, so a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.machine import describe
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json, write_text
from tempseg.common.text import number, table
from tempseg.data.folder import write_synthetic_folder
from tempseg.data.frames import Frame
from tempseg.data.labelled import LabelledClips
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.metrics.paired import miou_interval
from tempseg.models import resolve_name
from tempseg.models.checkpoint import load_model, read_checkpoint
from tempseg.train.clips import LabelledClipSampler, SyntheticClipSampler, labelled_frames
from tempseg.train.config import TrainConfig, preset_config, recipe
from tempseg.train.evaluate import labelled_frames as folder_val_frames
from tempseg.train.evaluate import stream_scores
from tempseg.train.stage import train_stage
from tempseg.train.trainer import FINAL, TrainingRun

# The folder path has no scale augmentation (frames are read at one size): the synthetic run may not have it either.
SAME_SCALE = 1.0
DRAW_STEPS = 20  # steps whose supervised (sequence, frame) pairs are compared between the two runs
STAGE_RECORD = "stage.json"  # beside train.json: the stage's wall time, threads and load, for a rerun's results
RUNS = ("folder", "synthetic")  # (a), (b); the delta is b - a


def tree_of(runs_dir: Path, base: TrainConfig, label_every: int) -> Path:
    """Where the folder tree of this preset and K lives."""
    return runs_dir / f"tree-{base.preset}-{base.height}x{base.width}-every{label_every}"


def write_tree(root: Path, base: TrainConfig, label_every: int) -> Path:
    """The preset's synthetic train and val splits as a folder tree labelled on `labelled_frames` (the frames
    the synthetic run supervises); kept and reused once complete."""
    stamp = root / "written.json"
    wanted = {
        "train": [base.train_sequences, base.sequence_length],
        "val": [base.val_sequences, base.val_frames],
        "size": [base.height, base.width],
        "label_every": label_every,
    }
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return root
    for split, (sequences, length) in (("train", wanted["train"]), ("val", wanted["val"])):
        write_synthetic_folder(
            root,
            split=split,
            sequences=sequences,
            length=length,
            label_every=label_every,
            first_label=labelled_frames(length, label_every).start,
            height=base.height,
            width=base.width,
        )
    write_json(stamp, wanted)
    return root


def configs(preset: str, model: str, tree: Path, label_every: int) -> dict[str, TrainConfig]:
    """The two runs: one recipe, read from the tree (a) or rendered and thinned to the same labels (b)."""
    common: dict[str, Any] = {"model": model, "min_scale": SAME_SCALE}
    return {
        "folder": preset_config(preset, "base", data=f"folder:{tree}", **common),
        "synthetic": preset_config(preset, "base", data="synthetic", label_every=label_every, **common),
    }


def trained(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """How run_dir's checkpoint was trained: trained now from scratch unless run_dir holds this very recipe.
    train_seconds: train.json's (the steps and validation); stage_seconds, threads and load: of the stage."""
    record_path, checkpoint, stage_path = run_dir / "train.json", run_dir / FINAL, run_dir / STAGE_RECORD
    if record_path.is_file() and checkpoint.is_file() and stage_path.is_file():
        record = json.loads(record_path.read_text())
        saved = recipe(record["recipe"])  # its amp is the resolved one, the config's may be "auto"
        if all(saved.get(k) == v for k, v in recipe(config).items() if k != "amp"):
            return {**json.loads(stage_path.read_text()), "train_seconds": record["train_seconds"], "reused": True}
    result = train_stage(config, run_dir)
    stage = {
        "checkpoint": str(result.checkpoint),
        "stage_seconds": round(result.seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],  # other work on the machine slows the steps
    }
    write_json(stage_path, stage)
    return {**stage, "train_seconds": result.record["train_seconds"], "reused": False}


def score(checkpoint: Path, folder: TrainConfig) -> StreamScores:
    """Per-sequence scores on the tree's labelled val frames, streamed as the training evaluator does."""
    model, _ = load_model(checkpoint)
    return stream_scores(model, folder, torch.device("cpu"))


def drawn_frames(config: TrainConfig, steps: int) -> list[tuple[int, int]]:
    """(sequence, frame) of the supervised frame of every clip the first `steps` steps of `config` draw,
    through the trainer's own sampler and its per-clip random streams (train/clips.py sample_batch)."""
    run = TrainingRun(config)
    drawn: list[tuple[int, int]] = []
    record = _recorder(run.sampler, drawn)
    for step in range(steps):
        for item in range(config.batch_size):
            record(np.random.default_rng((config.seed, 0, step, item)), run.clip_length)
    return drawn


def _recorder(
    sampler: SyntheticClipSampler | LabelledClipSampler, drawn: list[tuple[int, int]]
) -> Callable[[np.random.Generator, int], None]:
    """A clip draw that appends its labelled frame to `drawn`."""
    if isinstance(sampler, LabelledClipSampler):
        clips = sampler.dataset
        if not isinstance(clips, LabelledClips):
            raise TypeError("the folder run's clips are LabelledClips")

        def labelled(rng: np.random.Generator, clip_length: int) -> None:
            sequence, index = clips.items[int(rng.integers(len(clips)))]
            drawn.append((int(sequence.name.rsplit("/", 1)[1]), index))
            del clip_length  # the dataset's clips have their own length

        return labelled

    rendered: list[tuple[int, int]] = []
    render = sampler._frame  # the last frame a clip renders carries its (only supervised) label

    def watched(index: int, t: int, size: tuple[int, int]) -> Any:
        rendered.append((index, t))
        return render(index, t, size)

    sampler._frame = watched  # pyright: ignore[reportAttributeAccessIssue]

    def synthetic(rng: np.random.Generator, clip_length: int) -> None:
        rendered.clear()
        sampler.clip(rng, clip_length)
        drawn.append(rendered[-1])

    return synthetic


def same_pixels(folder: TrainConfig) -> bool:
    """Whether val sequence 0 streams the same images, and labels on its labelled frames, from the tree as from
    the synthetic renderer (the frames the synthetic run's own validation sees)."""
    synthetic = open_source(
        "synthetic",
        split="val",
        height=folder.height,
        width=folder.width,
        frames=folder.val_frames,
        sequence_length=folder.val_frames,
    )
    with synthetic:
        rendered = list(synthetic)
    from_tree = [f for f in folder_val_frames(folder) if f.sequence == "val/0000"]
    return len(rendered) == len(from_tree) and all(_same(r, f) for r, f in zip(rendered, from_tree, strict=True))


def _same(rendered: Frame, read: Frame) -> bool:
    labels = read.label is None or (rendered.label is not None and np.array_equal(rendered.label, read.label))
    return np.array_equal(rendered.image, read.image) and labels


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold bit-identical weights (the strongest sign two trainings saw the same data)."""
    first, second = read_checkpoint(a)["state_dict"], read_checkpoint(b)["state_dict"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def machine() -> dict[str, Any]:
    """bench/machine.py's description, with torch's threads and version."""
    return {**describe(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the tree, train both runs, score them on the same frames; the results record."""
    base = preset_config(args.preset, "base", model=args.model)
    if not labelled_frames(base.val_frames, args.label_every):
        raise UserError(f"val sequences of {base.val_frames} frames have no frame labelled every {args.label_every}")
    started = time.perf_counter()
    tree = write_tree(tree_of(args.runs_dir, base, args.label_every), base, args.label_every)
    tree_seconds = time.perf_counter() - started
    runs = configs(args.preset, args.model, tree, args.label_every)
    load_before = [round(x, 2) for x in os.getloadavg()]
    labelled = {
        (s, t) for s in range(base.train_sequences) for t in labelled_frames(base.sequence_length, args.label_every)
    }
    draws = {name: drawn_frames(runs[name], DRAW_STEPS) for name in RUNS}
    sides, scores = train_and_score(runs, args.runs_dir, f"{args.model}-{args.preset}")
    delta = paired_delta(scores["synthetic"], scores["folder"])
    return {
        "command": args.command,
        "date": datetime.date.today().isoformat(),
        "machine": {**machine(), "load_avg_at_start": load_before},
        "preset": args.preset,
        "model": args.model,
        "label_every": args.label_every,
        "labelled_frames": list(labelled_frames(base.sequence_length, args.label_every)),
        "tree": str(tree),
        "tree_seconds": round(tree_seconds, 1),
        "min_scale": SAME_SCALE,
        "recipe_differs_in": sorted(
            k for k, v in sides["folder"]["recipe"].items() if sides["synthetic"]["recipe"][k] != v
        ),
        "runs": sides,
        "delta": {**delta.to_dict(), "of": "synthetic - folder", "unit": "mIoU points"},
        "frames_scored": sum(len(frames) for frames in scores["folder"].frames.values()),
        "frame_indices_scored": sorted({i for frames in scores["folder"].frames.values() for i in frames}),
        "sequences_scored": len(scores["folder"].sequences),
        "val_sequence_0_identical": same_pixels(runs["folder"]),
        "weights_identical": same_weights(*(Path(sides[name]["checkpoint"]) for name in RUNS)),
        "draws": {
            "steps": DRAW_STEPS,
            "identical": draws["folder"] == draws["synthetic"],
            "all_labelled": all(set(d) <= labelled for d in draws.values()),
            "distinct_frames": len(set(draws["synthetic"])),
        },
        "full_config": {name: asdict(c) for name, c in runs.items()},
        "verdict": verdict(delta.low, delta.high),
    }


def train_and_score(
    runs: dict[str, TrainConfig], runs_dir: Path, prefix: str
) -> tuple[dict[str, dict[str, Any]], dict[str, StreamScores]]:
    """Each run trained (or reused) and scored on the tree's labelled val frames: its record and its scores."""
    sides: dict[str, dict[str, Any]] = {}
    scores: dict[str, StreamScores] = {}
    for name in RUNS:  # one after the other, never side by side: they would share the cores and slow each other
        stage = trained(runs[name], runs_dir / f"{prefix}-{name}")
        scores[name] = score(Path(stage["checkpoint"]), runs["folder"])
        low, high = miou_interval(scores[name])
        sides[name] = {
            "data": runs[name].data,
            **stage,
            "miou": scores[name].miou(),
            "miou_interval": [low, high],
            "recipe": recipe(runs[name]),
        }
        print(f"{name}: mIoU {number(sides[name]['miou'], 4)} [{number(low, 4)}, {number(high, 4)}]", flush=True)
    return sides, scores


def verdict(low: float, high: float) -> str:
    """The sentence the results end on."""
    if low <= 0 <= high:
        return (
            "Equivalent within the evidence: the 95 % interval of the paired mIoU delta (synthetic - folder) "
            "contains 0, so training from the folder tree does as well as training from the renderer on the same "
            "labelled frames."
        )
    return (
        "Not shown equivalent: the 95 % interval of the paired mIoU delta (synthetic - folder) excludes 0. The "
        "checks above say whether the two runs drew the same frames with the same pixels; where they did, what "
        "is left to differ is the training's own arithmetic."
    )


def markdown(r: dict[str, Any]) -> str:
    """The results as Markdown: command, machine, recipe, the table, the verdict."""
    m, d = r["machine"], r["delta"]
    rows = [
        [
            name,
            f"`{side['data']}`" + (f", label_every {r['label_every']}" if name == "synthetic" else ""),
            number(side["train_seconds"], 0) + (" (reused)" if side["reused"] else ""),
            side.get("torch_threads", "-"),
            ", ".join(str(x) for x in side.get("load_avg_after", [])) or "-",
            number(side["miou"], 4),
            f"[{number(side['miou_interval'][0], 4)}, {number(side['miou_interval'][1], 4)}]",
        ]
        for name, side in r["runs"].items()
    ]
    differs = ", ".join(r["recipe_differs_in"])
    lines = [
        f"# Folder dataset vs synthetic path: {r['model']} base, `{r['preset']}` preset ({r['date']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {m['cpu']}, AVX-512 BF16 {'yes' if m['avx512_bf16'] else 'no'}, {m['cores']} cores "
        f"(torch {m['torch']}, torch threads: {m['torch_threads']}); load average {m['load_avg_at_start']} at start, "
        f"{m['load_avg_1_5_15']} at the end (1, 5, 15 min; other work on the machine shows here and in the times).",
        "",
        "Data: the preset's synthetic train and val sequences written as a folder tree (lossless PNG, 19 classes) "
        f"labelled on frames {r['labelled_frames']} of each sequence (every K-th, K = {r['label_every']}). "
        f"Run (a) trains from the tree, run (b) from the renderer with label_every {r['label_every']} (the same frames "
        f"supervised). Recipe: the preset's base stage for both, min_scale {r['min_scale']} for both (the folder "
        f"path has no scale augmentation); the recipes differ only in: {differs}.",
        "",
        *table(("run", "data", "train s", "threads", "load after", "mIoU", "95 % interval"), rows, align="<<>>>>>"),
        "",
        "train s: train.json's steps and validation (reused: trained by an earlier invocation of this command, "
        "timed then); load after: the 1, 5, 15 min load average when the run ended.",
        "",
        f"Paired Δ mIoU (synthetic - folder): {d['delta']:+.2f} points, 95 % interval [{d['low']:+.2f}, "
        f"{d['high']:+.2f}] (sequence bootstrap over {d['sequences']} val sequences, {r['frames_scored']} labelled "
        "frames, the same frames for both, streamed whole with the state carried).",
        "",
        f"Checks: val sequence 0 streams identical pixels and labels from the tree and the renderer: "
        f"{r['val_sequence_0_identical']}; the supervised (sequence, frame) of every clip of the first "
        f"{r['draws']['steps']} steps is identical in both runs: {r['draws']['identical']}, all on labelled "
        f"frames: {r['draws']['all_labelled']}; the two checkpoints' weights are bit-identical: "
        f"{r['weights_identical']}. Tree ready in {number(r['tree_seconds'], 0)} s (written once, then reused).",
        "",
        f"**Verdict:** {r['verdict']}",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.equivalence", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="default", help="whose base stage to train (default: default)")
    p.add_argument("--model", default="fcresnet18", help="the base model (default fcresnet18)")
    p.add_argument("--label-every", type=int, default=5, help="label every K-th frame (default 5)")
    p.add_argument("--out-dir", type=Path, default=Path("bench/results"), help="results (default bench/results)")
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs/equivalence"), help="tree and runs (default runs/equivalence)"
    )
    args = p.parse_args(argv)
    if args.label_every < 1:
        p.error("--label-every must be >= 1")
    args.model = resolve_name(args.model)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    command = [*threads, "python", "-m", "bench.equivalence", *(sys.argv[1:] if argv is None else argv)]
    args.command = shlex.join(command)
    started = time.perf_counter()
    results = run(args)
    stem = f"equivalence-{args.model}-{args.preset}-{results['date']}"
    text = markdown(results)
    write_json(args.out_dir / f"{stem}.json", results)
    write_text(args.out_dir / f"{stem}.md", text)
    print(text)
    print(f"stage equivalence: {time.perf_counter() - started:.0f} s -> {args.out_dir}/{stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
