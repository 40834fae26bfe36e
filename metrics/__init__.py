"""Accuracy metrics (numpy/OpenCV only, so the runtime uses them without torch)."""

from metrics.consistency import TemporalConsistency, warp_with_flow
from metrics.flame import LatencyAwareMIoU, flame_offset
from metrics.segmentation import IGNORE_INDEX, ConfusionMatrix

__all__ = [
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "LatencyAwareMIoU",
    "TemporalConsistency",
    "flame_offset",
    "warp_with_flow",
]
