"""The calibration data reader: frames in order, each with the state the FP32 graph carried to it.

An INT8 engine sees `state_in.k` = the `state_out.k` of the frame before, never zeros except on
the first frame of a stream. Calibrating with zero states (or random ones) would give the state
tensors, and the merge that consumes them, ranges the engine never sees. So the reader streams the
FP32 graph through the runtime's own runner and stream (runtime/stream.py), frame after frame, and
hands ONNX Runtime's calibrators what each frame read: its image and the state carried to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from tempseg.data.frames import Frame
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.stream import StreamStep, stream


class StreamingCalibrationReader(CalibrationDataReader):
    """Feeds `frames` to ONNX Runtime's calibrators in order, with the state carried by the FP32 graph.

    `runner`: an active runner of the FP32 graph (runtime/backends/ort_runner.py). A stream starts
    (zero states) at the first frame and wherever `Frame.sequence` changes. `set_range` (used by
    quantize_static's strided collection) only moves on: the frames of one stream must be read in
    order, so a range that jumps back is an error.
    """

    def __init__(self, runner: Runner, frames: Sequence[Frame]) -> None:
        self.runner = runner
        self.frames = frames
        self.position = 0  # index of the next frame to feed
        self.end = len(frames)  # one past the last frame of the current range
        self._steps: Iterator[StreamStep] = stream(runner, frames, capture_inputs=True)
        self.states: dict[str, np.ndarray] = {}  # the state inputs of the frame fed last
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
        feed = next(self._steps).inputs
        if feed is None:  # stream(capture_inputs=True) copies every frame's inputs
            raise RuntimeError("the stream handed over a frame without its inputs")
        self.states = {k: v for k, v in feed.items() if k != self.runner.contract.image.name}
        self.position += 1
        if self.keep_fed:
            self.fed.append(feed)
        return feed
