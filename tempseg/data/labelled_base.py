"""What every labelled video layout shares: sequences of frames read by index, a label file on some frames, and
the data set interface (its splits' sequences, its classes, labels decoded into checked train ids).

The layouts (data/folder.py, data/camvid.py) build on it; data/labelled.py cuts clips and streams from any of
them and opens a data set from its spec.
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError

IGNORE = 255  # the ignore value of every label read_label returns
SPLITS = ("train", "val", "test")

PathLike = str | os.PathLike[str]


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 BGR; UserError when the file does not decode."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("does not read as an image", path)
    return image


class FrameReader(abc.ABC):
    """The frames of one sequence, by index: image files, a video, or a mix (CamVid stills over its video)."""

    count: int

    @abc.abstractmethod
    def read(self, start: int, count: int) -> list[np.ndarray]:
        """Frames start .. start+count-1, HxWx3 uint8 BGR; UserError naming the file when one does not read."""

    def iterate(self) -> Iterator[np.ndarray]:
        """Every frame in order."""
        for index in range(self.count):
            yield self.read(index, 1)[0]

    def preceding(self, index: int) -> int:
        """How many consecutive frames before `index` can be read."""
        return index

    def describe_missing(self) -> str:
        """Why frames before a labelled one are missing, for the refusal of clips that need them."""
        return "it is the first frame of its sequence"


class ImageFrames(FrameReader):
    """One image file per frame."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self.count = len(self.paths)

    def read(self, start: int, count: int) -> list[np.ndarray]:
        return [read_image(self.paths[i]) for i in range(start, start + count)]


class VideoFrames(FrameReader):
    """Frames `first` .. `first`+count-1 of a video file, read with cv2.VideoCapture (seek, then decode on)."""

    def __init__(self, path: Path, count: int, first: int = 0) -> None:
        self.path, self.count, self.first = path, count, first

    def read(self, start: int, count: int) -> list[np.ndarray]:
        capture = open_video(self.path)
        try:
            if start + self.first:
                capture.set(cv2.CAP_PROP_POS_FRAMES, start + self.first)
            frames = []
            for k in range(count):
                ok, image = capture.read()
                if not ok or image is None:
                    index = self.first + start + k
                    raise UserError(f"frame {index} does not decode (the video ends earlier)", self.path)
                frames.append(image)
            return frames
        finally:
            capture.release()

    def iterate(self) -> Iterator[np.ndarray]:
        """Every frame in order, decoded once (no seek per frame)."""
        capture = open_video(self.path)
        try:
            if self.first:
                capture.set(cv2.CAP_PROP_POS_FRAMES, self.first)
            for index in range(self.count):
                ok, image = capture.read()
                if not ok or image is None:
                    raise UserError(f"frame {self.first + index} does not decode", self.path)
                yield image
        finally:
            capture.release()


def open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError("does not open as a video", path)
    return capture


def video_info(path: Path) -> tuple[int, float]:
    """(frame count as the container reports it, frames per second or 0 when unknown)."""
    capture = open_video(path)
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()


@dataclass(frozen=True)
class LabelledSequence:
    """One sequence of a split: its frames by index and the label files of the frames that have one."""

    name: str  # "<split>/<sequence>", unique
    frame_count: int
    labels: Mapping[int, Path]  # frame index -> label file (some frames only)
    frames: FrameReader = field(repr=False, compare=False)

    def read_frame(self, index: int) -> np.ndarray:
        """Frame `index`, HxWx3 uint8 BGR; UserError naming the file when it does not read."""
        return self.read_frames(index, 1)[0]

    def read_frames(self, start: int, count: int) -> list[np.ndarray]:
        """Frames start .. start+count-1 (one seek for a video)."""
        if start < 0 or start + count > self.frame_count:
            raise IndexError(f"frames {start}..{start + count - 1} outside {self.name}'s 0..{self.frame_count - 1}")
        return self.frames.read(start, count)

    def iterate(self) -> Iterator[np.ndarray]:
        """Every frame in order (a video decoded once, without a seek per frame)."""
        return self.frames.iterate()


class LabelledDataset(abc.ABC):
    """A labelled data set: its splits' sequences and its classes; labels read as checked train ids."""

    spec: str  # "folder:PATH" / "camvid:PATH"
    classes: ClassTable  # the data's classes, train-id order
    fps: float

    @abc.abstractmethod
    def sequences(self, split: str) -> list[LabelledSequence]:
        """The split's sequences in order; UserError for an unknown or empty split."""

    @abc.abstractmethod
    def decode_label(self, path: Path) -> np.ndarray:
        """A label file as HxW uint8 train ids (255 ignore); UserError naming the file for values or colours
        outside the class list."""

    def read_label(
        self, sequence: LabelledSequence, index: int, *, frame_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """The label of frame `index` as train ids, checked to be the size of its frame (`frame_size` (h, w)
        when the caller has the frame already, else the frame is read)."""
        path = sequence.labels[index]
        label = self.decode_label(path)
        if frame_size is None:
            frame_size = sequence.read_frame(index).shape[:2]
        if label.shape[:2] != frame_size:
            h, w = label.shape[:2]
            raise UserError(f"label is {w}x{h} but its frame {index} is {frame_size[1]}x{frame_size[0]}", path)
        return label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, {len(self.classes)} classes)"


def check_split(split: str, where: PathLike) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", where)


def value_table(valid: Mapping[int, int], where: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(256-entry LUT stored value -> train id, 256-entry bool: which stored values are allowed)."""
    lut = np.full(256, IGNORE, np.uint8)
    allowed = np.zeros(256, bool)
    for stored, train_id in valid.items():
        if not 0 <= stored < 256:
            raise UserError(f"stored label value {stored} is outside 0..255 (labels are 8-bit)", where)
        lut[stored], allowed[stored] = train_id, True
    return lut, allowed


def map_values(values: np.ndarray, lut: np.ndarray, allowed: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Stored 8-bit values -> train ids through `lut`; UserError naming the file and the values not `allowed`."""
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    bad = [int(v) for v in present if not allowed[v]]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        raise UserError(f"label values {shown} are {what}", path)
    return cv2.LUT(values, lut)


def natural_key(path: Path) -> tuple[object, ...]:
    """Sort key that puts frame2 before frame10."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name))
