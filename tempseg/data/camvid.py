"""CamVid as distributed (`camvid:PATH`, 11 classes; `camvid32:PATH`, CamVid's own classes).

    PATH/701_StillsRaw_full/0001TP_006690.png      the labelled stills: sequence prefix, frame index in its video
                                                    (0006R0 and Seq05VD stills carry an "f": 0006R0_f00930.png)
    PATH/LabeledApproved_full/0001TP_006690_L.png  their colour labels
    PATH/label_colors.txt                           "R G B<tab>Name", one line per class (32)
    PATH/videos/0001TP.MXF (or .avi, .mp4, ...)     the original videos, for the frames before each still;
                                                    Seq05VD's video may be named 0005VD
    PATH/frames/0001TP/0001TP_006689.png            or frames extracted from them (where the user has those)
    PATH/splits/{train,val,test}.txt                optional: still names per split (SegNet's lists work as is)

Splits follow SegNet's (367/101/233): val is 0016E5 frames 7959..8159, test is 0001TP from frame 8550 on and
all of Seq05VD, train the rest. With a video, a split's stills of one sequence form sequences that start
HISTORY frames before their first still and break where stills are more than GAP frames apart; each
labelled frame is the still itself (what was annotated), the others come from the video or the extracted
frames. Without either, every still is a sequence of its own: single frames, no clips of 2 or more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.data.frames import resize_image
from tempseg.data.labelled_base import (
    IGNORE,
    FrameReader,
    LabelledDataset,
    LabelledSequence,
    PathLike,
    VideoFrames,
    check_split,
    read_image,
    video_info,
)
from tempseg.data.streams import FALLBACK_FPS

STILLS = "701_StillsRaw_full"
LABELS = "LabeledApproved_full"
LABEL_COLORS = "label_colors.txt"
VIDEOS = "videos"
FRAMES = "frames"
SPLIT_LISTS = "splits"
VIDEO_SUFFIXES = (".mxf", ".avi", ".mp4", ".mov", ".mkv", ".m4v")
VIDEO_ALIASES = {"Seq05VD": "0005VD"}  # the video CamVid's site lists for the Seq05VD stills
HISTORY = 30  # frames a sequence starts before its first still (1 s at CamVid's 30 fps)
GAP = 60  # stills further apart than this start a new sequence (stills are 30 or 2 frames apart)
VOID = "Void"
# The 11 classes most papers score (SegNet's order), each with the CamVid class it is; the other 21 are ignored.
ELEVEN = (
    ("Sky", "Sky"),
    ("Building", "Building"),
    ("Pole", "Column_Pole"),
    ("Road", "Road"),
    ("Sidewalk", "Sidewalk"),
    ("Tree", "Tree"),
    ("SignSymbol", "SignSymbol"),
    ("Fence", "Fence"),
    ("Car", "Car"),
    ("Pedestrian", "Pedestrian"),
    ("Bicyclist", "Bicyclist"),
)
_STILL = re.compile(r"^(?P<prefix>[0-9A-Za-z]+?)_f?(?P<index>\d+)$")

RGB = tuple[int, int, int]


def default_split(prefix: str, index: int) -> str:
    """SegNet's CamVid split of the still `index` of sequence `prefix`."""
    if prefix == "0016E5" and 7959 <= index <= 8159:
        return "val"
    if prefix == "Seq05VD" or (prefix == "0001TP" and index >= 8550):
        return "test"
    return "train"


def read_label_colors(root: Path) -> list[tuple[RGB, str]]:
    """label_colors.txt as ((r, g, b), name) in file order; UserError naming the file and the bad line."""
    path = root / LABEL_COLORS
    if not path.is_file():
        raise UserError(f"missing; CamVid's class colours come in {LABEL_COLORS} (lines 'R G B<tab>Name')", path)
    entries = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=3)
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts[:3]):
            raise UserError(f"line {number} is not 'R G B<tab>Name': {line.strip()!r}", path)
        entries.append(((int(parts[0]), int(parts[1]), int(parts[2])), parts[3].strip()))
    if not entries:
        raise UserError("lists no classes", path)
    return entries


