"""Where calibration and evaluation frames come from, checked before any inference runs.

Calibration and the accuracy report never share a sequence: the report streams the first
synthetic val sequences (as training's validation and export's parity do), calibration takes
val sequences from CALIB_FIRST_INDEX on. Labelled data (a folder tree, CamVid, Cityscapes), whose
val split the report scores, calibrates on its train split unless the spec names a split.
"""

from __future__ import annotations

from collections.abc import Iterable

from tempseg.calibration.config import labelled_data
from tempseg.common.errors import UserError
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.data.synthetic import SyntheticVideo, split_seed

SYNTHETIC = "synthetic"
CALIB_SPLIT = "val"
CALIB_FIRST_INDEX = 500_000  # val sequences [500000, ...) calibrate; [0, eval_sequences) are held out


def calibration_frames(
    spec: str, *, count: int, height: int, width: int, seed: int, sequence_length: int
) -> list[Frame]:
    """`count` frames in stream order; synthetic: sequences of `sequence_length` frames (the last one shorter)."""
    if spec == SYNTHETIC:
        frames: list[Frame] = []
        index = CALIB_FIRST_INDEX + seed
        while len(frames) < count:
            length = min(sequence_length, count - len(frames))
            name = f"synthetic/{CALIB_SPLIT}/{index}"
            frames += list(SyntheticVideo(split_seed(CALIB_SPLIT, index), height, width, length=length, sequence=name))
            index += 1
        return frames
    split = "train" if labelled_data(spec) else CALIB_SPLIT  # labelled data: its val split is the held-out one
    with open_source(spec, height=height, width=width, frames=count, seed=seed, split=split) as source:
        return take_frames(source, count, height=height, width=width, source=spec)


def eval_sequences(count: int, frames: int, *, height: int, width: int) -> list[list[Frame]]:
    """The first `count` labelled synthetic val sequences, `frames` frames each."""
    return [
        list(SyntheticVideo(split_seed("val", i), height, width, length=frames, sequence=f"synthetic/val/{i}"))
        for i in range(count)
    ]


def take_frames(frames: Iterable[Frame], count: int, *, height: int, width: int, source: str) -> list[Frame]:
    """The first `count` frames; UserError naming `source` if it has fewer, or one is not height x width."""
    taken: list[Frame] = []
    for frame in frames:
        if frame.image.shape != (height, width, 3):
            raise UserError(
                f"frame {len(taken)} ({frame.sequence} #{frame.index}) is {'x'.join(map(str, frame.image.shape))}, "
                f"the graph takes {height}x{width}x3 and this source cannot be resized to it",
                source,
            )
        taken.append(frame)
        if len(taken) == count:
            return taken
    raise UserError(f"{len(taken)} frames available, {count} asked for calibration (--frames)", source)
