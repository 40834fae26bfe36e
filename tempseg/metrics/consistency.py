"""Temporal consistency TC, as defined by Liu, Shen, Yu and Wang, "Efficient Semantic Video Segmentation
with Per-frame Inference" (ECCV 2020), appendix B.1, eq. 7-8.

For each frame t the previous prediction Q_{t-1} is warped to frame t with optical flow and
compared with Q_t by IoU on the pixels the flow is valid on; intersections and unions are summed
over the sequence (eq. 8's statistical average), then the per-sequence mIoUs are averaged.

The flow is the synthetic generator's exact one where a frame carries it (Frame.flow_prev, with its
visibility mask: occluded and disoccluded pixels are left out, as ETC leaves out non-occluded ones),
else OpenCV DIS between the two images, valid wherever it points inside the frame. `flow` names what
was used. The two differ: DIS follows the pixels of a degraded image (a frozen frame "does not
move"), the exact flow follows the scene, so a model that freezes its output on a frozen frame
scores as inconsistent with exact flow and as consistent with DIS.
"""

from __future__ import annotations

import cv2
import numpy as np

from tempseg.metrics.segmentation import ConfusionMatrix


class TemporalConsistency:
    """Streams (image, prediction) pairs; `value()` is the mean warp-mIoU over sequences."""

    def __init__(self, num_classes: int, flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> None:
        self.num_classes = num_classes
        self._dis = cv2.DISOpticalFlow.create(flow_preset)
        self._sequence: str | None = None
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._current = ConfusionMatrix(num_classes)
        self.per_sequence: list[float] = []
        self.sources: set[str] = set()

    def update(
        self,
        image_bgr: np.ndarray,
        prediction: np.ndarray,
        sequence: str = "",
        flow: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray | None:
        """Score `prediction` against the previous one of its sequence, warped by `flow` (exact backward flow
        and its mask) or by DIS; returns that warped previous prediction (255 where not valid), None on a
        sequence's first frame."""
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        if sequence != self._sequence:
            self._close_sequence()
            self._sequence = sequence
        reference = None
        if self._previous is not None:
            prev_gray, prev_pred = self._previous
            if flow is not None:
                motion, trusted = flow
                self.sources.add("exact")
            else:
                # flow=None: OpenCV allocates the output (the stubs type this InputOutputArray as never None)
                motion, trusted = self._dis.calc(gray, prev_gray, None), True  # pyright: ignore[reportCallIssue, reportArgumentType]
                self.sources.add("dis")
            warped, inside = warp_with_flow(prev_pred, motion)
            reference = np.where(inside & trusted, warped, 255).astype(np.uint8)
            self._current.update(prediction, reference)
        self._previous = (gray, prediction.copy())
        return reference

    @property
    def flow(self) -> str | None:
        """The flow the figure rests on: "exact", "dis", "dis+exact" (a mix), None before two frames."""
        return "+".join(sorted(self.sources)) or None

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
