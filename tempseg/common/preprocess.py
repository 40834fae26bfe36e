"""Image normalisation shared by training, export parity, calibration and the runtime.

Frames are uint8 BGR (OpenCV's order); the networks take float32 RGB, ImageNet-normalised,
NCHW. The values also go into the ONNX metadata, so other tools can reproduce them. OpenCV's
blobFromImagesWithParams (>= 4.8) does it in one call (swap, scale, mean, resize, layout),
writing into a preallocated array when given one; older OpenCV falls back to numpy.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
COLOR_ORDER = "RGB"


@functools.lru_cache(maxsize=16)
def blob_params(mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int], swap_rb: bool):
    """OpenCV's parameters for (x/255 - mean) / std per channel at `size` (w, h); None on OpenCV < 4.8."""
    if not hasattr(cv2.dnn, "blobFromImagesWithParams"):
        return None
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = (*(1.0 / (255.0 * s) for s in std), 0.0)
    params.mean = (*(255.0 * m for m in mean), 0.0)
    params.size = size
    params.swapRB = swap_rb
    params.ddepth = cv2.CV_32F
    return params


def normalize_bgr(
    images: np.ndarray,
    mean: tuple[float, ...] = MEAN_RGB,
    std: tuple[float, ...] = STD_RGB,
    *,
    out: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    swap_rb: bool = True,
) -> np.ndarray:
    """uint8 BGR [N,H,W,3] (or [H,W,3]) -> float32 NCHW, (x/255 - mean) / std, RGB when `swap_rb`.

    `size` (w, h) resizes; `out` is written in place (and returned) when given.
    """
    batch = images[None] if images.ndim == 3 else images
    size = size or (batch.shape[2], batch.shape[1])
    params = blob_params(tuple(mean), tuple(std), size, swap_rb)
    if params is not None:
        frames = list(batch)
        return (
            cv2.dnn.blobFromImagesWithParams(frames, out, params)
            if out is not None
            else cv2.dnn.blobFromImagesWithParams(frames, params)
        )
    if size != (batch.shape[2], batch.shape[1]):
        batch = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in batch])
    ordered = batch[..., ::-1] if swap_rb else batch
    scale = np.asarray([1.0 / (255.0 * s) for s in std], np.float32)
    offset = np.asarray([m / s for m, s in zip(mean, std, strict=True)], np.float32)
    result = np.ascontiguousarray((ordered.astype(np.float32) * scale - offset).transpose(0, 3, 1, 2))
    if out is None:
        return result
    out[...] = result
    return out
