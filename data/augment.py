"""Clip augmentation: one random draw applied identically to every frame of a clip and to its label.

The augmentations of "Towards Efficient Temporal Neural Nets for Video Semantic Segmentation" (random
brightness, contrast, saturation, hue, horizontal flip) plus a random crop at full scale, so objects keep
their size. Colour changes are 256-entry tables (cv2.LUT), the same tables for every frame, so a temporal
model sees a consistent clip. Labels are only cropped and flipped, never interpolated.
"""

from __future__ import annotations

import cv2
import numpy as np

BRIGHTNESS = 32.0  # max brightness shift, grey levels (TensorFlow's random_brightness at 32/255)
CONTRAST = (0.7, 1.3)  # contrast factor range, about the clip's mean grey
SATURATION = (0.7, 1.3)  # saturation factor range
HUE = 9  # max hue shift in OpenCV hue units (0..179, so 9 = 18 degrees)


def augment_clip(
    images: list[np.ndarray],
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    crop: tuple[int, int] | None = None,
    flip: bool = True,
    colour: bool = True,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop (h, w) at a random place, flip with probability 0.5 (if `flip`), jitter colour (if `colour`).

    Images are HxWx3 uint8 BGR, the label HxW uint8 of the same size; inputs are not modified.
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
    if flip and rng.random() < 0.5:
        images = [cv2.flip(im, 1) for im in images]
        label = cv2.flip(label, 1)
    if colour:
        images = _colour(images, rng)
    return [np.ascontiguousarray(im) for im in images], np.ascontiguousarray(label)


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
