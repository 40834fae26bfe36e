"""Transient degradations of the synthetic video: 1-3 frame events that a road camera suffers.

What the previous frame can give a temporal model is what the current frame lost, so the events are
severe: each one destroys most of the information in a large part of the frame (or all of it), and
the label stays the truth of the scene behind it. Kinds, with their severity:

- noise: sensor noise of sigma 45-80 grey levels (low light, high gain);
- blur: defocus, Gaussian sigma 4-9 px at 512 wide;
- motion_blur: camera shake, a 24-60 px streak at 512 wide;
- exposure: under-exposure (gain 0.08-0.2) or over-exposure (gain 2.8-4.5, clipped to white);
- dirt: 1-3 opaque, soft-edged blobs of mud over 25-50 % of the frame;
- drops: 10-30 water drops on the lens over a fifth to a third of the frame, each showing a
  blurred, inverted view of the scene around it;
- wiper: a dark blade sweeping across the frame, the water film behind it smeared and milky;
- glare: the sun or headlights: a bloom that saturates 20-45 % of the frame, a flare streak, veiling
  light over the rest;
- dropped: a frame lost in transfer: black from a row in the top half (or the whole frame) down;
- frozen: the sensor stalls and repeats the last clean frame while the scene moves on;
- compression: JPEG quality 3-8 with lost slices: 20-40 % of the macroblock rows concealed by
  smearing the row above, as a decoder does after packet loss.

The schedule is drawn in blocks of BLOCK frames, each block from its own seed, so the event at frame t
is known without drawing the frames before it. Every event follows at least one clean frame. Event
parameters are in units of the frame (fractions of the width, a 512-pixel-wide reference for blur
lengths), so the same seed degrades a 128x256 and a 1024x2048 render alike. Labels are never touched.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

KINDS = (
    "noise",
    "blur",
    "motion_blur",
    "exposure",
    "dirt",
    "drops",
    "wiper",
    "glare",
    "dropped",
    "frozen",
    "compression",
)
DEFAULT_RATE = 0.25  # expected fraction of degraded frames
BLOCK = 32  # frames per schedule block
MAX_DURATION = {"dropped": 2, "frozen": 2}  # a transfer fault is short; other kinds last up to 3 frames
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
        # Renewal process: clean frames ~ geometric(q), then an event of mean length m, then one forced
        # clean frame; its degraded fraction is m / ((1 - q) / q + m + 1), solved here for q, after
        # scaling the rate up for the clean first frame of every block.
        m = _mean_duration()
        r = rate * BLOCK / (BLOCK - 1)
        self.start_p = min(r / (m - m * r), 1.0) if rate > 0 else 0.0
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
                kind = KINDS[int(rng.integers(len(KINDS)))]
                duration = min(int(rng.integers(1, MAX_DURATION.get(kind, 3) + 1)), end - t)
                event = Event(kind, t, duration, _draw_params(kind, rng))
                for k in range(duration):
                    frames[t + k] = event
                t += duration + 1
            else:
                t += 1
        return frames


def _mean_duration() -> float:
    """Mean event length in frames: kinds are drawn uniformly, lengths uniformly in 1..max."""
    return float(np.mean([(1 + MAX_DURATION.get(kind, 3)) / 2 for kind in KINDS]))


def _draw_params(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    draw = _PARAMS[kind]
    return tuple(float(p) for p in draw(rng))


def _blobs(rng: np.random.Generator) -> list[float]:
    """1-3 blobs: count, then per blob area share, aspect, centre (x, y), 12 outline radii; grey level."""
    count = int(rng.integers(1, 4))
    area = rng.uniform(0.25, 0.5)
    shares = rng.dirichlet(np.ones(count)) * area
    params: list[float] = [count, rng.uniform(10, 50)]
    for share in shares:
        params += [share, rng.uniform(0.6, 1.6), rng.random(), rng.random(), *rng.uniform(0.8, 1.2, 12)]
    return params


def _drop_params(rng: np.random.Generator) -> list[float]:
    """10-30 drops: count, then per drop centre (x, y), radius (fraction of width), magnification."""
    count = int(rng.integers(10, 31))
    area = rng.uniform(0.25, 0.5)
    weights = rng.uniform(0.3, 1.0, count) ** 2
    params: list[float] = [count]
    for weight in weights:
        radius = math.sqrt(area * 0.5 * weight / weights.sum() / math.pi)  # area in units of w * h, h = w / 2
        params += [rng.random(), rng.random(), radius, rng.uniform(0.2, 0.5)]
    return params


_PARAMS = {
    "noise": lambda rng: [rng.uniform(45, 80)],  # sigma, grey levels
    "blur": lambda rng: [rng.uniform(4.0, 9.0)],  # Gaussian sigma, pixels at 512 wide
    "motion_blur": lambda rng: [
        rng.uniform(24, 60),  # streak length, pixels at 512 wide
        rng.uniform(-30, 30) + (90 if rng.random() < 0.25 else 0),  # degrees
    ],
    "exposure": lambda rng: [rng.uniform(0.08, 0.2) if rng.random() < 0.5 else rng.uniform(2.8, 4.5)],  # gain
    "dirt": _blobs,
    "drops": _drop_params,
    "wiper": lambda rng: [
        rng.uniform(0.06, 0.10),  # blade thickness, fraction of the width
        rng.uniform(0.3, 0.6),  # wake: the angle behind the blade still under the water film, radians
        1.0 if rng.random() < 0.5 else -1.0,  # sweep direction
    ],
    "glare": lambda rng: [
        rng.uniform(0.1, 0.9),  # centre x, fraction of the width
        rng.uniform(0.05, 0.6),  # centre y, fraction of the height
        rng.uniform(0.28, 0.45),  # bloom radius, fraction of the width
        rng.uniform(40, 90),  # veiling light over the whole frame, grey levels
    ],
    "dropped": lambda rng: [0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.5)],  # first black row / height
    "frozen": lambda rng: [],
    "compression": lambda rng: [
        rng.uniform(3, 8),  # JPEG quality
        rng.uniform(0.2, 0.4),  # share of macroblock rows lost
        rng.random(),  # first lost row, fraction of the frame
    ],
}


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
    """The degraded copy of `image` at frame t of `event` (a "frozen" event is applied by the video)."""
    scale = image.shape[1] / 512.0
    p = event.params
    k = t - event.start
    if event.kind == "noise":
        rng = np.random.default_rng([seed, 4, t])
        return add_noise(image, p[0], (int(rng.integers(NOISE_PAD)), int(rng.integers(NOISE_PAD))))
    if event.kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=max(p[0] * scale, 0.3))
    if event.kind == "motion_blur":
        return _motion_blur(image, max(round(p[0] * scale), 2), p[1])
    if event.kind == "exposure":
        return cv2.convertScaleAbs(image, alpha=p[0])
    if event.kind == "frozen":
        return image
    return _SPATIAL[event.kind](image, p, k)


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


def _blend(image: np.ndarray, other: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    """image * (1 - weight) + other * weight, weight HxW in [0, 1]."""
    w3 = weight[..., None]
    return (image.astype(np.float32) * (1.0 - w3) + np.float32(other) * w3).clip(0, 255).astype(np.uint8)


def _soft(mask: np.ndarray, width: int) -> np.ndarray:
    """A uint8 mask as float weights with edges softened over ~1 % of the frame width."""
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=max(3.0 * width / 512.0, 0.5)).astype(np.float32) / 255.0


def _dirt(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """Opaque, soft-edged blobs of mud (they stay put: dirt sticks to the lens)."""
    h, w = image.shape[:2]
    count, level = int(p[0]), p[1]
    mask = np.zeros((h, w), np.uint8)
    for i in range(count):
        share, aspect, fx, fy, *radii = p[2 + 16 * i : 2 + 16 * (i + 1)]
        cv2.fillPoly(mask, [_outline(share, aspect, fx, fy, np.asarray(radii), w, h)], 255, cv2.LINE_AA, 4)
    return _blend(image, level, _soft(mask, w))


def _outline(share: float, aspect: float, fx: float, fy: float, radii: np.ndarray, w: int, h: int) -> np.ndarray:
    """A 12-point blob covering `share` of the frame, as fillPoly points with 4 fractional bits."""
    radii = radii / math.sqrt(float(np.mean(radii**2)))  # keeps the covered area at `share`
    a = math.sqrt(share * w * h * aspect / math.pi)  # semi-axes in pixels, a / b = aspect
    b = a / aspect
    a, b = min(a, 0.55 * w), min(b, 0.55 * h)
    cx, cy = a + fx * max(w - 2 * a, 0), b + fy * max(h - 2 * b, 0)
    angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    pts = np.stack([cx + a * radii * np.cos(angles), cy + b * radii * np.sin(angles)], axis=1)
    return np.round(pts * 16).astype(np.int32)


def _drops(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """Water drops: each shows the scene around it inverted and minified (a ball lens), then blurred."""
    h, w = image.shape[:2]
    map_x, map_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mask = np.zeros((h, w), np.uint8)
    for i in range(int(p[0])):
        fx, fy, radius, magnification = p[1 + 4 * i : 5 + 4 * i]
        cx, cy, r = fx * w, fy * h, max(radius * w, 1.0)
        inside = (map_x - cx) ** 2 + (map_y - cy) ** 2 < r * r
        map_x[inside] = cx - (map_x[inside] - cx) / magnification
        map_y[inside] = cy - (map_y[inside] - cy) / magnification
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 255, -1, cv2.LINE_AA, 4)
    refracted = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    refracted = cv2.GaussianBlur(refracted, (0, 0), sigmaX=max(6.0 * w / 512.0, 0.5))
    return _blend(image, refracted, _soft(mask, w))


def _wiper(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """A dark blade turning about a pivot below the frame, a smeared water film in its wake."""
    h, w = image.shape[:2]
    thickness, wake, direction = p
    pivot = (0.5 * w, 1.6 * h)
    reach = 2.2 * h + w
    angle = direction * (-0.5 + 0.35 * k)  # radians from vertical; each frame of the event moves it on
    behind = angle - direction * wake

    def tip(a: float) -> tuple[float, float]:
        return pivot[0] + reach * math.sin(a), pivot[1] - reach * math.cos(a)

    film = np.zeros((h, w), np.uint8)
    points = np.array([pivot, tip(angle), tip(behind)], np.float64)
    cv2.fillPoly(film, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    size = max(3, round(40 * w / 512))
    smeared = cv2.convertScaleAbs(cv2.blur(image, (size, size)), alpha=0.8, beta=50)  # film: smeared, milky
    out = _blend(image, smeared, _soft(film, w))
    blade = np.zeros((h, w), np.uint8)
    end = tip(angle)
    cv2.line(
        blade,
        (round(pivot[0] * 16), round(pivot[1] * 16)),
        (round(end[0] * 16), round(end[1] * 16)),
        255,
        max(1, round(thickness * w)),
        cv2.LINE_AA,
        4,
    )
    return _blend(out, 12.0, _soft(blade, w))


def _glare(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """A saturating bloom (sun, headlights), a horizontal flare streak, veiling light everywhere."""
    h, w = image.shape[:2]
    fx, fy, radius, veil = p
    ys, xs = np.ogrid[:h, :w]
    dx, dy = (xs - fx * w) / (radius * w), (ys - fy * h) / (radius * w)
    bloom = 1.6 * np.exp(-2.0 * (dx * dx + dy * dy))  # white out to ~0.5 radius, light beyond
    streak = 0.8 * np.exp(-(((ys - fy * h) / (0.04 * h)) ** 2)) * np.exp(-(((xs - fx * w) / (0.9 * w)) ** 2))
    light = (bloom + streak).astype(np.float32)[..., None]
    out = image.astype(np.float32) * (1.0 - 0.3 * np.minimum(light, 1.0)) + veil + 255.0 * light
    return out.clip(0, 255).astype(np.uint8)


def _dropped(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """A frame lost in transfer: black from row p[0] * height down (the whole frame when 0)."""
    out = image.copy()
    out[round(p[0] * image.shape[0]) :] = 0
    return out


def _compression(image: np.ndarray, p: tuple[float, ...], k: int) -> np.ndarray:
    """JPEG at quality p[0], then lost slices of macroblock rows concealed by repeating the row above."""
    h, w = image.shape[:2]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, round(p[0])])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    out = decoded if decoded is not None else image.copy()
    block = max(4, round(16 * w / 512))
    rows = -(-h // block)
    lost = max(1, round(p[1] * rows))
    first = min(int(p[2] * rows), rows - lost)
    for row in range(max(first, 1), first + lost):
        out[row * block : (row + 1) * block] = out[row * block - 1 : row * block]
    if first == 0:  # nothing above the first row to repeat: the decoder shows grey
        out[:block] = 128
    return out


_SPATIAL = {
    "dirt": _dirt,
    "drops": _drops,
    "wiper": _wiper,
    "glare": _glare,
    "dropped": _dropped,
    "compression": _compression,
}
