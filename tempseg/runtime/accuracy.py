"""Accuracy of a streamed run: mIoU of all, clean and degraded frames, per-class IoU, pixel accuracy,
FLAME and TC, with the per-sequence confusion matrices that paired comparisons resample.

What the state buys is not measured here by position in the sequence (frames since a reset are
confounded with the content of those frames), but by scoring the same frames twice, with the state
carried and with the state zeroed (`python -m tempseg.runtime --reset-every 1`, or compare's state gain).
"""

from __future__ import annotations

from tempseg.data.frames import Frame
from tempseg.metrics import LatencyAwareMIoU, StreamScores, TemporalConsistency


class AccuracyTracker:
    def __init__(self, num_classes: int, *, consistency: bool = True, max_flame_offset: int = 8) -> None:
        self.scores = StreamScores(num_classes)
        self.flame = LatencyAwareMIoU(num_classes, max_flame_offset)
        self.tc = TemporalConsistency(num_classes) if consistency else None
        self.labelled_frames = 0

    def update(self, frame: Frame, prediction) -> None:
        if frame.label is not None:
            self.scores.update(frame.sequence, frame.index, frame.degraded, prediction, frame.label)
            self.labelled_frames += 1
        self.flame.update(prediction, frame.label, frame.sequence)
        if self.tc is not None:
            flow = None
            if frame.flow_prev is not None and frame.flow_valid is not None:  # exact flow: set together, or neither
                flow = (frame.flow_prev, frame.flow_valid)
            reference = self.tc.update(frame.image, prediction, frame.sequence, flow)
            if reference is not None and frame.label is not None:
                degraded = frame.degraded is not None
                self.scores.update_consistency(frame.sequence, prediction, reference, degraded=degraded)

    def summary(self, class_names: list[str], latency_ms: float, source_fps: float) -> dict:
        out: dict = {"labelled_frames": self.labelled_frames}
        if self.labelled_frames:
            flame = self.flame.summary(latency_ms, source_fps)
            out.update(self.scores.summary(class_names))
            out.update(flame_miou=flame["flame_miou"], flame=flame)
        out["tc"] = None if self.tc is None else self.tc.value()
        out["tc_flow"] = None if self.tc is None else self.tc.flow
        return out
