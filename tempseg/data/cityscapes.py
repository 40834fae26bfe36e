"""Cityscapes video snippets for users who have the dataset (leftImg8bit_sequence + gtFine).

Layout (frame numbers are absolute; each 30-frame snippet is annotated on its 20th frame, index 19):

    ROOT/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Label ids become train ids through a 256-entry table built from cityscapesscripts (imported lazily,
so streams of other sources need no cityscapesscripts). `write_cityscapes_tree` writes a tiny tree in
this layout from the synthetic generator, for tests.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.errors import UserError
from tempseg.data.frames import Frame, FrameSource, check_clip, frame_size, resize_image, resize_label

SNIPPET = 30  # frames per snippet
ANNOTATED = 19  # index of the annotated frame within its snippet
FPS = 17.0
_GT = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")

PathLike = str | os.PathLike[str]


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(label id -> train id, train id -> label id), 256 entries each; unknown ids map to ignore / unlabeled."""
    from cityscapesscripts.helpers.labels import labels, trainId2label  # lazy: only Cityscapes needs it

    to_train = np.full(256, 255, np.uint8)
    for lab in labels:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 255:
            to_train[lab.id] = lab.trainId
    to_ids = np.full(256, trainId2label[255].id, np.uint8)
    for train_id in range(19):
        to_ids[train_id] = trainId2label[train_id].id
    return to_train, to_ids


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (uint8) -> train ids, 255 for classes not trained on."""
    return cv2.LUT(label_ids, _tables()[0])


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids (uint8, 255 ignore) -> Cityscapes label ids (ignore -> 0, 'unlabeled')."""
    return cv2.LUT(train_ids, _tables()[1])


@dataclass(frozen=True)
class Snippet:
    """One annotated snippet: its city, sequence number and the absolute number of its annotated frame."""

    city: str
    seq: int
    frame: int

    @property
    def name(self) -> str:
        return f"{self.city}_{self.seq:06d}_{self.frame:06d}"

    def image_path(self, root: Path, split: str, frame: int) -> Path:
        """Path of absolute frame `frame` of this snippet's sequence."""
        return (
            root
            / "leftImg8bit_sequence"
            / split
            / self.city
            / f"{self.city}_{self.seq:06d}_{frame:06d}_leftImg8bit.png"
        )

    def label_path(self, root: Path, split: str) -> Path:
        return root / "gtFine" / split / self.city / f"{self.name}_gtFine_labelIds.png"


def find_snippets(root: PathLike, split: str) -> list[Snippet]:
    """All annotated snippets of a split, sorted; UserError when the tree or the split is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("no such Cityscapes directory", root)
    for sub in ("gtFine", "leftImg8bit_sequence"):
        if not (root / sub / split).is_dir():
            raise UserError(f"missing; a Cityscapes root holds {sub}/{split}/<city>/", root / sub / split)
    snippets = []
    for path in sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png")):
        m = _GT.match(path.name)
        if m and m["city"] == path.parent.name:
            snippets.append(Snippet(m["city"], int(m["seq"]), int(m["frame"])))
    if not snippets:
        raise UserError("no *_gtFine_labelIds.png files in any city folder", root / "gtFine" / split)
    return snippets


def _require(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise UserError("missing Cityscapes file", path)


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 BGR; UserError when the file does not decode."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("does not read as an image", path)
    return image


def read_label(path: Path) -> np.ndarray:
    """A *_labelIds.png as train ids; UserError when it does not decode as a one-channel 8-bit image."""
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ids is None or ids.ndim != 2 or ids.dtype != np.uint8:
        raise UserError("does not read as an 8-bit label-id image", path)
    return to_train_ids(ids)


class CityscapesClips:
    """One item per annotated frame t: (the `clip_length` frames ending at t - target_offset, label of t).

    target_offset=k trains the latency-aware (FLAME) target: inputs t-k-clip_length+1 .. t-k, label of t.
    Frames are resized to height x width when both are given (labels by nearest neighbour).
    """

    def __init__(
        self,
        root: PathLike,
        split: str,
        *,
        clip_length: int = 2,
        target_offset: int = 0,
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        check_clip(clip_length, target_offset)
        if target_offset + clip_length - 1 > ANNOTATED:
            raise ValueError(
                f"target_offset + clip_length - 1 must be <= {ANNOTATED}: a snippet starts 19 frames early"
            )
        self.root, self.split = Path(root), split
        self.clip_length, self.target_offset = clip_length, target_offset
        self.size = frame_size(height, width)
        self.snippets = find_snippets(self.root, split)
        for snippet in self.snippets:
            _require(self._frame_paths(snippet))

    def _frame_paths(self, snippet: Snippet) -> list[Path]:
        last = snippet.frame - self.target_offset
        frames = range(last - self.clip_length + 1, last + 1)
        return [snippet.image_path(self.root, self.split, f) for f in frames]

    def __len__(self) -> int:
        return len(self.snippets)

    def __getitem__(self, index: int) -> tuple[list[np.ndarray], np.ndarray]:
        snippet = self.snippets[index]
        frames = [read_image(p) for p in self._frame_paths(snippet)]
        label = read_label(snippet.label_path(self.root, self.split))
        if self.size is not None:
            frames = [resize_image(f, *self.size) for f in frames]
            label = resize_label(label, *self.size)
        return frames, label


class CityscapesSource(FrameSource):
    """Every snippet's 30 frames in order; the label only on the annotated frame (index 19), None elsewhere."""

    def __init__(self, root: PathLike, split: str, *, height: int | None = None, width: int | None = None) -> None:
        self.root, self.split = Path(root), split
        self.size = frame_size(height, width)
        self.snippets = find_snippets(self.root, split)
        for snippet in self.snippets:
            _require([*self._frame_paths(snippet)])
        self.fps = FPS
        self.length = SNIPPET * len(self.snippets)
        self.name = f"cityscapes:{self.root}:{split}"

    def _frame_paths(self, snippet: Snippet) -> Iterator[Path]:
        first = snippet.frame - ANNOTATED
        return (snippet.image_path(self.root, self.split, first + k) for k in range(SNIPPET))

    def __iter__(self) -> Iterator[Frame]:
        for snippet in self.snippets:
            sequence = f"cityscapes/{self.split}/{snippet.name}"
            for k, path in enumerate(self._frame_paths(snippet)):
                image = read_image(path)
                label = read_label(snippet.label_path(self.root, self.split)) if k == ANNOTATED else None
                if self.size is not None:
                    image = resize_image(image, *self.size)
                    label = None if label is None else resize_label(label, *self.size)
                yield Frame(image=image, label=label, index=k, sequence=sequence)


def cityscapes_source(
    root: PathLike, split: str, *, height: int | None = None, width: int | None = None
) -> FrameSource:
    """Stream a split's snippets frame by frame at 17 fps (see CityscapesSource)."""
    return CityscapesSource(root, split, height=height, width=width)
