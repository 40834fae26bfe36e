"""mIoU, per-class IoU and pixel accuracy from one accumulated confusion matrix.

mIoU follows eq. 2 of the FLAME paper (Courdier and Fleuret, "Fair Latency-Aware Metric for
real-time video segmentation networks"): for each class the intersections and unions are summed
over all images first, then the per-class IoUs are averaged. Classes whose union is empty over the
whole set (absent from both the labels and the predictions) have no IoU and are left out of the
mean, as in the Cityscapes benchmark.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Counts of (label, prediction) pixel pairs; rows are labels, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one or more images; pixels labelled `ignore_index` (or out of range) are skipped."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction shape {prediction.shape} != label shape {label.shape}")
        label = label.astype(np.int64, copy=False).ravel()
        prediction = prediction.astype(np.int64, copy=False).ravel()
        valid = (label != self.ignore_index) & (label >= 0) & (label < self.num_classes)
        index = label[valid] * self.num_classes + np.clip(prediction[valid], 0, self.num_classes - 1)
        self.counts += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def merge(self, other: ConfusionMatrix) -> None:
        self.counts += other.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes with an empty union."""
        intersection = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, intersection / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes with a non-empty union; NaN when nothing was counted."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels over counted pixels; NaN when nothing was counted."""
        total = self.total
        return float(np.trace(self.counts) / total) if total else float("nan")

    def summary(self, class_names: list[str] | None = None) -> dict:
        """JSON-ready figures: miou, pixel_acc, per-class IoU (None where undefined), pixels."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "miou": _none_if_nan(self.miou()),
            "pixel_acc": _none_if_nan(self.pixel_accuracy()),
            "per_class_iou": {n: _none_if_nan(v) for n, v in zip(names, self.iou(), strict=True)},
            "pixels": self.total,
        }


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)
