"""Transient image degradations of the synthetic video: 1-3 frame events a temporal model can see through.

The schedule is drawn in blocks of BLOCK frames, each block from its own seed, so the event at frame t
is known without drawing the frames before it. Every event is preceded by at least one clean frame.
Event parameters are in units of the frame (fractions of the width, a 512-pixel-wide reference for
blur lengths), so the same seed degrades a 128x256 and a 1024x2048 render alike. Labels are never touched.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("noise", "blur", "motion_blur", "gain", "occluder")
BLOCK = 32  # frames per schedule block
NOISE_SIGMA = 32.0  # standard deviation of the stored noise tile, grey levels
NOISE_PAD = 32  # the tile is this much larger than the frame; a per-frame offset moves the grain


@dataclass(frozen=True)
class Event:
    """One degradation: its kind, first frame, length in frames and kind-specific parameters."""

    kind: str
    start: int
    duration: int
    params: tuple[float, ...]


class Schedule:
    """Which frames of a sequence are degraded, at an expected fraction `rate` of the frames."""

    def __init__(self, seed: int, rate: float) -> None:
        if not 0.0 <= rate <= 0.6:
            raise ValueError(f"degrade rate {rate} must lie in [0, 0.6] (events are separated by clean frames)")
        self.seed = seed
        self.rate = rate
        # Renewal process: clean frames ~ geometric(q), then 1-3 degraded (mean 2), then one forced clean
        # frame; its degraded fraction is 2 / ((1 - q) / q + 3), solved here for q, after scaling the
        # rate up for the clean first frame of every block.
        r = rate * BLOCK / (BLOCK - 1)
        self.start_p = min(r / (2.0 - 2.0 * r), 1.0) if rate > 0 else 0.0
        self._blocks: dict[int, dict[int, Event]] = {}

    def at(self, t: int) -> Event | None:
        """The event covering frame t, or None for a clean frame."""
        block = t // BLOCK
        if block not in self._blocks:
            if len(self._blocks) > 256:
                self._blocks.clear()
            self._blocks[block] = self._draw_block(block)
        return self._blocks[block].get(t)

    def _draw_block(self, block: int) -> dict[int, Event]:
        rng = np.random.default_rng([self.seed, 3, block])
        frames: dict[int, Event] = {}
        end = (block + 1) * BLOCK
        t = block * BLOCK + 1  # the block's first frame stays clean, so every event follows a clean frame
        while t < end:
            if self.start_p and rng.random() < self.start_p:
                duration = min(int(rng.integers(1, 4)), end - t)
                event = _draw_event(rng, t, duration)
                for k in range(duration):
                    frames[t + k] = event
                t += duration + 1
            else:
                t += 1
        return frames


def _draw_event(rng: np.random.Generator, start: int, duration: int) -> Event:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind == "noise":
        params = (rng.uniform(15, 35),)  # sigma, grey levels
    elif kind == "blur":
        params = (rng.uniform(2.0, 5.0),)  # Gaussian sigma, pixels at 512 wide
    elif kind == "motion_blur":
        angle = rng.uniform(-30, 30) + (90 if rng.random() < 0.25 else 0)
        params = (rng.uniform(8, 24), angle)  # streak length (pixels at 512 wide), degrees
    elif kind == "gain":
        gain = rng.uniform(0.3, 0.6) if rng.random() < 0.5 else rng.uniform(1.6, 2.5)
        params = (gain,)
    else:
        area = rng.uniform(0.10, 0.35)  # fraction of the frame covered
        params = (area, rng.uniform(0.6, 1.6), rng.random(), rng.random(), rng.uniform(0, 60), rng.uniform(0.85, 1.0))
        params += (*rng.uniform(0.8, 1.2, 12), rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02))  # outline, drift
    return Event(kind, start, duration, tuple(float(p) for p in params))


def noise_tile(height: int, width: int) -> np.ndarray:
    """A fixed uint8 noise tile centred on 128 with sigma NOISE_SIGMA, at least NOISE_PAD larger than the frame.

    Tiles come in power-of-two sizes, so the random frame sizes of scale augmentation share a few
    cached tiles instead of drawing a new one (15 ms at 256x512) per size.
    """
    return _tile(_power_of_two(height), _power_of_two(width))


def _power_of_two(value: int) -> int:
    return 1 << max(6, (value - 1).bit_length())


@functools.lru_cache(maxsize=8)
def _tile(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    tile = rng.normal(128.0, NOISE_SIGMA, (height + NOISE_PAD, width + NOISE_PAD, 3))
    tile = np.clip(tile, 0, 255).astype(np.uint8)
    tile.setflags(write=False)
    return tile


def add_noise(image: np.ndarray, sigma: float, offset: tuple[int, int]) -> np.ndarray:
    """Add zero-mean noise of `sigma` grey levels: a shifted window of the shared tile, one saturating pass."""
    h, w = image.shape[:2]
    dy, dx = offset
    window = noise_tile(h, w)[dy : dy + h, dx : dx + w]
    k = sigma / NOISE_SIGMA
    return cv2.addWeighted(image, 1.0, window, k, -128.0 * k)


def apply(image: np.ndarray, event: Event, t: int, seed: int) -> np.ndarray:
    """The degraded copy of `image` at frame t of `event`."""
    scale = image.shape[1] / 512.0
    p = event.params
    if event.kind == "noise":
        rng = np.random.default_rng([seed, 4, t])
        return add_noise(image, p[0], (int(rng.integers(NOISE_PAD)), int(rng.integers(NOISE_PAD))))
    if event.kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=max(p[0] * scale, 0.3))
    if event.kind == "motion_blur":
        return _motion_blur(image, max(round(p[0] * scale), 2), p[1])
    if event.kind == "gain":
        return cv2.convertScaleAbs(image, alpha=p[0])
    return _occlude(image, p, t - event.start)


def _motion_blur(image: np.ndarray, length: int, degrees: float) -> np.ndarray:
    """A `length`-pixel streak at `degrees` (camera shake): rotate, box-blur along rows, rotate back.

    Two warps and a 1-D box filter cost ~2 ms at 256x512, where a length x length filter2D costs ~15.
    """
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    rotated = cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    streaked = cv2.blur(rotated, (length, 1), borderType=cv2.BORDER_REFLECT)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(streaked, turn, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)


def _occlude(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """A dark, soft-edged blob (dirt, a wiper, a hand) over `area` of the frame, drifting a little per frame."""
    h, w = image.shape[:2]
    area, aspect, fx, fy, level, alpha = p[:6]
    radii = np.asarray(p[6:18])
    radii = radii / math.sqrt(float(np.mean(radii**2)))  # keeps the covered area at `area`
    a = math.sqrt(area * w * h * aspect / math.pi)  # semi-axes in pixels, a / b = aspect
    b = a / aspect
    a, b = min(a, 0.55 * w), min(b, 0.55 * h)
    cx = (a + fx * max(w - 2 * a, 0)) + p[18] * k * w
    cy = (b + fy * max(h - 2 * b, 0)) + p[19] * k * h
    angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    pts = np.stack([cx + a * radii * np.cos(angles), cy + b * radii * np.sin(angles)], axis=1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(3.0 * w / 512.0, 0.5))
    weight = mask.astype(np.float32)[..., None] * (alpha / 255.0)
    out = image.astype(np.float32) * (1.0 - weight) + np.float32(level) * weight
    return out.astype(np.uint8)
