"""A tiny Cityscapes tree written from synthetic video, in the real layout: what the Cityscapes reader and
training on Cityscapes are tested with, since the data set itself cannot be downloaded here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tempseg.data.cityscapes import ANNOTATED, SNIPPET, PathLike, Snippet, to_label_ids
from tempseg.data.frames import write_png
from tempseg.data.synthetic.video import SyntheticVideo


def write_cityscapes_tree(
    root: PathLike,
    *,
    split: str = "val",
    cities: Sequence[str] = ("frankfurt", "munster"),
    snippets: int = 2,
    height: int = 64,
    width: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny Cityscapes tree from synthetic video, in the real layout; returns ROOT.

    Snippet k (cities in order, then snippets) is SyntheticVideo(seed + k, height, width, length=30): its
    frame j is written as absolute frame 100 * s + j of sequence s (s = snippet index within the city),
    and frame 19's train ids as the gtFine label ids of absolute frame 100 * s + 19.
    """
    root = Path(root)
    k = 0
    for city in cities:
        for s in range(snippets):
            video = SyntheticVideo(seed + k, height, width, length=SNIPPET, sequence=f"cityscapes-synthetic/{city}/{s}")
            snippet = Snippet(city, s, 100 * s + ANNOTATED)
            for j in range(SNIPPET):
                frame = video.render(j)
                write_png(snippet.image_path(root, split, 100 * s + j), frame.image)
                if j == ANNOTATED:
                    if frame.label is None:  # synthetic frames are all labelled
                        raise RuntimeError(f"synthetic frame {j} of {video.name} has no label")
                    write_png(snippet.label_path(root, split), to_label_ids(frame.label))
            k += 1
    return root
