"""data stage: frames and labels from synthetic street video (default), Cityscapes sequences, any video.

No torch here: the runtime imports data/ on a Jetson. cityscapesscripts is imported only where
Cityscapes ids or colours are needed (data.cityscapes, data.classes; CLASS_NAMES and PALETTE load lazily).
"""

from __future__ import annotations

from typing import Any

from tempseg.data.augment import augment_clip
from tempseg.data.cityscapes import CityscapesClips, cityscapes_source, write_cityscapes_tree
from tempseg.data.frames import Frame, FrameSource
from tempseg.data.streams import open_source
from tempseg.data.synthetic import SyntheticVideo, split_seed, synthetic_split

__all__ = [
    "CLASS_NAMES",
    "PALETTE",
    "CityscapesClips",
    "Frame",
    "FrameSource",
    "SyntheticVideo",
    "augment_clip",
    "cityscapes_source",
    "open_source",
    "split_seed",
    "synthetic_split",
    "write_cityscapes_tree",
]


def __getattr__(name: str) -> Any:
    """CLASS_NAMES and PALETTE (19 RGB colours) come from cityscapesscripts, loaded on first use."""
    if name in ("CLASS_NAMES", "PALETTE"):
        from tempseg.data import classes  # lazy: cityscapesscripts is optional at runtime

        return getattr(classes, name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
