"""Optional outputs of a run: overlay video, overlay PNG frames, raw label maps (PNG of class ids)."""

from __future__ import annotations

import contextlib
import os
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


class Overlay:
    """Colourised labels blended over the frame, into buffers allocated once."""

    def __init__(self, lut: np.ndarray, height: int, width: int, alpha: float = 0.5) -> None:
        self.lut, self.alpha = lut, alpha
        self._ids = np.zeros((height, width), np.uint8)
        self._ids3 = np.zeros((height, width, 3), np.uint8)
        self._colour = np.zeros((height, width, 3), np.uint8)
        self.image = np.zeros((height, width, 3), np.uint8)

    def __call__(self, frame: Frame, labels: np.ndarray) -> np.ndarray:
        np.copyto(self._ids, labels, casting="unsafe")
        cv2.cvtColor(self._ids, cv2.COLOR_GRAY2BGR, dst=self._ids3)
        cv2.LUT(self._ids3, self.lut, dst=self._colour)
        image = frame.image
        if image.shape[:2] != self.image.shape[:2]:
            image = cv2.resize(image, self.image.shape[1::-1])
        cv2.addWeighted(image, 1.0 - self.alpha, self._colour, self.alpha, 0.0, dst=self.image)
        return self.image


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
