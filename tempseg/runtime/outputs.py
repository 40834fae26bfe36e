"""Optional outputs of a run: overlay video, overlay PNG frames, raw label maps (PNG of class ids).

The overlay names what it shows, as jetson-inference's segNet does: a legend of the graph's classes (names and
colours from its metadata) and each frame's latency.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.errors import UserError
from tempseg.data.frames import Frame


def palette_lut(palette: tuple[tuple[int, int, int], ...], num_classes: int) -> np.ndarray:
    """256x1 BGR lookup table for cv2.LUT: class id -> colour (unknown ids black)."""
    lut = np.zeros((256, 1, 3), np.uint8)
    colours = palette or _fallback_palette(num_classes)
    for index, (r, g, b) in enumerate(colours[:256]):
        lut[index, 0] = (b, g, r)
    return lut


def _fallback_palette(num_classes: int) -> list[tuple[int, int, int]]:
    hues = np.linspace(0, 179, num_classes, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=-1)[None]
    return [(int(r), int(g), int(b)) for r, g, b in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]]


FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_COLOUR = (255, 255, 255)
MIN_FONT_SCALE = 0.3  # Hershey text below this is unreadable
LEGEND_SHARE = 0.5  # the legend takes at most this share of the overlay's width: the scene stays visible
PAD = 2


def font_scale(width: int) -> float:
    """0.5 at 512 pixels wide and more, down to MIN_FONT_SCALE for small overlays."""
    return min(0.5, max(MIN_FONT_SCALE, width / 1024))


@dataclass(frozen=True)
class Legend:
    """The class legend, drawn once: `ink` marks the pixels of `patch` pasted at (x, y) on every frame;
    the rest of its box is darkened so that the names read on any scene."""

    x: int
    y: int
    patch: np.ndarray  # h x w x 3 BGR
    ink: np.ndarray  # h x w x 1 bool
    names_shown: bool  # False: colour swatches alone (the names do not fit)


def build_legend(names: Sequence[str], lut: np.ndarray, height: int, width: int) -> Legend | None:
    """A legend of `names` (class i in lut[i]'s colour) at the top right of a height x width overlay.

    Names in as many columns as the height needs, when they fit in LEGEND_SHARE of the width; else a strip
    of colour swatches alone down the right edge (at 64x128, 11 classes); None when even 2-pixel swatches
    do not fit (more classes than half the height), the labels are then coloured without a key.
    """
    colours = [tuple(int(c) for c in lut[i, 0]) for i in range(min(len(names), len(lut)))]
    if not colours:
        return None
    for scale in dict.fromkeys((font_scale(width), MIN_FONT_SCALE)):  # this width's text, then the smallest
        named = _named_legend(names[: len(colours)], colours, height, width, scale)
        if named is not None:
            return named
    return _swatch_legend(colours, height, width)


def _named_legend(
    names: Sequence[str], colours: list[tuple[int, ...]], height: int, width: int, scale: float
) -> Legend | None:
    text_h = max(cv2.getTextSize(name, FONT, scale, 1)[0][1] for name in names)
    row = text_h + 2 * PAD + 1
    rows = (height - 2 * PAD) // row
    if rows < 1:
        return None
    columns = math.ceil(len(names) / rows)
    rows = math.ceil(len(names) / columns)
    swatch = text_h + 1
    entry = swatch + 3 + max(cv2.getTextSize(name, FONT, scale, 1)[0][0] for name in names) + 2 * PAD
    w, h = columns * entry + PAD, rows * row + PAD
    if w > width * LEGEND_SHARE or h > height:
        return None
    patch = np.zeros((h, w, 3), np.uint8)
    swatches = np.zeros((h, w, 1), bool)
    for index, (name, colour) in enumerate(zip(names, colours, strict=True)):
        x, y = PAD + (index // rows) * entry, PAD + (index % rows) * row
        patch[y : y + swatch, x : x + swatch] = colour
        swatches[y : y + swatch, x : x + swatch] = True  # a black class is still a swatch, not background
        cv2.putText(patch, name, (x + swatch + 3, y + text_h), FONT, scale, TEXT_COLOUR, 1, cv2.LINE_AA)
    return Legend(width - w, 0, patch, swatches | patch.any(axis=2, keepdims=True), names_shown=True)


def _swatch_legend(colours: list[tuple[int, ...]], height: int, width: int) -> Legend | None:
    cell = min(8, (height - 2 * PAD) // len(colours))
    if cell < 2:
        return None
    patch = np.zeros((len(colours) * cell + 2 * PAD, cell + 2 * PAD, 3), np.uint8)
    ink = np.zeros((*patch.shape[:2], 1), bool)
    for index, colour in enumerate(colours):
        y = PAD + index * cell
        patch[y : y + cell, PAD : PAD + cell] = colour
        ink[y : y + cell, PAD : PAD + cell] = True  # a black class is still a swatch, not background
    return Legend(width - patch.shape[1], 0, patch, ink, names_shown=False)


class FrameClock:
    """Times each frame from the moment the loop takes it from the source: `stamp(source)` is what the loop
    streams, `elapsed_ms()` the latency of the current frame so far (preprocess, inference, state check)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def stamp(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            self.started = time.perf_counter()
            yield frame

    def elapsed_ms(self) -> float | None:
        return None if self.started is None else (time.perf_counter() - self.started) * 1e3


class Overlay:
    """Colourised labels blended over the frame, into buffers allocated once; with `class_names`, their
    legend; with `latency`, each frame's latency in ms (the overlay's own drawing cannot be in it)."""

    def __init__(
        self,
        lut: np.ndarray,
        height: int,
        width: int,
        alpha: float = 0.5,
        *,
        class_names: Sequence[str] = (),
        latency: Callable[[], float | None] | None = None,
    ) -> None:
        self.lut, self.alpha = lut, alpha
        self._ids = np.zeros((height, width), np.uint8)
        self._ids3 = np.zeros((height, width, 3), np.uint8)
        self._colour = np.zeros((height, width, 3), np.uint8)
        self.image = np.zeros((height, width, 3), np.uint8)
        self.legend = build_legend(class_names, lut, height, width) if class_names else None
        self.latency = latency
        self._scale = font_scale(width)

    def __call__(self, frame: Frame, labels: np.ndarray) -> np.ndarray:
        np.copyto(self._ids, labels, casting="unsafe")
        cv2.cvtColor(self._ids, cv2.COLOR_GRAY2BGR, dst=self._ids3)
        cv2.LUT(self._ids3, self.lut, dst=self._colour)
        image = frame.image
        if image.shape[:2] != self.image.shape[:2]:
            image = cv2.resize(image, self.image.shape[1::-1])
        cv2.addWeighted(image, 1.0 - self.alpha, self._colour, self.alpha, 0.0, dst=self.image)
        if self.latency is not None:
            ms = self.latency()
            if ms is not None:
                self._draw_latency(f"{ms:.1f} ms")
        if self.legend is not None:
            self._draw_legend(self.legend)
        return self.image

    def _draw_legend(self, legend: Legend) -> None:
        h, w = legend.patch.shape[:2]
        view = self.image[legend.y : legend.y + h, legend.x : legend.x + w]
        np.right_shift(view, 1, out=view)  # darkened, not hidden: the scene shows through the key
        np.copyto(view, legend.patch, where=legend.ink)

    def _draw_latency(self, text: str) -> None:
        (w, h), baseline = cv2.getTextSize(text, FONT, self._scale, 1)
        cv2.rectangle(self.image, (0, 0), (w + 2 * PAD, h + baseline + 2 * PAD), (0, 0, 0), -1)
        cv2.putText(self.image, text, (PAD, PAD + h), FONT, self._scale, TEXT_COLOUR, 1, cv2.LINE_AA)


class OverlayVideo:
    """Writes the overlay as a video; the file appears (renamed from a temp name) on close()."""

    def __init__(self, path: str | os.PathLike[str], overlay: Overlay, fps: float) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        h, w = overlay.image.shape[:2]
        fourcc = cv2.VideoWriter.fourcc(*("mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, max(1.0, fps), (w, h))
        if not self._writer.isOpened():
            raise UserError("cannot open a video writer for this file (extension / codec?)", self.path)
        self.overlay = overlay

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        self._writer.write(self.overlay(frame, labels))

    def close(self) -> None:
        self._writer.release()
        if self._tmp.exists():
            os.replace(self._tmp, self.path)


class PngFrames:
    """Writes overlay PNGs and/or raw label maps (uint8 class ids) per frame, numbered in order."""

    def __init__(self, overlay: Overlay, overlay_dir: str | None, labels_dir: str | None) -> None:
        self.overlay = overlay
        self.overlay_dir = None if overlay_dir is None else Path(overlay_dir)
        self.labels_dir = None if labels_dir is None else Path(labels_dir)
        for folder in (self.overlay_dir, self.labels_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        self._ids = np.zeros(overlay.image.shape[:2], np.uint8)
        self.count = 0

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        name = f"{self.count:06d}.png"
        if self.overlay_dir is not None:
            _write_png(self.overlay_dir / name, self.overlay(frame, labels))
        if self.labels_dir is not None:
            np.copyto(self._ids, labels, casting="unsafe")
            _write_png(self.labels_dir / name, self._ids)
        self.count += 1


def _write_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        if not cv2.imwrite(str(tmp), image):
            raise UserError("cannot write image", path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
