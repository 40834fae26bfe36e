"""The calibration data reader: frames in order, each with the state the FP32 graph carried to it.

An INT8 engine sees `state_in.k` = the `state_out.k` of the frame before, never zeros except on
the first frame of a stream. Calibrating with zero states (or random ones) would give the state
tensors, and the merge that consumes them, ranges the engine never sees. So the reader runs the
FP32 graph itself, frame after frame, and feeds each frame's state outputs into the next frame.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from common.contract import Contract
from common.preprocess import normalize_bgr
from data import Frame


def image_tensor(frame: Frame, contract: Contract) -> np.ndarray:
    """The graph's `image` input for one frame: normalised as the metadata says, repeated over the batch."""
    return np.repeat(normalize_bgr(frame.image, contract.mean, contract.std), contract.batch, axis=0)


class StreamingCalibrationReader(CalibrationDataReader):
    """Feeds `frames` to ONNX Runtime's calibrators in order, with the state carried by the FP32 graph.

    A stream starts (zero states) at the first frame and wherever `Frame.sequence` changes or
    `Frame.index` is 0. `set_range` (used by quantize_static's strided collection) only moves on:
    the frames of one stream must be read in order, so a range that jumps back is an error.
    """

    def __init__(self, session: Any, contract: Contract, frames: Sequence[Frame]) -> None:
        self.session = session  # onnxruntime.InferenceSession of the FP32 graph
        self.contract = contract
        self.frames = frames
        self.position = 0  # index of the next frame to feed
        self.end = len(frames)  # one past the last frame of the current range
        self.states: dict[str, np.ndarray] = {}
        self.previous: Frame | None = None
        self.fed: list[dict[str, np.ndarray]] = []  # inputs handed out, kept only when `keep_fed`
        self.keep_fed = False  # tests inspect what was fed; calibration runs do not keep copies
        self.exhausted_at: float | None = None  # perf_counter when the last frame had been handed out

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict the next reads to frames [start_index, end_index); the stream goes on where it was."""
        if start_index != self.position:
            raise ValueError(
                f"frames are read in order: the range starts at {start_index}, the next frame is {self.position}"
            )
        self.end = min(end_index, len(self.frames))

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Inputs of the next frame (image + state_in.k), or None at the end of the range."""
        if self.position >= self.end:
            if self.position >= len(self.frames):
                self.exhausted_at = time.perf_counter()
            return None
        frame = self.frames[self.position]
        if self.previous is None or self._starts_stream(self.previous, frame):
            self.states = {s.input: np.zeros(s.shape, np.dtype(s.dtype)) for s in self.contract.states}
        feed = {self.contract.image.name: image_tensor(frame, self.contract), **self.states}
        self._advance(feed)
        self.previous = frame
        self.position += 1
        if self.keep_fed:
            self.fed.append(feed)
        return feed

    def _advance(self, feed: dict[str, np.ndarray]) -> None:
        """Run the FP32 graph on `feed` for its state outputs only, which become the next frame's state."""
        if not self.contract.states:
            return
        outputs = self.session.run([s.output for s in self.contract.states], feed)
        self.states = {s.input: value for s, value in zip(self.contract.states, outputs, strict=True)}

    @staticmethod
    def _starts_stream(previous: Frame, frame: Frame) -> bool:
        return frame.sequence != previous.sequence or frame.index == 0
