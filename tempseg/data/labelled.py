"""Labelled video of any layout: sequences of frames with a label on some of them, as training, validation and
the frame loop read it.

A layout (data/folder.py: a plain folder tree, `folder:PATH`; data/camvid.py: CamVid as distributed,
`camvid:PATH`) lists a split's `LabelledSequence`s and decodes its label files into train ids
(data/labelled_base.py holds what they share); `open_dataset(spec)` opens either. The rest is common:
`LabelledClips` cuts training clips that end on labelled frames, `LabelledSource` streams a split frame by
frame. Labels come out as HxW uint8 train ids with 255 for ignore, whatever value the files store for it,
checked against the class list and against their frame's size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tempseg.common.errors import UserError
from tempseg.data.camvid import CamVidDataset
from tempseg.data.folder import FolderDataset
from tempseg.data.frames import Frame, FrameSource, check_clip, frame_size, resize_image, resize_label
from tempseg.data.labelled_base import IGNORE, SPLITS, LabelledDataset, LabelledSequence

__all__ = [
    "IGNORE",
    "SPLITS",
    "LabelledClips",
    "LabelledDataset",
    "LabelledSequence",
    "LabelledSource",
    "open_dataset",
    "split_spec",
]

KINDS = ("folder", "camvid", "camvid32")


def split_spec(spec: str) -> tuple[str, str | None]:
    """("kind:PATH", SPLIT) of "kind:PATH:SPLIT"; (spec, None) where no split ends it."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in SPLITS and ":" in head:
        return head, tail
    return spec, None


def open_dataset(spec: str) -> LabelledDataset:
    """The labelled data set of "folder:PATH", "camvid:PATH" (the 11 classes papers score) or "camvid32:PATH"
    (CamVid's own classes, Void ignored); a trailing ":SPLIT" is dropped (a split is chosen per read)."""
    kind, _, path = split_spec(spec)[0].partition(":")
    if kind == "folder":
        return FolderDataset(path)
    if kind in ("camvid", "camvid32"):
        return CamVidDataset(path, full_classes=kind == "camvid32")
    raise UserError(f"not a labelled data set; expected {', '.join(k + ':PATH' for k in KINDS)}", spec)


class LabelledClips:
    """One item per labelled frame t of a split: (frames t-target_offset-clip_length+1 .. t-target_offset, label of t).

    Frames are resized to height x width when both are given (labels by nearest neighbour). A labelled frame
    with too few frames before it for clip_length + target_offset is refused here, naming its label file.
    """

    def __init__(
        self,
        dataset: LabelledDataset,
        split: str,
        *,
        clip_length: int = 2,
        target_offset: int = 0,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        check_clip(clip_length, target_offset)
        self.dataset, self.split = dataset, split
        self.clip_length, self.target_offset = clip_length, target_offset
        self.size = frame_size(height, width)
        self.items: list[tuple[LabelledSequence, int]] = []
        for sequence in dataset.sequences(split):
            for index in sorted(sequence.labels):
                self._check_history(sequence, index)
                self.items.append((sequence, index))
        if not self.items:
            raise UserError(f"no labelled frames in split {split!r}", dataset.spec)

    def _check_history(self, sequence: LabelledSequence, index: int) -> None:
        needed = self.clip_length + self.target_offset - 1
        has = sequence.frames.preceding(index) if needed else 0
        if has < needed:
            why = sequence.frames.describe_missing()
            raise UserError(
                f"labelled frame {index} of {sequence.name} needs {needed} preceding frames for clips of "
                f"{self.clip_length} + target offset {self.target_offset}, has {has} ({why})",
                sequence.labels[index],
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[np.ndarray], np.ndarray]:
        sequence, index = self.items[i]
        last = index - self.target_offset
        frames = sequence.read_frames(last - self.clip_length + 1, self.clip_length)
        size = frames[-1].shape[:2] if self.target_offset == 0 else None  # the labelled frame is in the clip
        label = self.dataset.read_label(sequence, index, frame_size=size)
        if self.size is not None:
            frames = [resize_image(f, *self.size) for f in frames]
            label = resize_label(label, *self.size)
        return frames, label


class LabelledSource(FrameSource):
    """Every sequence of a split in order, frame by frame; the label on labelled frames, None elsewhere."""

    def __init__(
        self, dataset: LabelledDataset, split: str, *, height: int | None = None, width: int | None = None
    ) -> None:
        self.dataset, self.split = dataset, split
        self.size = frame_size(height, width)
        self.sequences = dataset.sequences(split)
        self.fps = dataset.fps
        self.length = sum(s.frame_count for s in self.sequences)
        self.name = f"{dataset.spec}:{split}"

    def __iter__(self) -> Iterator[Frame]:
        for sequence in self.sequences:
            for index, image in enumerate(sequence.iterate()):
                label = None
                if index in sequence.labels:
                    label = self.dataset.read_label(sequence, index, frame_size=image.shape[:2])
                if self.size is not None:
                    image = resize_image(image, *self.size)
                    label = None if label is None else resize_label(label, *self.size)
                yield Frame(image=image, label=label, index=index, sequence=sequence.name)
