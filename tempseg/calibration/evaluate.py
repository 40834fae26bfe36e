"""Accuracy of the INT8 graph against the FP32 graph, streamed as the runtime runs them.

Each graph carries its own state (the INT8 graph's state is computed in INT8, as on the engine),
over held-out labelled sequences, in ONNX Runtime on the CPU, through the runtime's runners and
stream (runtime/stream.py compare_runners).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.stream import compare_runners

MIOU_DROP_TARGET = 1.0  # points of mIoU the INT8 graph may lose against FP32
MIN_SEQUENCES_FOR_INTERVAL = 5  # a bootstrap over fewer sequences says little: no interval then


def held_out_sequences(spec: str, count: int, frames: int, *, height: int, width: int) -> list[list[Frame]]:
    """The first `count` sequences of the val split of labelled data `spec` (its own split where the spec names
    one), the first `frames` frames of each, or up to its first labelled frame where that comes later: labels
    may be sparse (one frame in 30), and a sequence with none scores nothing."""
    with open_source(spec, height=height, width=width, split="val") as source:
        return _first_sequences(source, count, frames)


def _first_sequences(stream: Iterable[Frame], count: int, frames: int) -> list[list[Frame]]:
    sequences: dict[str, list[Frame]] = {}
    for frame in stream:
        if frame.sequence not in sequences:
            if len(sequences) == count:
                break
            sequences[frame.sequence] = []
        taken = sequences[frame.sequence]
        if len(taken) < frames or not any(f.label is not None for f in taken):
            taken.append(frame)
    return list(sequences.values())


def accuracy_report(fp32: Runner, int8: Runner, sequences: Sequence[Sequence[Frame]]) -> dict:
    """mIoU and pixel accuracy of both graphs against the labels, INT8/FP32 label agreement, mIoU drop in
    points (with its paired 95 % interval over sequences where there are at least 5); both runners active."""
    contract = fp32.contract
    scores = {"fp32": StreamScores(contract.num_classes), "int8": StreamScores(contract.num_classes)}
    agree = total = 0
    frames = [frame for sequence in sequences for frame in sequence]
    for steps in compare_runners({"fp32": fp32, "int8": int8}, frames):
        ref, test = steps["fp32"], steps["int8"]
        agree += int((ref.labels == test.labels).sum())
        total += ref.labels.size
        label = ref.frame.label  # every runner's step holds the same frame
        if label is not None:
            for name, step in steps.items():
                scores[name].update(step.frame.sequence, step.frame.index, None, step.labels, label)
    report: dict = {
        "sequences": len(sequences),
        "frames": len(frames),
        "label_agreement": round(agree / total, 6) if total else None,
    }
    for precision, score in scores.items():
        summary = score.matrix().summary(contract.class_names())
        report[precision] = {"miou": summary["miou"], "pixel_acc": summary["pixel_acc"]}
    fp32_miou, int8_miou = report["fp32"]["miou"], report["int8"]["miou"]
    drop_points = None
    if fp32_miou is not None and int8_miou is not None:
        drop_points = round(100 * (fp32_miou - int8_miou), 3)
    report["miou_drop_points"] = drop_points
    if drop_points is not None and len(scores["fp32"].sequences) >= MIN_SEQUENCES_FOR_INTERVAL:
        drop = paired_delta(scores["fp32"], scores["int8"])
        report["miou_drop_interval"] = [drop.low, drop.high]
    report["target_drop_points"] = MIOU_DROP_TARGET
    return report


def format_accuracy(report: dict) -> str:
    """A short table: mIoU, pixel accuracy, agreement with FP32, and the mIoU drop against its target."""
    pct = lambda v: "  n/a" if v is None else f"{100 * v:6.2f}"  # noqa: E731
    lines = [
        f"accuracy over {report['sequences']} held-out sequences, {report['frames']} frames "
        "(ONNX Runtime CPU, state carried):",
        "  graph   mIoU %   pixel acc %   labels = fp32 %",
        f"  fp32   {pct(report['fp32']['miou'])}   {pct(report['fp32']['pixel_acc'])}        {pct(1.0)}",
        f"  int8   {pct(report['int8']['miou'])}   {pct(report['int8']['pixel_acc'])}        "
        f"{pct(report['label_agreement'])}",
    ]
    drop = report["miou_drop_points"]
    if drop is not None:
        verdict = "within" if drop <= report["target_drop_points"] else "ABOVE"
        lines.append(f"  mIoU drop {drop:.2f} points ({verdict} the {report['target_drop_points']:.1f}-point target)")
    return "\n".join(lines)
