"""When to zero the state: stream start, sequence change, every N frames, scene cut, NaN/Inf."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)
THUMB = (64, 32)  # width, height of the grayscale thumbnail compared for scene cuts


@dataclass(frozen=True)
class StatePolicy:
    """reset_every: zero the state every N frames (None: never).
    scene_cut: mean absolute grayscale difference (0..1) between consecutive frames, at 64x32,
        above which a frame counts as a scene cut (None: no test, the default). 0.25 leaves camera
        motion alone and catches cuts between unrelated shots in edited video; off by default because
        a road camera has no cuts, and a dropped, black or glared frame looks like one: the test would
        zero the state on exactly the frames where the previous frame is all a temporal model has.
    """

    reset_every: int | None = None
    scene_cut: float | None = None


class ResetTracker:
    """Decides per frame whether the state must be zeroed, and counts resets by reason.

    frames_since_reset: frames run on the current state since it was last zeroed; 0 while the next frame
    is the first on a zero state, whichever reset zeroed it (before a frame, or after one for NaN/Inf).
    Per frame: before_frame(), run it, after_frame(), then non_finite() if the new state is not finite.
    """

    def __init__(self, policy: StatePolicy) -> None:
        self.policy = policy
        self.counts = {"start": 0, "sequence": 0, "every_n": 0, "scene_cut": 0, "non_finite": 0}
        self.frames_since_reset = 0
        self._sequence: str | None = None
        self._thumb = np.zeros(THUMB[::-1], np.uint8)
        self._previous = np.zeros(THUMB[::-1], np.uint8)
        self._small = np.zeros((*THUMB[::-1], 3), np.uint8)
        self._started = False

    def before_frame(self, image: np.ndarray, sequence: str) -> str | None:
        """The reason to reset before running this frame, or None."""
        reason = self._reason(image, sequence)
        self._sequence = sequence
        if reason:
            self.counts[reason] += 1
            self.frames_since_reset = 0
        return reason

    def after_frame(self) -> None:
        self.frames_since_reset += 1

    def non_finite(self, frame_index: int) -> None:
        """The state produced at `frame_index` holds NaN/Inf and was zeroed: count it, warn, and restart
        the count (called after after_frame(): the next frame is the first on a zero state)."""
        self.counts["non_finite"] += 1
        self.frames_since_reset = 0
        log.warning("frame %d: the state holds NaN/Inf; resetting it to zeros", frame_index)

    def _reason(self, image: np.ndarray, sequence: str) -> str | None:
        cut = self._is_scene_cut(image)
        if not self._started:
            self._started = True
            return "start"
        if sequence != self._sequence:
            return "sequence"
        if self.policy.reset_every and self.frames_since_reset >= self.policy.reset_every:
            return "every_n"
        return "scene_cut" if cut else None

    def _is_scene_cut(self, image: np.ndarray) -> bool:
        if self.policy.scene_cut is None:
            return False
        self._previous, self._thumb = self._thumb, self._previous
        cv2.resize(image, THUMB, dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._thumb)
        if not self._started:
            return False
        return (
            float(cv2.norm(self._thumb, self._previous, cv2.NORM_L1)) / (255.0 * self._thumb.size)
            > self.policy.scene_cut
        )