def _tables(root: Path, full_classes: bool) -> tuple[ClassTable, dict[RGB, int]]:
    """(the class table, label colour -> train id or IGNORE for every colour label_colors.txt lists)."""
    entries = read_label_colors(root)
    by_name = {name: color for color, name in entries}
    if full_classes:
        kept = [(name, color) for color, name in entries if name != VOID]
        names = tuple(name for name, _ in kept)
        palette = tuple(color for _, color in kept)
    else:
        missing = [source for _, source in ELEVEN if source not in by_name]
        if missing:
            raise UserError(f"lacks the classes {', '.join(missing)} of CamVid's 11", root / LABEL_COLORS)
        names = tuple(name for name, _ in ELEVEN)
        palette = tuple(by_name[source] for _, source in ELEVEN)
    train_id = {color: i for i, color in enumerate(palette)}
    return ClassTable(names, palette, IGNORE), {color: train_id.get(color, IGNORE) for color, _ in entries}


def camvid_classes(root: PathLike, *, full_classes: bool = False) -> ClassTable:
    """CamVid's class table from label_colors.txt alone: the 11 scored classes, or all but Void."""
    return _tables(Path(root), full_classes)[0]


@dataclass(frozen=True)
class Still:
    prefix: str  # the sequence: 0001TP, 0006R0, 0016E5, Seq05VD
    index: int  # frame index in the sequence's video
    image: Path
    label: Path


class CamVidFrames(FrameReader):
    """Frames first .. first+count-1 of one CamVid sequence: the stills where there are stills, else the video
    or the extracted frames, resized to the stills' size where they differ."""

    def __init__(
        self, root: Path, prefix: str, first: int, count: int, stills: Mapping[int, Path], video: Path | None
    ) -> None:
        self.root, self.prefix, self.first, self.count = root, prefix, first, count
        self.stills = dict(stills)  # local index -> still
        self.video = None if video is None else VideoFrames(video, count, first)
        self.frames_dir = root / FRAMES / prefix
        self._size: tuple[int, int] | None = None

    def _frame_path(self, local: int) -> Path:
        return self.frames_dir / f"{self.prefix}_{self.first + local:06d}.png"

    def read(self, start: int, count: int) -> list[np.ndarray]:
        if self.video is not None:
            frames = self.video.read(start, count)
        else:
            frames = [
                read_image(self._source(i)) if i not in self.stills else None for i in range(start, start + count)
            ]
        return [self._pick(start + k, f) for k, f in enumerate(frames)]

    def iterate(self) -> Iterator[np.ndarray]:
        if self.video is None:
            yield from super().iterate()
            return
        for local, image in enumerate(self.video.iterate()):
            yield self._pick(local, image)

    def _pick(self, local: int, decoded: np.ndarray | None) -> np.ndarray:
        if local in self.stills:
            return read_image(self.stills[local])
        if decoded is None:  # unreachable: only stills are skipped
            raise RuntimeError(f"frame {local} of {self.prefix} was not decoded")
        size = self._still_size()
        return decoded if decoded.shape[:2] == size else resize_image(decoded, *size)

    def _source(self, local: int) -> Path:
        path = self._frame_path(local)
        if not path.is_file():
            raise UserError(f"missing extracted frame {self.first + local} of {self.prefix}", path)
        return path

    def _still_size(self) -> tuple[int, int]:
        if self._size is None:
            height, width = read_image(next(iter(self.stills.values()))).shape[:2]
            self._size = (height, width)
        return self._size

    def preceding(self, index: int) -> int:
        if self.video is not None:
            return index
        n = 0
        while n < index and (index - n - 1 in self.stills or self._frame_path(index - n - 1).is_file()):
            n += 1
        return n

    def describe_missing(self) -> str:
        if self.video is not None:
            return "the video starts there"
        return (
            f"put {self.prefix}'s video in {self.root / VIDEOS}/{self.prefix}.MXF (or .avi, .mp4) or its frames "
            f"as {self.frames_dir}/{self.prefix}_NNNNNN.png"
        )


