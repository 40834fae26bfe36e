"""Accuracy of the INT8 graph against the FP32 graph, streamed as the runtime runs them.

Each graph carries its own state (the INT8 graph's state is computed in INT8, as on the engine),
over held-out labelled sequences, in ONNX Runtime on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from calibration.reader import image_tensor
from common.contract import Contract
from data import Frame
from metrics import ConfusionMatrix

MIOU_DROP_TARGET = 1.0  # points of mIoU the INT8 graph may lose against FP32


def stream_labels(session: Any, contract: Contract, frames: Iterable[Frame]) -> Iterator[np.ndarray]:
    """Per frame, the HxW class ids of the first batch item; state carried from frame to frame, zeros first."""
    states = {s.input: np.zeros(s.shape, np.dtype(s.dtype)) for s in contract.states}
    wanted = [contract.labels.name if contract.labels is not None else contract.logits.name]
    wanted += [s.output for s in contract.states]
    for frame in frames:
        result, *next_states = session.run(wanted, {contract.image.name: image_tensor(frame, contract), **states})
        states = {s.input: v for s, v in zip(contract.states, next_states, strict=True)}
        yield result[0] if contract.labels is not None else result[0].argmax(0)


def accuracy_report(fp32: Any, int8: Any, contract: Contract, sequences: Sequence[Sequence[Frame]]) -> dict:
    """mIoU and pixel accuracy of both graphs against the labels, INT8/FP32 label agreement, mIoU drop in points."""
    matrices = {"fp32": ConfusionMatrix(contract.num_classes), "int8": ConfusionMatrix(contract.num_classes)}
    agree = total = 0
    for frames in sequences:
        predictions = zip(stream_labels(fp32, contract, frames), stream_labels(int8, contract, frames), strict=True)
        for frame, (ref, test) in zip(frames, predictions, strict=True):
            agree += int((ref == test).sum())
            total += ref.size
            if frame.label is not None:
                matrices["fp32"].update(ref, frame.label)
                matrices["int8"].update(test, frame.label)
    report: dict = {
        "sequences": len(sequences),
        "frames": sum(len(f) for f in sequences),
        "label_agreement": round(agree / total, 6) if total else None,
    }
    for precision, matrix in matrices.items():
        summary = matrix.summary(contract.class_names())
        report[precision] = {"miou": summary["miou"], "pixel_acc": summary["pixel_acc"]}
    fp32_miou, int8_miou = report["fp32"]["miou"], report["int8"]["miou"]
    has_miou = fp32_miou is not None and int8_miou is not None
    report["miou_drop_points"] = round(100 * (fp32_miou - int8_miou), 3) if has_miou else None
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
