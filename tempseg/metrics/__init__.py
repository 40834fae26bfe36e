"""Accuracy metrics (numpy/OpenCV only, so the runtime uses them without torch)."""

from tempseg.metrics.consistency import TemporalConsistency, warp_with_flow
from tempseg.metrics.flame import LatencyAwareMIoU, flame_offset
from tempseg.metrics.paired import Delta, StreamScores, paired_delta
from tempseg.metrics.segmentation import IGNORE_INDEX, ConfusionMatrix

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
