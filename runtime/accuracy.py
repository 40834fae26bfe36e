"""Accuracy of a streamed run: mIoU, per-class IoU, pixel accuracy, FLAME, TC, and mIoU by
frames since the last state reset (as Accel's Table 2 reports accuracy by keyframe distance)."""

from __future__ import annotations

import numpy as np

from data import Frame
from metrics import ConfusionMatrix, LatencyAwareMIoU, TemporalConsistency

SINCE_RESET_BUCKETS = 10  # frames 1..9 after a reset separately, then 10+ together


class AccuracyTracker:
    def __init__(self, num_classes: int, *, consistency: bool = True, max_flame_offset: int = 8) -> None:
        self.overall = ConfusionMatrix(num_classes)
        self.since_reset = [ConfusionMatrix(num_classes) for _ in range(SINCE_RESET_BUCKETS)]
        self.flame = LatencyAwareMIoU(num_classes, max_flame_offset)
        self.tc = TemporalConsistency(num_classes) if consistency else None
        self.labelled_frames = 0

    def update(self, frame: Frame, prediction: np.ndarray, frames_since_reset: int) -> None:
        """`frames_since_reset` is 1 for the first frame after a reset (it ran on a zero state)."""
        if frame.label is not None:
            self.overall.update(prediction, frame.label)
            self.since_reset[min(frames_since_reset, SINCE_RESET_BUCKETS) - 1].update(prediction, frame.label)
            self.labelled_frames += 1
        self.flame.update(prediction, frame.label, frame.sequence)
        if self.tc is not None:
            self.tc.update(frame.image, prediction, frame.sequence)

    def summary(self, class_names: list[str], latency_ms: float, source_fps: float) -> dict:
        out = {"labelled_frames": self.labelled_frames}
        if self.labelled_frames:
            overall = self.overall.summary(class_names)
            flame = self.flame.summary(latency_ms, source_fps)
            out.update(
                miou=overall["miou"],
                pixel_acc=overall["pixel_acc"],
                per_class_iou=overall["per_class_iou"],
                flame_miou=flame["flame_miou"],
                flame=flame,
                miou_by_frames_since_reset={
                    (f"{i + 1}" if i + 1 < SINCE_RESET_BUCKETS else f"{SINCE_RESET_BUCKETS}+"): _round(m.miou())
                    if m.total
                    else None
                    for i, m in enumerate(self.since_reset)
                },
            )
        out["tc"] = None if self.tc is None else self.tc.value()
        return out


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)
