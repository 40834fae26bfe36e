"""Paired accuracy evidence: per-sequence confusion matrices and bootstrap intervals of mIoU deltas.

Two models scored on the same frames of the same sequences can be compared frame for frame. The
unit of resampling is the sequence (frames of one sequence are not independent), and mIoU is
recomputed on every resample from the summed intersections and unions (FLAME paper eq. 2), never
averaged over sequences. Frames are split into clean and degraded (the synthetic generator marks a
transient degradation on the frame), so a temporal model's gain where the current frame is damaged
and its cost where it is not are reported apart.

Temporal consistency (subset "tc") is kept the same way: per sequence, the confusion of each
prediction with the previous one warped onto its frame (metrics/consistency.py). As ETC defines TC
(appendix B.1, eq. 8), it is the mean over sequences of each sequence's warp-mIoU, so its resamples
average sequences instead of summing their counts. "tc_clean" and "tc_degraded" split it by the frame
scored: flicker on clean frames, and how far a prediction jumps when its frame is damaged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tempseg.metrics.segmentation import ConfusionMatrix

# degraded_first: a degraded frame right after a clean one (the previous frame still saw the scene);
# degraded_later: the 2nd or 3rd frame of an event, whose previous frame was degraded too.
SUBSETS = ("all", "clean", "degraded", "degraded_first", "degraded_later", "tc", "tc_clean", "tc_degraded")
TC_SUBSETS = ("tc", "tc_clean", "tc_degraded")
RESAMPLES = 2000


class StreamScores:
    """Confusion matrices per sequence, for clean and degraded frames, and per degradation kind."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sequences: list[str] = []
        self.frames: dict[str, list[int]] = {}
        self._clean: dict[str, ConfusionMatrix] = {}
        self._first: dict[str, ConfusionMatrix] = {}  # degraded after a clean frame
        self._later: dict[str, ConfusionMatrix] = {}  # degraded after a degraded frame
        self._previous_degraded: dict[str, bool] = {}
        self.by_kind: dict[str, ConfusionMatrix] = {}
        # prediction vs the previous one warped onto this frame, by whether this frame is degraded
        self._tc_clean: dict[str, ConfusionMatrix] = {}
        self._tc_degraded: dict[str, ConfusionMatrix] = {}
        self._tc_unsplit: dict[str, ConfusionMatrix] = {}  # read from scores saved before the split

    def update(
        self, sequence: str, index: int, degraded: str | None, prediction: np.ndarray, label: np.ndarray
    ) -> None:
        """Score one labelled frame; `degraded` is the kind of degradation on it, None when clean."""
        if sequence not in self._clean:
            self.sequences.append(sequence)
            self.frames[sequence] = []
            for table in (self._clean, self._first, self._later):
                table[sequence] = ConfusionMatrix(self.num_classes)
        self.frames[sequence].append(index)
        after_degraded = self._previous_degraded.get(sequence, False)
        table = self._clean if degraded is None else self._later if after_degraded else self._first
        table[sequence].update(prediction, label)
        self._previous_degraded[sequence] = degraded is not None
        if degraded is not None:
            self.by_kind.setdefault(degraded, ConfusionMatrix(self.num_classes)).update(prediction, label)

    def update_consistency(
        self, sequence: str, prediction: np.ndarray, warped_previous: np.ndarray, *, degraded: bool = False
    ) -> None:
        """Score one frame's prediction against the previous prediction warped onto it (255: not valid)."""
        table = self._tc_degraded if degraded else self._tc_clean
        table.setdefault(sequence, ConfusionMatrix(self.num_classes)).update(prediction, warped_previous)

    def counts(self, subset: str = "all") -> np.ndarray:
        """[sequences, C, C] confusion counts of `subset` ("all", "clean" or "degraded")."""
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}: use one of {SUBSETS}")
        if subset in TC_SUBSETS:
            tables = {
                "tc": (self._tc_clean, self._tc_degraded, self._tc_unsplit),
                "tc_clean": (self._tc_clean,),
                "tc_degraded": (self._tc_degraded,),
            }[subset]
            out = np.zeros((len(self.sequences), self.num_classes, self.num_classes), np.int64)
            for i, name in enumerate(self.sequences):
                for table in tables:
                    if name in table:
                        out[i] += table[name].counts
            return out
        parts = {
            "all": (self._clean, self._first, self._later),
            "clean": (self._clean,),
            "degraded": (self._first, self._later),
            "degraded_first": (self._first,),
            "degraded_later": (self._later,),
        }[subset]
        out = np.zeros((len(self.sequences), self.num_classes, self.num_classes), np.int64)
        for i, name in enumerate(self.sequences):
            for table in parts:
                out[i] += table[name].counts
        return out

    def matrix(self, subset: str = "all") -> ConfusionMatrix:
        total = ConfusionMatrix(self.num_classes)
        total.counts = self.counts(subset).sum(0)
        return total

    def miou(self, subset: str = "all") -> float | None:
        """mIoU of `subset` from its summed counts; for the TC subsets, ETC's TC (the mean of the sequences'
        warp-mIoU)."""
        value = _statistic(self.counts(subset), subset)
        return None if np.isnan(value) else round(float(value), 5)

    def summary(self, class_names: list[str]) -> dict:
        """JSON-ready: mIoU of all/clean/degraded frames, frame counts, per-class IoU, mIoU per kind."""
        overall = self.matrix("all").summary(class_names)
        return {
            "miou": overall["miou"],
            "miou_clean": self.miou("clean"),
            "miou_degraded": self.miou("degraded"),
            "miou_degraded_first": self.miou("degraded_first"),
            "miou_degraded_later": self.miou("degraded_later"),
            "pixel_acc": overall["pixel_acc"],
            "per_class_iou": overall["per_class_iou"],
            "per_class_iou_clean": self.matrix("clean").summary(class_names)["per_class_iou"],
            "miou_by_degradation": {k: _round(m.miou()) for k, m in sorted(self.by_kind.items())},
            "sequences": len(self.sequences),
            "frames": sum(len(f) for f in self.frames.values()),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything paired_delta needs, as arrays (saved beside a run report as .npz)."""
        return {
            "sequences": np.array(self.sequences),
            "frames": np.array([len(self.frames[s]) for s in self.sequences]),
            "clean": self.counts("clean"),
            "degraded_first": self.counts("degraded_first"),
            "degraded_later": self.counts("degraded_later"),
            "tc_clean": self.counts("tc_clean"),
            "tc_degraded": self.counts("tc_degraded"),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> StreamScores:
        scores = cls(arrays["clean"].shape[-1])
        for i, name in enumerate(str(s) for s in arrays["sequences"]):
            scores.sequences.append(name)
            scores.frames[name] = list(range(int(arrays["frames"][i])))
            for table, key in (
                (scores._clean, "clean"),
                (scores._first, "degraded_first"),
                (scores._later, "degraded_later"),
            ):
                table[name] = ConfusionMatrix(scores.num_classes)
                table[name].counts = arrays[key][i].copy()
            # scores saved before the split have "tc" only: it counts for "tc", the split stays empty
            saved = {"tc_clean": scores._tc_clean, "tc_degraded": scores._tc_degraded, "tc": scores._tc_unsplit}
            for key, table in saved.items():
                if key in arrays and arrays[key][i].any():
                    table[name] = ConfusionMatrix(scores.num_classes)
                    table[name].counts = arrays[key][i].copy()
        return scores


@dataclass(frozen=True)
class Delta:
    """mIoU(a) - mIoU(b) in points, with its 95 % bootstrap interval over sequences."""

    delta: float
    low: float
    high: float
    sequences: int

    def separated(self) -> bool:
        """True when the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return f"{self.delta:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"

    def to_dict(self) -> dict:
        return {"delta": self.delta, "low": self.low, "high": self.high, "sequences": self.sequences}


def paired_delta(
    a: StreamScores, b: StreamScores, subset: str = "all", *, resamples: int = RESAMPLES, seed: int = 0
) -> Delta:
    """mIoU(a) - mIoU(b) on `subset`, points, with a percentile interval from `resamples` bootstrap draws.

    Both must have scored the same frames of the same sequences (ValueError otherwise).
    """
    check_same_frames(a, b)
    counts_a, counts_b = a.counts(subset), b.counts(subset)
    n = len(a.sequences)
    point = 100.0 * (_statistic(counts_a, subset) - _statistic(counts_b, subset))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    deltas = np.array([_statistic(counts_a[p], subset) - _statistic(counts_b[p], subset) for p in picks]) * 100.0
    low, high = np.nanpercentile(deltas, [2.5, 97.5])
    return Delta(round(point, 2), round(float(low), 2), round(float(high), 2), n)


def miou_interval(
    scores: StreamScores, subset: str = "all", *, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95 % bootstrap interval (over sequences) of one model's mIoU on `subset`, as fractions."""
    counts = scores.counts(subset)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    values = np.array([_statistic(counts[p], subset) for p in picks])
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return round(float(low), 5), round(float(high), 5)


def check_same_frames(a: StreamScores, b: StreamScores) -> None:
    if a.sequences != b.sequences or any(a.frames[s] != b.frames[s] for s in a.sequences):
        raise ValueError("paired comparison needs both models scored on the same frames of the same sequences")
    if not a.sequences:
        raise ValueError("nothing was scored")


def pooled_delta(deltas: Iterable[Delta]) -> float:
    """Mean of several seeds' point deltas (their intervals are reported one by one)."""
    values = [d.delta for d in deltas]
    return round(float(np.mean(values)), 2)


def _statistic(counts: np.ndarray, subset: str) -> float:
    """mIoU of [sequences, C, C] counts: of their sum, or for TC the mean of the sequences' own."""
    if subset not in TC_SUBSETS:
        return _miou(counts.sum(0))
    per_sequence = [_miou(c) for c in counts if c.any()]
    return float(np.mean(per_sequence)) if per_sequence else float("nan")


def _miou(counts: np.ndarray) -> float:
    intersection = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - intersection
    valid = union > 0
    return float(np.mean(intersection[valid] / union[valid])) if valid.any() else float("nan")


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 5)
