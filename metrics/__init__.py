"""Accuracy metrics (numpy/OpenCV only, so the runtime uses them without torch)."""

from metrics.consistency import TemporalConsistency, warp_with_flow
from metrics.flame import LatencyAwareMIoU, flame_offset
from metrics.paired import Delta, StreamScores, paired_delta
from metrics.segmentation import IGNORE_INDEX, ConfusionMatrix

__all__ = [
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "Delta",
    "LatencyAwareMIoU",
    "StreamScores",
    "TemporalConsistency",
    "flame_offset",
    "paired_delta",
    "warp_with_flow",
]
