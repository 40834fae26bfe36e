"""Frame sources of real video: a video file, an image folder, a camera; and `Conformed`, which makes any source's
frames HxWx3 uint8 BGR of one size.

Grayscale, BGRA and 16-bit frames are converted, and resized when a size is asked for, each kind of
conversion announced once in the log. A video that ends early or a camera that stops ends the stream
cleanly; bad input (a file that does not open, an empty folder) is a UserError. data/sources.py opens
any of them (and synthetic video, Cityscapes) from a spec string.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.errors import UserError
from tempseg.data.frames import Frame, FrameSource, frame_size, resize_flow, resize_image, resize_label

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FALLBACK_FPS = 30.0  # videos that do not report a rate, cameras, image folders
ASPECT_TOLERANCE = 0.01  # aspect ratios closer than 1 % are one picture resized, not a stretched one


class Conformed(FrameSource):
    """Wraps a source: caps the frame count and converts every frame to BGR uint8 of one size."""

    def __init__(self, inner: FrameSource, *, height: int | None, width: int | None, frames: int | None) -> None:
        self.inner = inner
        self.size = frame_size(height, width)
        self.frames = frames
        self.fps, self.name = inner.fps, inner.name
        self.length = inner.length if frames is None else min(frames, inner.length or frames)
        self._announced: set[str] = set()

    def __iter__(self) -> Iterator[Frame]:
        for frame in itertools.islice(self.inner, self.frames):
            frame.image = self._bgr8(frame.image)
            if self.size is not None and frame.image.shape[:2] != self.size:
                h, w = frame.image.shape[:2]
                self._announce("resize", f"resizing frames {w}x{h} -> {self.size[1]}x{self.size[0]}")
                if stretched(w, h, self.size[1], self.size[0]):
                    what = f"frames {w}x{h} ({aspect(w, h)}) are stretched to {self.size[1]}x{self.size[0]}"
                    self._announce("aspect", f"{what} ({aspect(self.size[1], self.size[0])}), not cropped")
                frame.image = resize_image(frame.image, *self.size)
                if frame.label is not None:
                    frame.label = resize_label(frame.label, *self.size)
                if frame.flow_prev is not None and frame.flow_valid is not None:
                    frame.flow_prev, frame.flow_valid = resize_flow(frame.flow_prev, frame.flow_valid, *self.size)
            yield frame

    def _bgr8(self, image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint16:
            self._announce("depth", "scaling 16-bit frames to 8 bits")
            image = (image >> 8).astype(np.uint8)
        elif image.dtype != np.uint8:
            self._announce("depth", f"converting {image.dtype} frames to 8 bits (clipped to 0..255)")
            image = np.clip(image, 0, 255).astype(np.uint8)
        if image.ndim == 2 or image.shape[2] == 1:
            self._announce("gray", "converting grayscale frames to BGR")
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.shape[2] == 4:
            self._announce("alpha", "dropping the alpha channel (BGRA -> BGR)")
            return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return image

    def _announce(self, kind: str, what: str) -> None:
        if kind not in self._announced:
            self._announced.add(kind)
            log.warning("%s: %s", self.name, what)

    def close(self) -> None:
        self.inner.close()


def stretched(width: int, height: int, to_width: int, to_height: int) -> bool:
    """Whether resizing width x height to to_width x to_height changes the aspect ratio by more than 1 %."""
    return abs((width * to_height) / (height * to_width) - 1) > ASPECT_TOLERANCE


def aspect(width: int, height: int) -> str:
    """The aspect ratio as text: 16:9 for 1280x720, 1.78:1 where the terms would be unreadable (1366x768)."""
    divisor = math.gcd(width, height)
    w, h = width // divisor, height // divisor
    return f"{w}:{h}" if max(w, h) <= 32 else f"{width / height:.2f}:1"


class VideoSource(FrameSource):
    """A video file read with cv2.VideoCapture; the stream ends where decoding ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise UserError("does not open as a video", path)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else FALLBACK_FPS
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if count > 0 else None
        self.name = str(path)

    def __iter__(self) -> Iterator[Frame]:
        for index in itertools.count():
            ok, image = self.capture.read()
            if not ok or image is None:
                # End of file, or a damaged one: stop without raising. Frame counts are estimates for
                # many containers, so a short read is only noted, not warned about.
                if self.length is not None and index < self.length:
                    log.info("%s: decoding ended after %d of the %d frames announced", self.name, index, self.length)
                return
            yield Frame(image=image, label=None, index=index, sequence=self.name)

    def close(self) -> None:
        self.capture.release()


class CameraSource(FrameSource):
    """A live camera (cv2.VideoCapture(N)); when it stops delivering frames the stream ends with a warning."""

    def __init__(self, device: int) -> None:
        self.name = f"camera:{device}"
        self.capture = cv2.VideoCapture(device)
        if not self.capture.isOpened():
            raise UserError("does not open (no such camera, or it is in use)", self.name)
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else FALLBACK_FPS
        self.length = None

    def __iter__(self) -> Iterator[Frame]:
        for index in itertools.count():
            ok, image = self.capture.read()
            if not ok or image is None:
                log.warning("%s: stopped delivering frames after %d frames; ending the stream", self.name, index)
                return
            yield Frame(image=image, label=None, index=index, sequence=self.name)

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(FrameSource):
    """The images of one folder in natural order (frame2 before frame10), as one sequence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise UserError(f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in this folder", folder)
        self.files = sorted(files, key=_natural_key)
        for path in self.files:  # checks the file signature only, so a folder of thousands opens fast
            if not cv2.haveImageReader(str(path)):
                raise UserError("is not an image OpenCV can read", path)
        self.fps = FALLBACK_FPS
        self.length = len(self.files)
        self.name = str(folder)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise UserError("does not decode as an image", path)
            yield Frame(image=image, label=None, index=index, sequence=self.name)


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]
