"""A labelled video data set as a plain folder tree, the layout for users' own footage (`folder:PATH`).

    PATH/classes.json        {"names": [...], "colors": [[r, g, b], ...], "ignore": 255,
                              optional "label_values": {"<stored value>": <train id, or 255 for ignore>},
                              optional "fps": 30}
    PATH/<split>/<sequence>/ the frames, in name order (000000.png, 000001.png, ...) or exactly one video file
    PATH/<split>/<sequence>/labels/<frame stem>.png   single-channel 8-bit masks for some frames only; for a
                                                      video, named by frame index (000123.png)

Splits are train, val and test. Stored label values are train ids (0 .. classes-1) or the ignore value unless
label_values maps them; a sequence without labels is fine (calibration, streaming). `write_synthetic_folder`
writes the synthetic sequences in this layout (lossless PNG), so the same frames can be trained from either path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.data.frames import write_png
from tempseg.data.labelled_base import (
    IGNORE,
    ImageFrames,
    LabelledDataset,
    LabelledSequence,
    PathLike,
    VideoFrames,
    check_split,
    map_values,
    natural_key,
    value_table,
    video_info,
)
from tempseg.data.streams import FALLBACK_FPS, IMAGE_SUFFIXES

CLASSES_FILE = "classes.json"
LABELS_DIR = "labels"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".mxf", ".webm", ".m4v", ".mpg", ".mpeg")


class FolderClasses:
    """classes.json read and checked: the class table and the stored value -> train id table."""

    def __init__(self, root: Path) -> None:
        path = root / CLASSES_FILE
        if not root.is_dir():
            raise UserError("no such folder dataset directory", root)
        if not path.is_file():
            raise UserError(f"missing; a folder dataset describes its classes in {CLASSES_FILE}", path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"does not read as JSON ({err})", path) from None
        if not isinstance(data, dict):
            raise UserError('expected a JSON object with "names" and "colors"', path)
        names, colors = _names(data, path), _colors(data, path)
        if len(names) != len(colors):
            raise UserError(f"{len(names)} names but {len(colors)} colors", path)
        self.ignore = _byte(data.get("ignore", IGNORE), "ignore", path)
        self.table = ClassTable(names, colors, IGNORE)
        self.mapped = data.get("label_values") is not None
        self.lut, self.allowed = value_table(self._valid_values(data, len(names), path), path)
        fps = data.get("fps")
        if fps is not None and (not isinstance(fps, int | float) or not 0 < fps < 1000):
            raise UserError(f'"fps" must be a positive number, got {fps!r}', path)
        self.fps: float | None = None if fps is None else float(fps)

    def _valid_values(self, data: Mapping[str, Any], classes: int, path: Path) -> dict[int, int]:
        """Stored value -> train id (IGNORE for the ignore value)."""
        mapping = data.get("label_values")
        if mapping is None:
            if self.ignore < classes:
                raise UserError(
                    f"ignore value {self.ignore} is also the value of class {self.ignore}; "
                    '"label_values" can map stored values to train ids',
                    path,
                )
            return {**{v: v for v in range(classes)}, self.ignore: IGNORE}
        if not isinstance(mapping, dict):
            raise UserError('"label_values" must map stored values ("7") to train ids', path)
        valid = {self.ignore: IGNORE}
        for stored, train_id in mapping.items():
            if not str(stored).isdigit() or not isinstance(train_id, int):
                raise UserError(f'"label_values" entry {stored!r}: {train_id!r} is not "<value>": <train id>', path)
            if 0 <= train_id < classes:  # a train id, even where it equals the stored ignore value
                valid[int(stored)] = train_id
            elif train_id in (self.ignore, IGNORE):
                valid[int(stored)] = IGNORE
            else:
                raise UserError(
                    f'"label_values" maps {stored} to {train_id}, neither a train id (0..{classes - 1}) '
                    f"nor ignore ({IGNORE} or {self.ignore})",
                    path,
                )
        return valid


def _names(data: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    names = data.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError('"names" must be a non-empty list of class names', path)
    return tuple(names)


def _colors(data: Mapping[str, Any], path: Path) -> tuple[tuple[int, int, int], ...]:
    colors = data.get("colors")
    if not isinstance(colors, list) or not all(isinstance(c, list) and len(c) == 3 for c in colors):
        raise UserError('"colors" must be a list of [r, g, b] triples, one per class', path)
    return tuple((_byte(r, "colors", path), _byte(g, "colors", path), _byte(b, "colors", path)) for r, g, b in colors)


def _byte(value: object, key: str, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise UserError(f'"{key}" values must be integers 0..255, got {value!r}', path)
    return value


def folder_classes(root: PathLike) -> ClassTable:
    """The classes of a folder dataset, from its classes.json alone."""
    return FolderClasses(Path(root)).table


class FolderDataset(LabelledDataset):
    """A folder tree (see the module docstring) as a LabelledDataset."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self._classes = FolderClasses(self.root)
        self.classes = self._classes.table
        self.spec = f"folder:{self.root}"
        self.fps = self._classes.fps or FALLBACK_FPS
        self._splits: dict[str, list[LabelledSequence]] = {}

    def sequences(self, split: str) -> list[LabelledSequence]:
        check_split(split, self.root)
        if split not in self._splits:
            self._splits[split] = self._find(split)
        return self._splits[split]

    def _find(self, split: str) -> list[LabelledSequence]:
        folder = self.root / split
        if not folder.is_dir():
            raise UserError(f"missing; a folder dataset holds {split}/<sequence>/ with the frames", folder)
        sequences = [self._sequence(split, d) for d in sorted(folder.iterdir(), key=natural_key) if d.is_dir()]
        if not sequences:
            raise UserError("empty split: no sequence folders", folder)
        return sequences

    def _sequence(self, split: str, folder: Path) -> LabelledSequence:
        files = [p for p in folder.iterdir() if p.is_file()]
        images = sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        name = f"{split}/{folder.name}"
        if (images and videos) or len(videos) > 1:
            raise UserError("holds both images and a video, or several videos; give one sequence per folder", folder)
        if videos:
            count, fps = video_info(videos[0])
            if count < 1:
                raise UserError("reports no frames", videos[0])
            if self._classes.fps is None and fps > 0:
                self.fps = fps  # the footage's own rate, where classes.json does not set one
            labels = self._video_labels(folder / LABELS_DIR, videos[0], count)
            return LabelledSequence(name, count, labels, VideoFrames(videos[0], count))
        if not images:
            raise UserError(f"no frames ({', '.join('*' + s for s in IMAGE_SUFFIXES)} or one video)", folder)
        labels = self._image_labels(folder / LABELS_DIR, {p.stem: i for i, p in enumerate(images)})
        return LabelledSequence(name, len(images), labels, ImageFrames(images))

    def _label_files(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for path in files:
            if path.suffix.lower() != ".png":
                raise UserError("labels are single-channel PNG masks (*.png)", path)
        return files

    def _image_labels(self, folder: Path, index_of: Mapping[str, int]) -> dict[int, Path]:
        labels = {}
        for path in self._label_files(folder):
            if path.stem not in index_of:
                raise UserError("names no frame of its sequence (a label takes its frame's file stem)", path)
            labels[index_of[path.stem]] = path
        return labels

    def _video_labels(self, folder: Path, video: Path, count: int) -> dict[int, Path]:
        labels = {}
        for path in self._label_files(folder):
            if not path.stem.isdigit():
                raise UserError("a label of a video sequence is named by its frame index (000123.png)", path)
            index = int(path.stem)
            if index >= count:
                raise UserError(f"has {count} frames, shorter than labelled frame {index} ({path.name})", video)
            labels[index] = path
        return labels

    def decode_label(self, path: Path) -> np.ndarray:
        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if values is None or values.ndim != 2 or values.dtype != np.uint8:
            raise UserError("does not read as a single-channel 8-bit PNG mask", path)
        c = self._classes
        what = f"neither train ids 0..{len(c.table) - 1} nor the ignore value {c.ignore}"
        if c.mapped:
            what = f"neither in {CLASSES_FILE}'s label_values nor the ignore value {c.ignore}"
        return map_values(values, c.lut, c.allowed, path, what)


def write_synthetic_folder(
    out: PathLike,
    *,
    split: str,
    sequences: int,
    length: int,
    label_every: int,
    first_label: int = 1,
    height: int = 256,
    width: int = 512,
) -> Path:
    """Write synthetic sequences 0..sequences-1 of `split` (the seeds training and validation render) as a folder
    dataset with the 19 Cityscapes classes: frames as lossless PNG, labels on frames first_label,
    first_label + label_every, ... only. Returns OUT."""
    from tempseg.data.classes import CLASS_NAMES, PALETTE
    from tempseg.data.synthetic import SyntheticVideo, split_seed  # lazy: only the writer renders

    check_split(split, out)
    if label_every < 1 or first_label < 0 or length < 1 or sequences < 1:
        raise ValueError("sequences, length and label_every must be >= 1 and first_label >= 0")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    classes = {"names": list(CLASS_NAMES), "colors": [list(c) for c in PALETTE], "ignore": IGNORE, "fps": 17.0}
    (root / CLASSES_FILE).write_text(json.dumps(classes, indent=1) + "\n")
    for i in range(sequences):
        # The training sampler's video: same seed, size and (default) frame rate and degradations.
        video = SyntheticVideo(split_seed(split, i), height, width, length=length)
        folder = root / split / f"{i:04d}"
        for t in range(length):
            frame = video.render(t)
            write_png(folder / f"{t:06d}.png", frame.image)
            if t >= first_label and (t - first_label) % label_every == 0 and frame.label is not None:
                write_png(folder / LABELS_DIR / f"{t:06d}.png", frame.label)
    return root
