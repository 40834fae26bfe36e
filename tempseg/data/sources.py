"""Any frame source from one spec string: synthetic video, a video file, an image folder, Cityscapes, a labelled
data set (a folder tree, CamVid), a camera.

`open_source(spec)` picks the source and wraps it in `Conformed` (data/streams.py), so every frame comes
out as HxWx3 uint8 BGR of one size. The synthetic renderer and cityscapesscripts are imported only for
their specs: this module is for the programs (the runtime's frame loop, training, calibration, bench);
the runtime library streams the frames it is given.
"""

from __future__ import annotations

import re
from pathlib import Path

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.data.camvid import camvid_classes
from tempseg.data.folder import folder_classes
from tempseg.data.frames import FrameSource, frame_size
from tempseg.data.labelled import LabelledSource, open_dataset, split_spec
from tempseg.data.streams import CameraSource, Conformed, ImageFolderSource, VideoSource

SYNTHETIC_LENGTH = 300  # frames per synthetic sequence in a stream (17.6 s at 17 fps)
SPLITS = ("train", "val", "test")
LABELLED_KINDS = ("folder:", "camvid:", "camvid32:")


def open_source(
    spec: str,
    *,
    height: int | None = None,
    width: int | None = None,
    frames: int | None = None,
    seed: int = 0,
    split: str = "val",
    sequence_length: int = SYNTHETIC_LENGTH,
    with_flow: bool = False,
) -> FrameSource:
    """Open `spec` as a stream of at most `frames` frames, conformed to height x width when both are given.
    `with_flow`: synthetic frames carry their exact backward flow (data/synthetic/flow.py); other sources ignore it.

    spec: "synthetic" (sequences `seed`, `seed`+1, ... of `split`, `sequence_length` frames each),
    "synthetic:N" (starting at sequence N),
    a video file, an image folder (sorted *.png/*.jpg/*.jpeg/*.bmp, at 30 fps), "cityscapes:PATH" or
    "cityscapes:PATH:SPLIT", a labelled data set "folder:PATH[:SPLIT]", "camvid:PATH[:SPLIT]" (11 classes) or
    "camvid32:PATH[:SPLIT]" (CamVid's own classes), or "camera:N".
    """
    frame_size(height, width)  # both or neither
    if frames is not None and frames < 1:
        raise ValueError(f"frames {frames} must be at least 1")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        index = _integer(spec.partition(":")[2], spec) if ":" in spec else seed
        from tempseg.data.synthetic import SyntheticStream  # lazy: only this spec needs the renderer

        return SyntheticStream(
            index,
            split,
            frames=frames,
            height=height or 256,
            width=width or 512,
            sequence_length=sequence_length,
            with_flow=with_flow,
        )
    if spec.startswith("cityscapes:"):
        from tempseg.data.cityscapes import cityscapes_source  # lazy: only this spec needs cityscapesscripts

        path, city_split = spec[len("cityscapes:") :], split
        head, sep, tail = path.rpartition(":")
        if sep and tail in SPLITS:
            path, city_split = head, tail
        inner = cityscapes_source(path, city_split)
    elif spec.startswith(LABELLED_KINDS):
        dataset_spec, own_split = split_spec(spec)
        inner = LabelledSource(open_dataset(dataset_spec), own_split or split)
    elif spec.startswith("camera:"):
        inner = CameraSource(_integer(spec[len("camera:") :], spec))
    else:
        path = Path(spec)
        if path.is_dir():
            inner = ImageFolderSource(path)
        elif path.is_file():
            inner = VideoSource(path)
        else:
            raise UserError("no such file or directory (expected a video, an image folder or a source spec)", spec)
    return Conformed(inner, height=height, width=width, frames=frames)


def dataset_classes(spec: str) -> ClassTable:
    """The classes a data spec labels: the 19 Cityscapes classes for synthetic video and Cityscapes, the data
    set's own table for folder and CamVid specs (read from classes.json / label_colors.txt alone)."""
    if spec == "synthetic" or spec.startswith(("synthetic:", "cityscapes:")):
        from tempseg.data.classes import CITYSCAPES  # lazy: cityscapesscripts comes with the train extra

        return CITYSCAPES
    kind, _, path = split_spec(spec)[0].partition(":")
    if kind == "folder":
        return folder_classes(path)
    if kind in ("camvid", "camvid32"):
        return camvid_classes(path, full_classes=kind == "camvid32")
    raise UserError("has no class list: it is not synthetic, cityscapes:, folder: or camvid: data", spec)


def _integer(text: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise UserError(f"expected a non-negative integer after ':', got {text!r}", spec)
    return int(text)