class CamVidDataset(LabelledDataset):
    """CamVid as distributed (see the module docstring) as a LabelledDataset."""

    def __init__(self, root: PathLike, *, full_classes: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError("no such CamVid directory", self.root)
        self.classes, self._train_id = _tables(self.root, full_classes)
        self._codes = {(r << 16) | (g << 8) | b: i for (r, g, b), i in self._train_id.items()}
        self.spec = f"{'camvid32' if full_classes else 'camvid'}:{self.root}"
        self._videos = self._find_videos()
        self.fps = FALLBACK_FPS
        for video in self._videos.values():
            fps = video_info(video)[1]
            if fps > 0:
                self.fps = fps  # CamVid's videos are 30 fps (29.97)
                break
        self._stills: list[Still] | None = None
        self._splits: dict[str, list[LabelledSequence]] = {}

    def _find_videos(self) -> dict[str, Path]:
        folder = self.root / VIDEOS
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES}

    def _video(self, prefix: str) -> Path | None:
        return self._videos.get(prefix) or self._videos.get(VIDEO_ALIASES.get(prefix, prefix))

    def stills(self) -> list[Still]:
        """Every labelled still, sorted by sequence and index; UserError for a still without its label."""
        if self._stills is None:
            folder = self.root / STILLS
            if not folder.is_dir():
                raise UserError("missing; CamVid's labelled stills (701_StillsRaw_full.zip) unpack here", folder)
            stills = []
            for path in sorted(folder.glob("*.png")):
                m = _STILL.match(path.stem)
                if m is None:
                    continue
                label = self.root / LABELS / f"{path.stem}_L.png"
                if not label.is_file():
                    raise UserError(f"missing: the colour label of still {path.name}", label)
                stills.append(Still(m["prefix"], int(m["index"]), path, label))
            if not stills:
                raise UserError("no stills named like 0001TP_006690.png", folder)
            self._stills = sorted(stills, key=lambda s: (s.prefix, s.index))
        return self._stills

    def _split_of(self) -> dict[str, str]:
        """Still stem -> split: from splits/*.txt where the user gives them, else SegNet's split."""
        lists = {s: self.root / SPLIT_LISTS / f"{s}.txt" for s in ("train", "val", "test")}
        if not any(p.is_file() for p in lists.values()):
            return {s.image.stem: default_split(s.prefix, s.index) for s in self.stills()}
        split_of = {}
        for split, path in lists.items():
            lines = path.read_text().splitlines() if path.is_file() else []
            for line in lines:
                if line.strip():
                    split_of[Path(line.split()[0]).stem] = split  # a still name, a path, or SegNet's "img label"
        return split_of

    def sequences(self, split: str) -> list[LabelledSequence]:
        check_split(split, self.root)
        if split not in self._splits:
            split_of = self._split_of()
            chosen = [s for s in self.stills() if split_of.get(s.image.stem) == split]
            if not chosen:
                raise UserError(f"empty split: no stills of {split!r} in {STILLS}", self.root)
            self._splits[split] = [seq for group in _groups(chosen) for seq in self._sequences(split, group)]
        return self._splits[split]

    def _sequences(self, split: str, group: list[Still]) -> list[LabelledSequence]:
        prefix = group[0].prefix
        video = self._video(prefix)
        if video is None and not (self.root / FRAMES / prefix).is_dir():
            # Stills alone: each one a sequence of one frame.
            return [
                LabelledSequence(
                    f"{split}/{s.image.stem}",
                    1,
                    {0: s.label},
                    CamVidFrames(self.root, prefix, s.index, 1, {0: s.image}, None),
                )
                for s in group
            ]
        first = max(0, group[0].index - HISTORY)
        count = group[-1].index - first + 1
        if video is not None:
            length = video_info(video)[0]
            if group[-1].index >= length:
                raise UserError(
                    f"has {length} frames, shorter than still {group[-1].image.name}'s index {group[-1].index}", video
                )
        stills = {s.index - first: s.image for s in group}
        labels = {s.index - first: s.label for s in group}
        frames = CamVidFrames(self.root, prefix, first, count, stills, video)
        return [LabelledSequence(f"{split}/{prefix}_{group[0].index:06d}", count, labels, frames)]

    def decode_label(self, path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError("does not read as a colour label image", path)
        b, g, r = (image[..., k].astype(np.int32) for k in range(3))
        codes, inverse = np.unique((r << 16) | (g << 8) | b, return_inverse=True)
        table = np.empty(len(codes), np.uint8)
        for k, code in enumerate(codes.tolist()):
            if code not in self._codes:
                rgb = (code >> 16, (code >> 8) & 255, code & 255)
                raise UserError(f"colour {rgb} (RGB) is not in {LABEL_COLORS}", path)
            table[k] = self._codes[code]
        return table[inverse.reshape(image.shape[:2])]


def _groups(stills: list[Still]) -> Iterator[list[Still]]:
    """Stills of one sequence no more than GAP frames apart, in order."""
    group: list[Still] = []
    for still in stills:
        if group and (still.prefix != group[-1].prefix or still.index - group[-1].index > GAP):
            yield group
            group = []
        group.append(still)
    if group:
        yield group
