"""Clip augmentation: one random draw applied identically to every frame of a clip and to its label.

The augmentations of "Towards Efficient Temporal Neural Nets for Video Semantic Segmentation" (random
brightness, contrast, saturation, hue, horizontal flip) plus a random crop at full scale, so objects keep
their size. Colour changes are 256-entry tables (cv2.LUT), the same tables for every frame, so a temporal
model sees a consistent clip. Labels are only cropped and flipped, never interpolated. Backward flows
(frame -> frame before, with their validity masks; data/flow.py) follow the crop and the flip: a flipped
flow is mirrored and its x component negated, and a pixel whose source left the crop is no longer valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

BRIGHTNESS = 32.0  # max brightness shift, grey levels (TensorFlow's random_brightness at 32/255)
CONTRAST = (0.7, 1.3)  # contrast factor range, about the clip's mean grey
SATURATION = (0.7, 1.3)  # saturation factor range
HUE = 9  # max hue shift in OpenCV hue units (0..179, so 9 = 18 degrees)

Flow = tuple[np.ndarray, np.ndarray]  # backward flow HxWx2 float32 (pixels) and its HxW bool validity mask


class AugmentedClip(NamedTuple):
    images: list[np.ndarray]
    label: np.ndarray
    flows: list[Flow]  # the given flows, cropped and flipped with the images; empty when none were given


def augment_clip(
    images: list[np.ndarray],
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    crop: tuple[int, int] | None = None,
    flip: bool = True,
    colour: bool = True,
    flows: Sequence[Flow] = (),
) -> AugmentedClip:
    """Crop (h, w) at a random place, flip with probability 0.5 (if `flip`), jitter colour (if `colour`).

    Images are HxWx3 uint8 BGR, the label HxW uint8 of the same size, `flows` backward flows of the same
    size; inputs are not modified. The random draws do not depend on `flows`.
    """
    if not images:
        raise ValueError("augment_clip needs at least one image")
    h, w = label.shape[:2]
    for image in images:
        if image.shape[:2] != (h, w):
            raise ValueError(f"image {image.shape[:2]} and label {(h, w)} differ in size")
    if crop is not None:
        ch, cw = crop
        if not (0 < ch <= h and 0 < cw <= w):
            raise ValueError(f"crop {crop} does not fit in frames of {(h, w)}")
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        images = [im[y : y + ch, x : x + cw] for im in images]
        label = label[y : y + ch, x : x + cw]
        flows = [_crop_flow(flow, valid, y, x, ch, cw) for flow, valid in flows]
    if flip and rng.random() < 0.5:
        images = [cv2.flip(im, 1) for im in images]
        label = cv2.flip(label, 1)
        flows = [_flip_flow(flow, valid) for flow, valid in flows]
    if colour:
        images = _colour(images, rng)
    return AugmentedClip(
        [np.ascontiguousarray(im) for im in images],
        np.ascontiguousarray(label),
        [(np.ascontiguousarray(f), np.ascontiguousarray(v)) for f, v in flows],
    )


def _crop_flow(flow: np.ndarray, valid: np.ndarray, y: int, x: int, h: int, w: int) -> Flow:
    """Both frames are cropped alike, so the vectors stand; a source outside the crop is invalid now."""
    flow = flow[y : y + h, x : x + w]
    src_x = flow[..., 0] + np.arange(w, dtype=np.float32)
    src_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    inside = (src_x >= 0) & (src_x <= w - 1) & (src_y >= 0) & (src_y <= h - 1)
    return flow, valid[y : y + h, x : x + w] & inside


def _flip_flow(flow: np.ndarray, valid: np.ndarray) -> Flow:
    """Mirrored: pixel x shows what x' = W-1-x showed, and a motion dx becomes -dx."""
    flipped = flow[:, ::-1] * np.array([-1.0, 1.0], np.float32)
    return flipped, valid[:, ::-1]


def _colour(images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Brightness and contrast as one grey-level table, then saturation and hue as one HSV table."""
    shift = rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    contrast = rng.uniform(*CONTRAST)
    saturation = rng.uniform(*SATURATION)
    hue = int(rng.integers(-HUE, HUE + 1))
    mean = float(np.mean([cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).mean() for im in images]))
    levels = np.arange(256, dtype=np.float64)
    bc = np.clip((levels - mean) * contrast + mean + shift, 0, 255).astype(np.uint8)
    hsv_table = np.empty((256, 1, 3), np.uint8)
    hsv_table[:, 0, 0] = (np.minimum(levels, 179) + hue) % 180  # OpenCV hue lives in 0..179
    hsv_table[:, 0, 1] = np.clip(levels * saturation, 0, 255)
    hsv_table[:, 0, 2] = levels
    out = []
    for im in images:
        hsv = cv2.cvtColor(cv2.LUT(im, bc), cv2.COLOR_BGR2HSV)
        out.append(cv2.cvtColor(cv2.LUT(hsv, hsv_table), cv2.COLOR_HSV2BGR))
    return out
