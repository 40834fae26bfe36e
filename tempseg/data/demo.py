"""Files for users to look at: a synthetic demo video (to try the video path) and a preview grid."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.errors import UserError
from tempseg.common.io import atomic_path
from tempseg.data.frames import Frame, write_png
from tempseg.data.sources import open_source

log = logging.getLogger(__name__)


def write_synthetic_video(
    out: str | os.PathLike[str],
    *,
    frames: int = 120,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    split: str = "val",
    labels_out: str | os.PathLike[str] | None = None,
) -> float:
    """Write `frames` synthetic frames (sequence `seed` of `split` on) as an mp4v video; labels as PNGs.

    Label PNGs hold train ids (255 ignore), one per frame, named 000000.png, ... Returns the mean render
    time per frame in milliseconds.
    """
    out = Path(out)
    source = open_source("synthetic", height=height, width=width, frames=frames, seed=seed, split=split)
    render_s = 0.0
    with atomic_path(out) as tmp:
        # VideoWriter picks the container from the file name, so write to a name with the right suffix.
        named = tmp.with_name(tmp.name + out.suffix)
        writer = cv2.VideoWriter(str(named), cv2.VideoWriter.fourcc(*"mp4v"), source.fps, (width, height))
        try:
            if not writer.isOpened():
                raise UserError(f"cannot write a {out.suffix or 'suffix-less'} video with codec mp4v (try .mp4)", out)
            clock = time.perf_counter()
            for i, frame in enumerate(source):
                render_s += time.perf_counter() - clock
                writer.write(frame.image)
                if labels_out is not None:
                    if frame.label is None:  # synthetic frames are all labelled
                        raise RuntimeError(f"synthetic frame {i} has no label")
                    write_png(Path(labels_out) / f"{i:06d}.png", frame.label)
                clock = time.perf_counter()
            writer.release()
            named.replace(tmp)
        finally:
            writer.release()
            with contextlib.suppress(FileNotFoundError):
                named.unlink()
    return 1000.0 * render_s / frames


def preview_grid(frames: list[Frame], *, cell_width: int = 384) -> np.ndarray:
    """Frames side by side over their colourised labels (black where unlabelled), degradations named."""
    from tempseg.data.classes import colorize  # lazy: cityscapesscripts only where colours are drawn

    columns = []
    for frame in frames:
        h, w = frame.image.shape[:2]
        size = (cell_width, max(round(h * cell_width / w), 1))
        image = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
        label = np.zeros_like(image) if frame.label is None else colorize(frame.label)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        text = f"{frame.sequence} #{frame.index}" + (f" [{frame.degraded}]" if frame.degraded else "")
        cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        columns.append(np.concatenate([image, label], axis=0))
    return np.concatenate(columns, axis=1)


def write_preview(
    out: str | os.PathLike[str],
    *,
    source: str = "synthetic",
    count: int = 4,
    step: int = 40,
    height: int | None = 256,
    width: int | None = 512,
    seed: int = 0,
) -> None:
    """Write a PNG grid of `count` frames of `source`, `step` frames apart."""
    frames: list[Frame] = []
    with open_source(source, height=height, width=width, frames=count * step, seed=seed) as stream:
        for i, frame in enumerate(stream):
            if i % step == 0:
                frames.append(frame)
    if not frames:
        raise UserError("gave no frames", source)
    write_png(out, preview_grid(frames))
    log.info("wrote %s: %d frames of %s", out, len(frames), source)
