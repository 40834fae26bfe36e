"""Image normalisation shared by training, export parity, calibration and the runtime.

Frames are uint8 BGR (OpenCV's order); the networks take float32 RGB, ImageNet-normalised,
NCHW. The values also go into the ONNX metadata, so other tools can reproduce them.
"""

from __future__ import annotations

import numpy as np

MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
COLOR_ORDER = "RGB"


def normalize_bgr(
    images: np.ndarray, mean: tuple[float, ...] = MEAN_RGB, std: tuple[float, ...] = STD_RGB
) -> np.ndarray:
    """uint8 BGR [N,H,W,3] (or [H,W,3]) -> float32 RGB NCHW, (x/255 - mean) / std."""
    batch = images[None] if images.ndim == 3 else images
    rgb = batch[..., ::-1].astype(np.float32)
    scale = np.asarray([1.0 / (255.0 * s) for s in std], np.float32)
    offset = np.asarray([m / s for m, s in zip(mean, std, strict=True)], np.float32)
    out = rgb * scale - offset
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
