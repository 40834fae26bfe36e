"""The frame every source yields, and the source interface the trainer, calibration and runtime consume."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from tempseg.common.io import atomic_write


@dataclass
class Frame:
    """One video frame, its dense label where known, and where it sits in its sequence."""

    image: np.ndarray  # HxWx3 uint8, BGR (OpenCV order)
    label: np.ndarray | None  # HxW uint8 Cityscapes train ids, 255 = ignore; None when unlabelled
    index: int  # frame index within its sequence, 0-based
    sequence: str  # sequence id: "synthetic/val/3", a video path, "cityscapes/val/frankfurt_000000_000294"
    degraded: str | None = None  # synthetic only: the transient degradation on this frame, else None
    # Synthetic with_flow only (data/synthetic/flow.py): backward flow to the previous frame (HxWx2 float32,
    # current -> previous, as cv2.remap maps) and where it is valid (HxW bool); None on frame 0 or unasked.
    flow_prev: np.ndarray | None = None
    flow_valid: np.ndarray | None = None


class FrameSource(abc.ABC):
    """An iterable of Frames with a rate and a (maybe unknown) length; close it, or use it in a `with` block."""

    fps: float  # frames per second of the source (synthetic and Cityscapes: 17.0)
    length: int | None  # frames it will yield; None when unknown (a camera)
    name: str  # what to call it in logs and reports

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield the frames in order."""

    def exact_flow(self, t: int, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact backward flow from frame t to frame t-1 (HxWx2 float32, HxW bool valid) where the source knows
        its scene (synthetic video), at `size` (h, w) if given; None for sources that cannot know it."""
        del t, size  # a plain source has no exact flow
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: most sources hold nothing to release
        """Release files or devices; the default holds none."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, fps={self.fps}, length={self.length})"


def frame_size(height: int | None, width: int | None) -> tuple[int, int] | None:
    """The (height, width) frames are resized to, or None to keep their own; ValueError for one without the other."""
    if height is None and width is None:
        return None
    if height is None or width is None:
        raise ValueError("give both height and width, or neither")
    return height, width


def check_clip(clip_length: int, target_offset: int) -> None:
    """A clip of `clip_length` frames ending `target_offset` frames before its label: ValueError otherwise."""
    if clip_length < 1 or target_offset < 0:
        raise ValueError(f"clip_length {clip_length} must be >= 1 and target_offset {target_offset} >= 0")


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an image to height x width: area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a label map to height x width by nearest neighbour: ids are never blended."""
    if label.shape[:2] == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def resize_flow(flow: np.ndarray, valid: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a backward flow (HxWx2, pixels) and its mask: nearest sampling (a flow is never blended across
    a surface boundary), the vectors scaled with the frame."""
    if flow.shape[:2] == (height, width):
        return flow, valid
    sx, sy = width / flow.shape[1], height / flow.shape[0]
    resized = cv2.resize(flow, (width, height), interpolation=cv2.INTER_NEAREST) * np.array([sx, sy], np.float32)
    mask = cv2.resize(valid.view(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).view(bool)
    return resized, mask


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode a PNG in memory and write it atomically (cv2.imwrite would pick the format from the temp name)."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {image.shape} and dtype {image.dtype}")
    with atomic_write(path) as handle:
        handle.write(data.tobytes())
