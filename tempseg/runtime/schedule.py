"""Which graph runs on a frame: the keyframe schedule of a graph pair (Accel; common/contract.py roles).

A single graph runs every frame ("frame"). A pair runs its keyframe graph on the first frame, every
`every` frames after a keyframe, and on the frame after any reset (stream start, new sequence, scene cut,
--reset-every, NaN/Inf): a reset has no state to warp, so the frame after it must rebuild one. Between
keyframes the update graph runs.
"""

from __future__ import annotations

from typing import cast

from tempseg.common.contract import check_keyframe_interval

FRAME, KEYFRAME, UPDATE = "frame", "keyframe", "update"
KINDS = (FRAME, KEYFRAME, UPDATE)  # what ran on a frame: a single graph, or one of a pair


class KeyframeSchedule:
    """`next_kind()` before a frame, `ran(kind)` after it, `force()` on a reset."""

    def __init__(self, every: object, *, source: str = "--keyframe-every") -> None:
        """`every` as given (an option, a graph's metadata): UserError unless a whole number of frames, at least 1."""
        check_keyframe_interval(every, source)
        self.every = cast(int, every)  # what check_keyframe_interval has just checked
        self.since_keyframe: int | None = None  # frames run since the last keyframe, itself included

    def next_kind(self) -> str:
        if self.since_keyframe is None or self.since_keyframe >= self.every:
            return KEYFRAME
        return UPDATE

    def ran(self, kind: str) -> None:
        self.since_keyframe = 1 if kind == KEYFRAME else (self.since_keyframe or 0) + 1

    def force(self) -> None:
        """The next frame is a keyframe."""
        self.since_keyframe = None
