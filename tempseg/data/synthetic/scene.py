"""The procedural street behind the synthetic video: materials, layout, motion and objects, all in metres.

World coordinates: x lateral (metres, right positive) measured from the road's curved reference line,
so a world point sits at x + curve(z); y up from the ground; z forward along the road. The ego lane
centre is x = 0. Things are generated in chunks of CHUNK_M metres of one *layer*: a layer is a group of
things that move together with one closed-form z offset (static world, a traffic lane, a pedestrian
flow), so any frame is computed from t alone. A chunk is a pure function of (seed, layer, chunk index),
never of the resolution or the sequence length.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import overload

import numpy as np

# Cityscapes train ids.
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY) = range(11)
(PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(11, 19)
IGNORE = 255

# Draw groups, back to front; within a group things are drawn far to near (painter's algorithm).
GROUND, FAR, SEGMENT, PROPERTY, STREET = range(5)

CHUNK_M = 60.0  # length of a generation chunk
MAX_THING_M = 45.0  # longest thing (building, tram): chunk lookup reaches back this far
LANE_W = 3.3  # lane width
CAM_H = 1.3  # camera height above the road
SKY_BANDS = 12  # sky gradient drawn as bands of separate materials (no per-pixel sky pass)

Rgb = tuple[float, float, float]


# ---------------------------------------------------------------------------------------------
# Geometry helpers: every polygon is an (m, k, 3) array of m contours with k vertices (x, y, z).


def quad_x(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """Vertical quad in the plane x = const (a facade, a car side)."""
    return np.array([[[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]]])


def quad_z(z: float, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Vertical quad in the plane z = const, facing the camera (a rear face, a billboard)."""
    return np.array([[[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]])


def ground(x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    """Quad on the ground plane."""
    return np.array([[[x0, 0.0, z0], [x1, 0.0, z0], [x1, 0.0, z1], [x0, 0.0, z1]]])


_ANGLES = {n: np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) for n in (6, 8, 10, 12, 14)}


def ellipse_z(z: float, xc: float, yc: float, rx: float, ry: float, n: int = 10) -> np.ndarray:
    """Ellipse polygon in the plane z = const."""
    a = _ANGLES[n]
    return np.stack([xc + rx * np.cos(a), yc + ry * np.sin(a), np.full(n, z)], axis=1)[None]


def ellipse_x(x: float, zc: float, yc: float, rz: float, ry: float, n: int = 8) -> np.ndarray:
    """Ellipse polygon in the plane x = const (a wheel on a car side)."""
    a = _ANGLES[n]
    return np.stack([np.full(n, x), yc + ry * np.sin(a), zc + rz * np.cos(a)], axis=1)[None]


def ring_z(z: float, xc: float, yc: float, r: float, width: float) -> np.ndarray:
    """A wheel tyre: outer and inner contour, filled even-odd so the inside stays open."""
    return np.concatenate([ellipse_z(z, xc, yc, r, r, 12), ellipse_z(z, xc, yc, r - width, r - width, 12)])


def blob_z(rng: np.random.Generator, z: float, xc: float, yc: float, rx: float, ry: float) -> np.ndarray:
    """Irregular round polygon (a tree crown, a cloud) in the plane z = const."""
    a = _ANGLES[12]
    r = rng.uniform(0.75, 1.15, 12)
    return np.stack([xc + rx * r * np.cos(a), yc + ry * r * np.sin(a), np.full(12, z)], axis=1)[None]


def bar_z(z: float, p0: tuple[float, float], p1: tuple[float, float], width: float) -> np.ndarray:
    """A thin straight bar between two (x, y) points in the plane z = const (a bicycle tube)."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length * width / 2, (x1 - x0) / length * width / 2
    return np.array([[[x0 + nx, y0 + ny, z], [x1 + nx, y1 + ny, z], [x1 - nx, y1 - ny, z], [x0 - nx, y0 - ny, z]]])


# ---------------------------------------------------------------------------------------------
# Materials: each index of the material map is one colour and one class; the frame is rendered
# as a uint8 material map, then mapped to the label and to the image by two 256-entry tables.


@dataclass
class Look:
    """Per-sequence appearance: exposure, colour cast, sky; so colour alone never gives the class."""

    gain: float  # overall exposure multiplier
    tint: np.ndarray  # RGB multipliers (white balance, time of day)
    side_shade: float  # brightness of faces turned away from the sun
    saturation: float  # saturation scale for man-made colours
    sky_horizon: Rgb
    sky_top: Rgb
    cloud: Rgb
    clouds: int  # number of clouds

    @staticmethod
    def draw(rng: np.random.Generator) -> Look:
        kind = rng.choice(["clear", "overcast", "hazy", "dusk"], p=[0.35, 0.35, 0.15, 0.15])
        skies = {
            "clear": ((0.72, 0.80, 0.90), (0.28, 0.48, 0.80), (0.95, 0.95, 0.97), (1.0, 1.15), 6),
            "overcast": ((0.80, 0.82, 0.85), (0.60, 0.63, 0.68), (0.70, 0.71, 0.74), (0.8, 1.0), 9),
            "hazy": ((0.86, 0.85, 0.80), (0.52, 0.60, 0.72), (0.92, 0.90, 0.86), (0.9, 1.1), 4),
            "dusk": ((0.95, 0.62, 0.38), (0.22, 0.26, 0.46), (0.85, 0.55, 0.45), (0.55, 0.8), 5),
        }
        horizon, top, cloud, gains, n_clouds = skies[str(kind)]
        jit = rng.uniform(-0.05, 0.05, 3)
        tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.08, 0.08, 3)
        if kind == "dusk":
            tint *= np.array([1.12, 0.95, 0.82])
        return Look(
            gain=float(rng.uniform(*gains)),
            tint=tint,
            side_shade=float(rng.uniform(0.55, 0.85)),
            saturation=float(rng.uniform(0.6, 1.1)),
            sky_horizon=tuple(np.clip(np.array(horizon) + jit, 0, 1)),
            sky_top=tuple(np.clip(np.array(top) + jit, 0, 1)),
            cloud=cloud,
            clouds=int(rng.integers(0, n_clouds + 1)),
        )


class Palette:
    """Up to 256 materials of one sequence, registered in blocks by role ('facade', 'car', ...)."""

    def __init__(self, look: Look) -> None:
        self.look = look
        self.rgb: list[np.ndarray] = []
        self.cls: list[int] = []
        self.roles: dict[str, tuple[int, int]] = {}  # role -> (first index, count)

    def add(self, role: str, cls: int, colours: list[Rgb], shade: float = 1.0, lit: bool = True) -> None:
        """Register a block of colours (RGB in 0..1); `lit` ones take the sequence's exposure and tint."""
        self.roles[role] = (len(self.rgb), len(colours))
        for c in colours:
            rgb = np.asarray(c, dtype=np.float64) * shade
            self.rgb.append(rgb * self.look.gain * self.look.tint if lit else rgb)
            self.cls.append(cls)
        if len(self.rgb) > 256:
            raise RuntimeError(f"palette holds {len(self.rgb)} materials, the map holds 256")

    def __call__(self, role: str, i: int = 0) -> int:
        first, count = self.roles[role]
        return first + int(i) % count

    def count(self, role: str) -> int:
        return self.roles[role][1]

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(class table (256,) uint8, colour table (256, 1, 3) uint8 BGR) for cv2.LUT."""
        classes = np.full(256, IGNORE, np.uint8)
        classes[: len(self.cls)] = self.cls
        colours = np.zeros((256, 1, 3), np.uint8)
        rgb = np.clip(np.array(self.rgb) * 255.0, 0, 255).round().astype(np.uint8)
        colours[: len(rgb), 0] = rgb[:, ::-1]
        return classes, colours


def _hsv(rng: np.random.Generator, h: float, s: float, v: float, dh: float, ds: float, dv: float) -> Rgb:
    """A colour jittered around (h, s, v), each in 0..1."""
    hh = (h + rng.uniform(-dh, dh)) % 1.0
    ss = float(np.clip(s + rng.uniform(-ds, ds), 0, 1))
    vv = float(np.clip(v + rng.uniform(-dv, dv), 0, 1))
    return colorsys.hsv_to_rgb(hh, ss, vv)


def _pick(rng: np.random.Generator, bases: list[tuple[float, float, float]], n: int, jitter: Rgb) -> list[Rgb]:
    """n colours, each a jittered copy of a random base (h, s, v)."""
    idx = rng.integers(len(bases), size=n)
    return [_hsv(rng, *bases[int(i)], *jitter) for i in idx]


FACADES = [(0.10, 0.25, 0.80), (0.07, 0.45, 0.55), (0.0, 0.0, 0.70), (0.12, 0.15, 0.90), (0.58, 0.08, 0.60)]
FACADES += [(0.03, 0.55, 0.50), (0.15, 0.35, 0.75), (0.0, 0.0, 0.45), (0.55, 0.20, 0.75), (0.30, 0.15, 0.70)]
CARS = [(0.0, 0.0, 0.92), (0.0, 0.0, 0.12), (0.0, 0.0, 0.45), (0.6, 0.05, 0.7), (0.62, 0.6, 0.45)]
CARS += [(0.0, 0.75, 0.6), (0.55, 0.3, 0.3), (0.1, 0.5, 0.75), (0.35, 0.4, 0.35), (0.08, 0.2, 0.6)]
CLOTHES = [(0.6, 0.6, 0.35), (0.0, 0.0, 0.15), (0.0, 0.0, 0.85), (0.0, 0.7, 0.6), (0.33, 0.5, 0.45)]
CLOTHES += [(0.12, 0.7, 0.8), (0.08, 0.4, 0.4), (0.0, 0.0, 0.5), (0.8, 0.4, 0.5), (0.5, 0.5, 0.6)]
SKIN = [(0.07, 0.35, 0.85), (0.06, 0.45, 0.65), (0.06, 0.5, 0.4), (0.08, 0.3, 0.95)]


def make_palette(rng: np.random.Generator, look: Look) -> Palette:
    """All materials of a sequence; the colours are this sequence's random draws."""
    p = Palette(look)
    sat = look.saturation
    sky = [tuple(np.array(look.sky_horizon) * (1 - a) + np.array(look.sky_top) * a) for a in np.linspace(0, 1, 12)]
    p.add("sky", SKY, sky)
    p.add("cloud", SKY, [look.cloud, tuple(np.array(look.cloud) * 0.85)])
    p.add("terrain_far", TERRAIN, [_hsv(rng, 0.22, 0.35, 0.45, 0.05, 0.1, 0.1)])
    p.add("road", ROAD, [_hsv(rng, 0.6, 0.05, 0.33, 0.3, 0.04, 0.07)])
    p.add("road_patch", ROAD, [_hsv(rng, 0.6, 0.05, v, 0.3, 0.04, 0.04) for v in (0.24, 0.42)])
    p.add("lane_mark", ROAD, [(0.88, 0.88, 0.86), (0.92, 0.78, 0.3)])
    p.add("bike_lane", ROAD, [_hsv(rng, 0.0, 0.45, 0.45, 0.03, 0.1, 0.1)])
    p.add("sidewalk", SIDEWALK, [_hsv(rng, 0.08, 0.12, 0.62, 0.05, 0.1, 0.1) for _ in range(2)])
    p.add("curb", SIDEWALK, [_hsv(rng, 0.08, 0.05, 0.72, 0.05, 0.05, 0.05)])
    p.add("terrain", TERRAIN, [_hsv(rng, 0.2 + 0.05 * i, 0.45, 0.42, 0.04, 0.15, 0.12) for i in range(3)])
    facade = _pick(rng, FACADES, 16, (0.02, 0.1 * sat, 0.12))
    p.add("facade", BUILDING, facade)
    p.add("facade_side", BUILDING, facade, shade=look.side_shade)
    p.add("window", BUILDING, [(0.16, 0.19, 0.24), (0.3, 0.36, 0.45), (0.85, 0.75, 0.45)])
    p.add("shop", BUILDING, _pick(rng, FACADES + CLOTHES, 6, (0.03, 0.1, 0.1)))
    p.add("roof", BUILDING, _pick(rng, [(0.02, 0.55, 0.45), (0.0, 0.0, 0.3), (0.6, 0.1, 0.35)], 3, (0.02, 0.1, 0.1)))
    far = [tuple(np.array(c) * 0.6 + np.array(look.sky_horizon) * 0.4) for c in _pick(rng, FACADES, 6, (0, 0.1, 0.1))]
    p.add("far", BUILDING, far)
    p.add("wall", WALL, _pick(rng, [(0.1, 0.1, 0.65), (0.05, 0.45, 0.5), (0.0, 0.0, 0.5)], 4, (0.02, 0.1, 0.1)))
    p.add("fence", FENCE, _pick(rng, [(0.0, 0.0, 0.45), (0.33, 0.3, 0.35), (0.08, 0.45, 0.45)], 3, (0.02, 0.1, 0.1)))
    p.add("pole", POLE, [_hsv(rng, 0.55, 0.05, v, 0.1, 0.05, 0.05) for v in (0.3, 0.5, 0.65)])
    p.add("sign_red", SIGN, [(0.78, 0.1, 0.12)])
    p.add("sign_blue", SIGN, [(0.1, 0.28, 0.72)])
    p.add("sign_white", SIGN, [(0.92, 0.92, 0.9)])
    p.add("sign_yellow", SIGN, [(0.95, 0.78, 0.1)])
    p.add("sign_back", SIGN, [(0.55, 0.56, 0.58)])
    p.add("light_box", LIGHT, [(0.12, 0.12, 0.11), (0.35, 0.33, 0.1)])
    p.add("lamp", LIGHT, [(1.0, 0.12, 0.08), (1.0, 0.65, 0.05), (0.15, 1.0, 0.45), (0.2, 0.2, 0.18)], lit=False)
    green = [_hsv(rng, 0.25 + 0.03 * i, 0.6, 0.38, 0.04, 0.15, 0.12) for i in range(6)]
    p.add("crown", VEGETATION, green)
    p.add("crown_dark", VEGETATION, green, shade=0.7)
    p.add("trunk", VEGETATION, [_hsv(rng, 0.07, 0.45, 0.3, 0.02, 0.1, 0.08)])
    p.add("skin", PERSON, _pick(rng, SKIN, 4, (0.01, 0.05, 0.05)))
    p.add("hair", PERSON, _pick(rng, [(0.08, 0.6, 0.15), (0.1, 0.5, 0.4), (0.0, 0.0, 0.7)], 3, (0.02, 0.1, 0.1)))
    p.add("shirt", PERSON, _pick(rng, CLOTHES, 14, (0.03, 0.15, 0.15)))
    p.add("trousers", PERSON, _pick(rng, [*CLOTHES[:3], (0.1, 0.3, 0.6)], 7, (0.02, 0.1, 0.1)))
    p.add("rider_skin", RIDER, _pick(rng, SKIN, 2, (0.01, 0.05, 0.05)))
    p.add("rider_shirt", RIDER, _pick(rng, CLOTHES, 6, (0.03, 0.15, 0.15)))
    p.add("rider_trousers", RIDER, _pick(rng, CLOTHES[:3], 3, (0.02, 0.1, 0.1)))
    p.add("helmet", RIDER, _pick(rng, CLOTHES, 3, (0.03, 0.1, 0.1)))
    car = _pick(rng, CARS, 14, (0.02, 0.1 * sat, 0.08))
    p.add("car", CAR, car)
    p.add("car_side", CAR, car, shade=look.side_shade)
    p.add("car_glass", CAR, [(0.12, 0.14, 0.17), (0.25, 0.28, 0.32)])
    p.add("tyre", CAR, [(0.06, 0.06, 0.06)])
    p.add("car_light", CAR, [(0.75, 0.08, 0.06), (0.95, 0.92, 0.75)])
    truck = _pick(rng, [(0.0, 0.0, 0.9), (0.0, 0.7, 0.6), (0.6, 0.6, 0.5), (0.1, 0.6, 0.8)], 5, (0.02, 0.1, 0.1))
    p.add("truck", TRUCK, truck)
    p.add("truck_side", TRUCK, truck, shade=look.side_shade)
    p.add("truck_dark", TRUCK, [(0.1, 0.11, 0.13), (0.05, 0.05, 0.05)])
    bus = _pick(rng, [(0.14, 0.8, 0.9), (0.0, 0.0, 0.9), (0.6, 0.7, 0.55), (0.0, 0.75, 0.7)], 3, (0.02, 0.1, 0.1))
    p.add("bus", BUS, bus)
    p.add("bus_side", BUS, bus, shade=look.side_shade)
    p.add("bus_dark", BUS, [(0.1, 0.12, 0.15), (0.05, 0.05, 0.05)])
    tram = _pick(rng, [(0.0, 0.0, 0.9), (0.0, 0.75, 0.7), (0.15, 0.8, 0.9)], 2, (0.02, 0.1, 0.1))
    p.add("tram", TRAIN, tram)
    p.add("tram_side", TRAIN, tram, shade=look.side_shade)
    p.add("tram_dark", TRAIN, [(0.1, 0.12, 0.15)])
    p.add("bicycle", BICYCLE, _pick(rng, [(0.0, 0.0, 0.12), (0.0, 0.7, 0.6), (0.6, 0.6, 0.5)], 3, (0.02, 0.1, 0.1)))
    p.add("motorcycle", MOTORCYCLE, _pick(rng, [(0.0, 0.0, 0.1), (0.0, 0.8, 0.6), (0.0, 0.0, 0.6)], 3, (0, 0.1, 0.1)))
    p.add("static", IGNORE, _pick(rng, [(0.3, 0.5, 0.3), (0.0, 0.0, 0.35), (0.1, 0.5, 0.5)], 3, (0.02, 0.1, 0.1)))
    return p


# ---------------------------------------------------------------------------------------------
# Things: an object of the world, a list of parts drawn in order.


@dataclass
class Part:
    mat: int  # material index
    polys: np.ndarray  # (m, k, 3) contours in layer coordinates, filled together (even-odd)
    side: int = 0  # 0 always; +1 only when the camera is right of the thing, -1 only when left (side faces)
    detail: bool = False  # skipped beyond the detail distance (windows, lights)


class Thing:
    """An object: its z extent in layer coordinates, lateral position, draw group and parts."""

    __slots__ = ("group", "parts", "x", "z_hi", "z_lo")

    def __init__(self, group: int, parts: list[Part], x: float | None = None) -> None:
        z = np.concatenate([p.polys[..., 2].ravel() for p in parts])
        self.z_lo = float(z.min())
        self.z_hi = float(z.max())
        self.x = float(np.concatenate([p.polys[..., 0].ravel() for p in parts]).mean()) if x is None else x
        self.group = group
        self.parts = parts

    def parts_at(self, t: float) -> list[Part]:
        """Parts at frame t; animated things override this."""
        return self.parts


class Walker(Thing):
    """A person or rider whose legs and arms swing: vertices + swing * sin(omega * t + phase)."""

    __slots__ = ("omega", "phase", "swings")

    def __init__(
        self, group: int, parts: list[Part], x: float, swings: dict[int, np.ndarray], omega: float, phase: float
    ) -> None:
        super().__init__(group, parts, x)
        self.swings, self.omega, self.phase = swings, omega, phase

    def parts_at(self, t: float) -> list[Part]:
        s = math.sin(self.omega * t + self.phase)
        out = list(self.parts)
        for i, swing in self.swings.items():
            p = out[i]
            out[i] = Part(p.mat, p.polys + swing * s, p.side, p.detail)
        return out


class TrafficLight(Thing):
    """A signal head whose lit lamp cycles green, amber, red with a period in frames."""

    __slots__ = ("lamps", "offset", "pal", "period")

    def __init__(
        self, group: int, parts: list[Part], x: float, lamps: list[int], pal: Palette, period: float, offset: float
    ) -> None:
        super().__init__(group, parts, x)
        self.lamps, self.pal, self.period, self.offset = lamps, pal, period, offset

    def parts_at(self, t: float) -> list[Part]:
        phase = ((t + self.offset) / self.period) % 1.0
        lit = 2 if phase < 0.55 else 1 if phase < 0.62 else 0  # green, amber, red
        out = list(self.parts)
        for n, i in enumerate(self.lamps):  # consecutive red, amber, green triples, one per signal head
            p = out[i]
            out[i] = Part(self.pal("lamp", n % 3 if n % 3 == lit else 3), p.polys, p.side, p.detail)
        return out


# ---------------------------------------------------------------------------------------------
# Layout and motion.


@dataclass
class Lane:
    x: float  # centre
    speed: float  # world velocity along z, m/s (negative: oncoming)
    kind: str  # "ego", "car", "tram"


@dataclass
class Side:
    sign: int  # -1 left, +1 right
    curb: float  # |x| of the curb (road edge)
    sidewalk: float  # width
    verge: float  # grass between sidewalk and property line (0: none)
    parking: bool  # parked cars along the curb
    bike: bool  # bike lane inside the curb (or inside the parking strip)
    treed: bool  # trees along the curb
    weights: np.ndarray  # segment mix: building, park, wall, fence

    @property
    def walk(self) -> tuple[float, float]:
        """|x| range of the sidewalk."""
        return self.curb, self.curb + self.sidewalk

    @property
    def prop(self) -> float:
        """|x| of the property line (where buildings, walls and fences start)."""
        return self.curb + self.sidewalk + self.verge


@dataclass
class Street:
    lanes: list[Lane]
    left: Side
    right: Side
    dashed: list[float]  # x of dashed lines
    solid: list[tuple[float, int]]  # x and colour variant of solid lines
    bike_x: list[tuple[float, int]]  # centre x and direction of bike lanes
    intersection_p: float  # chance of an intersection per chunk
    sign_rate: float  # signs per metre per side
    lamp_spacing: float

    @staticmethod
    def draw(rng: np.random.Generator, ego_speed: float) -> Street:
        n_on = int(rng.choice([0, 1, 1, 2]))
        n_same = int(rng.choice([1, 2, 2]))
        ego = n_on + int(rng.integers(n_same))
        tram = n_on > 0 and rng.random() < 0.5
        lanes = []
        for i in range(n_on + n_same):
            x = (i - ego) * LANE_W
            if i == ego:
                lanes.append(Lane(x, ego_speed, "ego"))
            elif i < n_on:
                kind = "tram" if tram and i == 0 else "car"
                speed = -rng.uniform(7, 14) if kind == "car" else rng.choice([-1, 1]) * rng.uniform(6, 11)
                lanes.append(Lane(x, float(speed), kind))
            else:
                lanes.append(Lane(x, float(max(2.0, ego_speed + rng.choice([-1, 1]) * rng.uniform(1.5, 4.5))), "car"))
        dashed = [lanes[i].x + LANE_W / 2 for i in range(len(lanes) - 1) if i + 1 != n_on]
        solid = [(lanes[n_on].x - LANE_W / 2, 1)] if n_on else []
        edges = [lanes[0].x - LANE_W / 2, lanes[-1].x + LANE_W / 2]
        sides, bike_x = [], []
        for sign, edge in ((-1, edges[0]), (1, edges[1])):
            solid.append((edge, 0))
            bike = rng.random() < (0.75 if sign > 0 or n_on else 0.2)
            parking = rng.random() < 0.7
            curb = abs(edge) + 1.6 * bike + 2.2 * parking
            if bike:
                bike_x.append((sign * (abs(edge) + 0.8), sign if n_on or sign > 0 else 1))
                solid.append((sign * (abs(edge) + 1.6), 0))
            weights = rng.dirichlet([6.0, 1.0, 1.0, 1.0])
            sides.append(
                Side(
                    sign=sign,
                    curb=curb,
                    sidewalk=float(rng.uniform(2.5, 5.5)),
                    verge=float(rng.choice([0.0, 0.0, rng.uniform(0.8, 2.5)])),
                    parking=parking,
                    bike=bike,
                    treed=rng.random() < 0.5,
                    weights=weights,
                )
            )
        return Street(
            lanes=lanes,
            left=sides[0],
            right=sides[1],
            dashed=dashed,
            solid=solid,
            bike_x=bike_x,
            intersection_p=float(rng.uniform(0.25, 0.55)),
            sign_rate=float(rng.uniform(1 / 30, 1 / 15)),
            lamp_spacing=float(rng.uniform(18, 30)),
        )


@dataclass
class Curve:
    """Lateral offset of the road's reference line: x = sum of a * sin(k z + p), gentle by construction."""

    a: np.ndarray  # amplitudes, metres
    k: np.ndarray  # wave numbers, rad/m
    p: np.ndarray  # phases

    @staticmethod
    def draw(rng: np.random.Generator) -> Curve:
        straight = rng.random() < 0.3
        a = np.zeros(2) if straight else rng.uniform(0, 1, 2) * np.array([8.0, 3.0])
        return Curve(a=a, k=2 * math.pi / rng.uniform([500, 250], [1200, 500]), p=rng.uniform(0, 2 * math.pi, 2))

    @overload
    def __call__(self, z: np.ndarray) -> np.ndarray: ...
    @overload
    def __call__(self, z: float) -> float: ...
    def __call__(self, z: np.ndarray | float) -> np.ndarray | float:
        if isinstance(z, np.ndarray):
            out = np.zeros_like(z)
            for a, k, p in zip(self.a.tolist(), self.k.tolist(), self.p.tolist(), strict=True):
                if a:
                    out += a * np.sin(k * z + p)
            return out
        return float(sum(a * math.sin(k * z + p) for a, k, p in zip(self.a, self.k, self.p, strict=True)))

    def slope(self, z: float) -> float:
        return float(sum(a * k * math.cos(k * z + p) for a, k, p in zip(self.a, self.k, self.p, strict=True)))


@dataclass
class Ego:
    """Closed-form camera motion: forward with a speed wobble, lateral sway, yaw and pitch jitter."""

    speed: float  # mean forward speed, m/s
    fps: float
    wobble: tuple[float, float, float]  # z amplitude (m), angular rate (rad/frame), phase
    sway: tuple[float, float, float]  # lateral: amplitude (m), rad/frame, phase
    yaw: tuple[float, float, float]  # yaw jitter: amplitude (rad), rad/frame, phase
    pitch: tuple[float, float, float]  # pitch jitter: amplitude (rad), rad/frame, phase

    @staticmethod
    def draw(rng: np.random.Generator, fps: float) -> Ego:
        speed = float(rng.uniform(4.0, 14.0))
        w = float(rng.uniform(0.01, 0.04))
        amp = float(rng.uniform(0, 0.4)) * speed / fps / w  # |dz/dt| of the wobble stays below 40% of the speed
        return Ego(
            speed=speed,
            fps=fps,
            wobble=(amp, w, float(rng.uniform(0, 2 * math.pi))),
            sway=(float(rng.uniform(0, 0.25)), float(rng.uniform(0.02, 0.06)), float(rng.uniform(0, 2 * math.pi))),
            yaw=(float(rng.uniform(0, 0.015)), float(rng.uniform(0.03, 0.1)), float(rng.uniform(0, 2 * math.pi))),
            pitch=(float(rng.uniform(0, 0.006)), float(rng.uniform(0.3, 0.9)), float(rng.uniform(0, 2 * math.pi))),
        )

    def z(self, t: float) -> float:
        a, w, p = self.wobble
        return self.speed / self.fps * t + a * (math.sin(w * t + p) - math.sin(p))

    @staticmethod
    def _osc(o: tuple[float, float, float], t: float) -> float:
        return o[0] * math.sin(o[1] * t + o[2])

    def x(self, t: float) -> float:
        return self._osc(self.sway, t)

    def yaw_at(self, t: float) -> float:
        return self._osc(self.yaw, t)

    def pitch_at(self, t: float) -> float:
        return self._osc(self.pitch, t)


@dataclass
class Layer:
    """Things that move together: world z = layer z + offset(t)."""

    key: int  # seed stream of its chunks
    far: float  # view distance, metres
    build: Callable[[np.random.Generator, float, float], list[Thing]]  # chunk [z0, z1) -> things
    speed: float = 0.0  # m/s
    follow: Ego | None = None  # moves with the ego camera (the lead car)
    wobble: tuple[float, float, float] = (0.0, 0.0, 0.0)  # extra z oscillation: metres, rad/frame, phase
    fps: float = 17.0
    cache: dict[int, tuple[list[Thing], np.ndarray, np.ndarray]] = field(default_factory=dict)

    def offset(self, t: float) -> float:
        a, w, p = self.wobble
        base = self.speed / self.fps * t + a * math.sin(w * t + p)
        return base + self.follow.z(t) if self.follow is not None else base
