"""FLAME, the latency-aware mIoU of Courdier and Fleuret, "Fair Latency-Aware Metric for real-time video
segmentation networks" (eq. 4-5).

The prediction for frame t is compared with the label of the frame that is current when the
network finishes: t + k with k = ceil(latency / frame interval). The latency is known only at
the end of a run, so `LatencyAwareMIoU` accumulates one confusion matrix for every offset up to
`max_offset` while streaming (a ring of the last predictions, no frame stored twice) and
picks k afterwards.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from tempseg.metrics.segmentation import ConfusionMatrix


def flame_offset(latency_ms: float, fps: float) -> int:
    """k_F = ceil(l_F / d), d = 1000 / fps ms (eq. 5); 0 for a zero latency."""
    if latency_ms < 0 or fps <= 0:
        raise ValueError(f"latency must be >= 0 and fps > 0, got {latency_ms} ms at {fps} fps")
    frame_ms = 1000.0 / fps
    return math.ceil(latency_ms / frame_ms - 1e-9)


class LatencyAwareMIoU:
    """Confusion matrices of prediction(t) against label(t + k) for k = 0..max_offset."""

    def __init__(self, num_classes: int, max_offset: int = 8) -> None:
        self.max_offset = max_offset
        self.matrices = [ConfusionMatrix(num_classes) for _ in range(max_offset + 1)]
        self._recent: deque[np.ndarray] = deque(maxlen=max_offset + 1)
        self._sequence: str | None = None

    def update(self, prediction: np.ndarray, label: np.ndarray | None, sequence: str = "") -> None:
        """Add frame t's prediction; if frame t has a label, score the predictions t-k against it."""
        if sequence != self._sequence:
            self._recent.clear()  # never compare across a cut
            self._sequence = sequence
        self._recent.appendleft(prediction.copy())
        if label is None:
            return
        for k, earlier in enumerate(self._recent):
            self.matrices[k].update(earlier, label)

    def miou(self, offset: int) -> float | None:
        """mIoU at frame offset `offset`; None when beyond `max_offset` or nothing scored."""
        if offset > self.max_offset or self.matrices[offset].total == 0:
            return None
        return self.matrices[offset].miou()

    def summary(self, latency_ms: float, fps: float) -> dict:
        k = flame_offset(latency_ms, fps)
        return {
            "flame_miou": _round(self.miou(k)),
            "offset_frames": k,
            "latency_ms": round(latency_ms, 3),
            "source_fps": fps,
            "miou_by_offset": [_round(self.miou(i)) for i in range(self.max_offset + 1)],
        }


def _round(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(value, 6)
