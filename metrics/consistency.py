"""Temporal consistency TC, as defined by Liu, Shen, Yu and Wang, "Efficient Semantic Video Segmentation
with Per-frame Inference" (ECCV 2020), appendix B.1, eq. 7-8.

For each frame t the previous prediction Q_{t-1} is warped to frame t with optical flow
(OpenCV DIS) and compared with Q_t by IoU; intersections and unions are summed over the
sequence (eq. 8's statistical average), then the per-sequence mIoUs are averaged.
"""

from __future__ import annotations

import cv2
import numpy as np

from tempseg.metrics.segmentation import ConfusionMatrix


class TemporalConsistency:
    """Streams (image, prediction) pairs; `value()` is the mean warp-mIoU over sequences."""

    def __init__(self, num_classes: int, flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> None:
        self.num_classes = num_classes
        self._dis = cv2.DISOpticalFlow_create(flow_preset)
        self._sequence: str | None = None
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._current = ConfusionMatrix(num_classes)
        self.per_sequence: list[float] = []

    def update(self, image_bgr: np.ndarray, prediction: np.ndarray, sequence: str = "") -> None:
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        if sequence != self._sequence:
            self._close_sequence()
            self._sequence = sequence
        if self._previous is not None:
            prev_gray, prev_pred = self._previous
            flow = self._dis.calc(gray, prev_gray, None)
            warped, valid = warp_with_flow(prev_pred, flow)
            label = np.where(valid, warped, 255).astype(np.uint8)
            self._current.update(prediction, label)
        self._previous = (gray, prediction.copy())

    def value(self) -> float | None:
        """Mean over sequences of the warp-mIoU; None before two frames of one sequence."""
        scores = [*self.per_sequence, *self._open_score()]
        return round(float(np.mean(scores)), 6) if scores else None

    def _open_score(self) -> list[float]:
        return [self._current.miou()] if self._current.total else []

    def _close_sequence(self) -> None:
        self.per_sequence.extend(self._open_score())
        self._current = ConfusionMatrix(self.num_classes)
        self._previous = None


def warp_with_flow(prev_labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp `prev_labels` onto the current frame with the backward flow current->previous.

    Nearest sampling (labels are not interpolated). Returns the warped labels and the mask of
    pixels whose source lies inside the previous frame.
    """
    h, w = flow.shape[:2]
    map_x = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    map_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    warped = cv2.remap(prev_labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, valid
