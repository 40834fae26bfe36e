"""Builders of the street's things (buildings, vehicles, people, furniture), in metres and layer coordinates.

Each returns a Thing whose parts are drawn in list order, so a thing paints its own far faces first.
`sign` is the side of the street: -1 left, +1 right; a vehicle's `facing` is +1 when it drives away
from the camera (rear visible) and -1 when it comes towards it (front visible).
"""

from __future__ import annotations

import math

import numpy as np

from tempseg.data.synthetic.scene import (
    FAR,
    GROUND,
    PROPERTY,
    SEGMENT,
    STREET,
    Palette,
    Part,
    Thing,
    TrafficLight,
    Walker,
    bar_z,
    blob_z,
    ellipse_x,
    ellipse_z,
    ground,
    quad_x,
    quad_z,
    ring_z,
)

Rng = np.random.Generator


def _u(rng: Rng, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# ---------------------------------------------------------------------------------------------
# Buildings and the property line.


def building(pal: Palette, rng: Rng, sign: int, z0: float, z1: float, front: float, height: float) -> Thing:
    """A block with its facade on the plane |x| = front, windows per floor, maybe a shop front and a roof."""
    v = int(rng.integers(pal.count("facade")))
    depth = _u(rng, 8, 16)
    xf, xb = sign * front, sign * (front + depth)
    parts = [
        Part(pal("facade_side", v), quad_z(z0, xf, xb, 0, height)),
        Part(pal("facade", v), quad_x(xf, 0, height, z0, z1)),
    ]
    if rng.random() < 0.3:  # pitched roof, its slope seen from the street
        rise = _u(rng, 2.0, 4.5)
        xr = sign * (front + depth / 2)
        slope = np.array([[[xf, height, z0], [xr, height + rise, z0], [xr, height + rise, z1], [xf, height, z1]]])
        gable = np.array([[[xf, height, z0], [xr, height + rise, z0], [xb, height, z0]]])
        parts += [Part(pal("roof", int(rng.integers(3))), slope), Part(pal("facade_side", v), gable)]
    else:
        parts.append(Part(pal("roof", int(rng.integers(3))), quad_x(xf, height - 0.5, height, z0, z1), detail=True))
    floor = _u(rng, 2.9, 3.6)
    shop = rng.random() < 0.5
    if shop:
        parts.append(Part(pal("shop", int(rng.integers(6))), quad_x(xf, 0, 3.4, z0, z1)))
        parts.append(
            Part(pal("window", 1), _windows_x(xf, z0 + 0.8, z1 - 0.8, _u(rng, 3, 6), 0.6, 0.3, 2.6), detail=True)
        )
    spacing = _u(rng, 2.3, 3.6)
    width, tall = spacing * _u(rng, 0.35, 0.6), floor * _u(rng, 0.35, 0.55)
    rows = [floor * i + floor * 0.3 for i in range(1, int((height - 1.0) / floor))]
    if rows:
        wins = np.concatenate([_windows_x(xf, z0 + 0.6, z1 - 0.6, spacing, width / spacing, y, y + tall) for y in rows])
        lit = rng.random(len(wins)) < (0.1 if pal.look.gain < 0.85 else 0.03)
        parts.append(Part(pal("window", int(rng.integers(2))), wins[~lit], detail=True))
        if lit.any():
            parts.append(Part(pal("window", 2), wins[lit], detail=True))
    return Thing(SEGMENT, [p for p in parts if len(p.polys)], x=sign * (front + depth / 2))


def _windows_x(x: float, z0: float, z1: float, spacing: float, fill: float, y0: float, y1: float) -> np.ndarray:
    """A row of window quads on the plane x = const, evenly spaced over [z0, z1]."""
    n = max(int((z1 - z0) / spacing), 0)
    if n == 0:
        return np.zeros((0, 4, 3))
    starts = z0 + (z1 - z0 - n * spacing) / 2 + spacing * np.arange(n) + spacing * (1 - fill) / 2
    ends = starts + spacing * fill
    q = np.empty((n, 4, 3))
    q[:, :, 0] = x
    q[:, :, 1] = [y0, y1, y1, y0]
    q[:, 0, 2], q[:, 1, 2], q[:, 2, 2], q[:, 3, 2] = starts, starts, ends, ends
    return q


def far_block(pal: Palette, rng: Rng, sign: int, z0: float, z1: float, x: float, height: float) -> Thing:
    """A distant building: one hazy facade, no detail."""
    return Thing(FAR, [Part(pal("far", int(rng.integers(6))), quad_x(sign * x, 0, height, z0, z1))])


def hedge_or_wall(pal: Palette, rng: Rng, role: str, sign: int, z0: float, z1: float, x: float, height: float) -> Thing:
    """A solid band along the property line (role 'wall' or 'crown' for a hedge) with its near end face."""
    v = int(rng.integers(pal.count(role)))
    shade = "crown_dark" if role == "crown" else role
    end = quad_z(z0, sign * x, sign * (x + 0.5), 0, height)
    return Thing(PROPERTY, [Part(pal(shade, v), end), Part(pal(role, v), quad_x(sign * x, 0, height, z0, z1))])


def fence(pal: Palette, rng: Rng, sign: int, z0: float, z1: float, x: float, height: float) -> Thing:
    """A mesh fence (one filled band, as Cityscapes labels mesh) or a rail fence with posts."""
    mat = pal("fence", int(rng.integers(3)))
    xs = sign * x
    posts = np.concatenate([quad_x(xs, 0, height + 0.1, z, z + 0.1) for z in np.arange(z0, z1 - 0.1, 2.5)])
    if rng.random() < 0.5:
        return Thing(PROPERTY, [Part(mat, quad_x(xs, 0.05, height, z0, z1)), Part(mat, posts)])
    rails = np.concatenate([quad_x(xs, y, y + 0.08, z0, z1) for y in (height * 0.35, height - 0.08)])
    slats = np.concatenate([quad_x(xs, 0.1, height * 0.35, z, z + 0.1) for z in np.arange(z0 + 0.3, z1 - 0.1, 0.35)])
    return Thing(PROPERTY, [Part(mat, posts), Part(mat, rails), Part(mat, slats, detail=True)])


def tree(pal: Palette, rng: Rng, x: float, z: float, scale: float, group: int = STREET) -> Thing:
    """Trunk and an irregular crown facing the camera; trunks are vegetation in Cityscapes."""
    height = scale * _u(rng, 5.0, 9.0)
    r = scale * _u(rng, 1.4, 2.8)
    trunk_w = 0.12 * scale + 0.06
    v = int(rng.integers(pal.count("crown")))
    cy = height - r
    parts = [
        Part(pal("trunk"), quad_z(z, x - trunk_w, x + trunk_w, 0, cy)),
        Part(pal("crown", v), blob_z(rng, z, x, cy, r, r * 1.1)),
        Part(pal("crown_dark", v), blob_z(rng, z, x + 0.3 * r, cy - 0.3 * r, 0.55 * r, 0.5 * r), detail=True),
    ]
    return Thing(group, parts, x=x)


# ---------------------------------------------------------------------------------------------
# Street furniture.


def street_lamp(pal: Palette, sign: int, x: float, z: float, height: float) -> Thing:
    """Pole with an arm reaching over the road and a lamp head (all pole)."""
    xa = x - sign * 1.6  # the arm reaches towards the road
    outline = [(x - 0.09 * sign, 0), (x + 0.09 * sign, 0), (x + 0.09 * sign, height), (xa, height), (xa, height - 0.12)]
    outline.append((x - 0.09 * sign, height - 0.12))
    parts = [
        Part(pal("pole", 1), np.array([[[px, py, z] for px, py in outline]])),
        Part(pal("pole", 2), quad_z(z, xa - 0.32, xa + 0.32, height - 0.3, height - 0.08)),
    ]
    return Thing(STREET, parts, x=x)


def sign_post(pal: Palette, rng: Rng, x: float, z: float, back: bool) -> Thing:
    """A post with one or two plates; the back of a plate is still traffic sign."""
    y = _u(rng, 2.1, 2.7)
    parts = [Part(pal("pole", 0), quad_z(z, x - 0.04, x + 0.04, 0, y + 0.3))]
    for k in range(1 if rng.random() < 0.7 else 2):
        parts += _plate(pal, rng, x, y - 0.75 * k, z, back)
    return Thing(STREET, parts, x=x)


def _plate(pal: Palette, rng: Rng, x: float, y: float, z: float, back: bool) -> list[Part]:
    kind = rng.choice(["round", "triangle", "square", "diamond", "stop", "info"], p=[0.3, 0.2, 0.2, 0.1, 0.08, 0.12])
    if kind in ("round", "stop"):
        outer = ellipse_z(z, x, y, 0.33, 0.33, 8 if kind == "stop" else 12)
        inner = None if kind == "stop" else ellipse_z(z, x, y, 0.25, 0.25, 12)
        colours = ("sign_red", "sign_white")
    elif kind == "triangle":
        outer = np.array([[[x - 0.4, y - 0.3, z], [x + 0.4, y - 0.3, z], [x, y + 0.4, z]]])
        inner = np.array([[[x - 0.26, y - 0.21, z], [x + 0.26, y - 0.21, z], [x, y + 0.24, z]]])
        colours = ("sign_red", "sign_white")
    elif kind == "diamond":
        outer = np.array([[[x, y - 0.36, z], [x + 0.36, y, z], [x, y + 0.36, z], [x - 0.36, y, z]]])
        inner = np.array([[[x, y - 0.24, z], [x + 0.24, y, z], [x, y + 0.24, z], [x - 0.24, y, z]]])
        colours = ("sign_white", "sign_yellow")
    else:
        w, h = (0.3, 0.3) if kind == "square" else (0.45, 0.28)
        outer = quad_z(z, x - w, x + w, y - h, y + h)
        inner = ellipse_z(z, x, y, 0.12, 0.12, 8) if kind == "square" else quad_z(z, x - w + 0.05, x, y - 0.1, y + 0.1)
        colours = ("sign_blue", "sign_white")
    if back:
        return [Part(pal("sign_back"), outer)]
    parts = [Part(pal(colours[0]), outer)]
    return [*parts, Part(pal(colours[1]), inner, detail=True)] if inner is not None else parts


def traffic_light(
    pal: Palette, x: float, z: float, *, period: float, offset: float, back: bool, arm_to: float | None
) -> Thing:
    """A signal pole with a three-lamp head facing the camera (or its back), optionally a mast arm over the road."""
    parts = [Part(pal("pole", 0), quad_z(z, x - 0.07, x + 0.07, 0, 5.9 if arm_to is not None else 3.3))]
    lamps: list[int] = []  # consecutive red, amber, green triples, one per head
    heads = [(x, 2.25)]
    if arm_to is not None:
        parts.append(Part(pal("pole", 0), quad_z(z, min(x, arm_to), max(x, arm_to), 5.7, 5.85)))
        heads.append((arm_to, 4.7))
    for hx, y in heads:
        parts.append(Part(pal("light_box", 0), quad_z(z, hx - 0.17, hx + 0.17, y, y + 0.95)))
        if not back:
            for k in range(3):  # red on top
                lamps.append(len(parts))
                parts.append(Part(pal("lamp", 3), ellipse_z(z, hx, y + 0.8 - 0.32 * k, 0.11, 0.11, 8), detail=True))
    if not lamps:
        return Thing(STREET, parts, x=x)
    return TrafficLight(STREET, parts, x, lamps, pal, period, offset)


def bin_or_column(pal: Palette, rng: Rng, x: float, z: float) -> Thing:
    """Street clutter Cityscapes leaves unlabelled (static): a bin or an advertising column."""
    w, h = (0.3, 1.0) if rng.random() < 0.7 else (0.6, 2.8)
    return Thing(STREET, [Part(pal("static", int(rng.integers(3))), quad_z(z, x - w, x + w, 0, h))], x=x)


# ---------------------------------------------------------------------------------------------
# People.


def person(pal: Palette, rng: Rng, x: float, z: float, *, omega: float) -> Thing:
    """A pedestrian seen from front or back; omega > 0 makes the legs and arms swing (rad/frame)."""
    h = _u(rng, 1.55, 1.92)
    w = h / 1.75 * _u(rng, 0.9, 1.15)
    shirt, trousers = pal("shirt", int(rng.integers(14))), pal("trousers", int(rng.integers(7)))
    skin = pal("skin", int(rng.integers(4)))
    legs = np.concatenate(
        [quad_z(z, x - 0.16 * w, x - 0.015 * w, 0.04, 0.5 * h), quad_z(z, x + 0.015 * w, x + 0.16 * w, 0.04, 0.5 * h)]
    )
    arms = np.concatenate(
        [
            quad_z(z, x - 0.27 * w, x - 0.19 * w, 0.5 * h, 0.8 * h),
            quad_z(z, x + 0.19 * w, x + 0.27 * w, 0.5 * h, 0.8 * h),
        ]
    )
    torso = [
        (x - 0.16 * w, 0.46 * h, z),
        (x + 0.16 * w, 0.46 * h, z),
        (x + 0.2 * w, 0.81 * h, z),
        (x - 0.2 * w, 0.81 * h, z),
    ]
    parts = [
        Part(trousers, legs),
        Part(shirt, np.array([torso])),
        Part(shirt, arms, detail=True),
        Part(skin, ellipse_z(z, x, 0.885 * h, 0.062 * h, 0.075 * h, 10)),
        Part(pal("hair", int(rng.integers(3))), ellipse_z(z, x, 0.93 * h, 0.064 * h, 0.04 * h, 8), detail=True),
    ]
    if omega == 0:
        return Thing(STREET, parts, x=x)
    # Feet lift and arms swing in opposition; the quads' first two vertices are their bottom.
    step = np.zeros((2, 4, 3))
    step[0, :2, 1], step[1, :2, 1] = 0.05, -0.05
    step[0, :2, 0], step[1, :2, 0] = 0.03, -0.03
    swing = np.zeros((2, 4, 3))
    swing[0, :2, 0], swing[1, :2, 0] = -0.04, 0.04
    return Walker(STREET, parts, x, {0: step, 2: swing}, omega, _u(rng, 0, 2 * math.pi))


def cyclist(pal: Palette, rng: Rng, x: float, z: float, *, omega: float, motor: bool) -> Thing:
    """A rider on a bicycle or motorcycle seen from behind or the front; the legs pedal (rad/frame)."""
    shirt, trousers = pal("rider_shirt", int(rng.integers(6))), pal("rider_trousers", int(rng.integers(3)))
    if motor:
        m = pal("motorcycle", int(rng.integers(3)))
        vehicle = [Part(m, ellipse_z(z, x, 0.3, 0.08, 0.3, 8)), Part(m, quad_z(z, x - 0.3, x + 0.3, 0.45, 0.9))]
        seat, legs_x = 0.9, 0.3
    else:
        m = pal("bicycle", int(rng.integers(3)))
        vehicle = [
            Part(m, ellipse_z(z, x, 0.34, 0.025, 0.34, 8)),
            Part(m, quad_z(z, x - 0.025, x + 0.025, 0.3, 0.95)),
            Part(m, quad_z(z, x - 0.3, x + 0.3, 1.0, 1.04)),
        ]
        seat, legs_x = 0.95, 0.14
    legs = np.concatenate(
        [quad_z(z, x - legs_x, x - legs_x + 0.11, 0.25, seat), quad_z(z, x + legs_x - 0.11, x + legs_x, 0.25, seat)]
    )
    arms = np.concatenate(
        [
            bar_z(z, (x - 0.17, seat + 0.45), (x - 0.29, 1.02), 0.08),
            bar_z(z, (x + 0.17, seat + 0.45), (x + 0.29, 1.02), 0.08),
        ]
    )
    parts = [
        *vehicle,
        Part(trousers, legs),
        Part(shirt, quad_z(z, x - 0.19, x + 0.19, seat - 0.05, seat + 0.5)),
        Part(shirt, arms, detail=True),
        Part(pal("rider_skin", int(rng.integers(2))), ellipse_z(z, x, seat + 0.63, 0.1, 0.12, 10)),
        Part(pal("helmet", int(rng.integers(3))), ellipse_z(z, x, seat + 0.69, 0.12, 0.08, 8), detail=True),
    ]
    pedal = np.zeros((2, 4, 3))  # the feet go up and down in turn; a quad's first two vertices are its bottom
    pedal[0, :2, 1], pedal[1, :2, 1] = (0.0, 0.0) if motor else (0.12, -0.12)
    return Walker(STREET, parts, x, {len(vehicle): pedal}, omega, _u(rng, 0, 2 * math.pi))


def bicycle_side(pal: Palette, rng: Rng, x: float, z: float) -> Thing:
    """A parked bicycle seen side-on (its plane faces the camera): two open wheels and a frame of tubes."""
    m = pal("bicycle", int(rng.integers(3)))
    s = 1 if rng.random() < 0.5 else -1
    rear, crank, seat = (x - 0.52 * s, 0.34), (x - 0.05 * s, 0.32), (x - 0.17 * s, 0.85)
    head, front = (x + 0.36 * s, 0.82), (x + 0.52 * s, 0.34)
    wheels = np.concatenate([ring_z(z, rear[0], 0.34, 0.34, 0.05), ring_z(z, front[0], 0.34, 0.34, 0.05)])
    parts = [
        Part(m, wheels),
        Part(m, _tube_triangle(z, crank, seat, head, 0.045)),
        Part(m, _tube_triangle(z, rear, crank, seat, 0.04), detail=True),
        Part(m, bar_z(z, front, (head[0] - 0.06 * s, 1.02), 0.05)),
        Part(m, quad_z(z, seat[0] - 0.12, seat[0] + 0.12, 0.86, 0.92)),
    ]
    return Thing(STREET, parts, x=x)


def _tube_triangle(
    z: float, a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], width: float
) -> np.ndarray:
    """Three tubes as one shape: the triangle and its copy inset by `width` (about the incentre), filled even-odd."""
    pts = np.array([a, b, c])
    sides = np.linalg.norm(pts[[1, 2, 0]] - pts[[2, 0, 1]], axis=1)  # side opposite each vertex
    centre = sides @ pts / sides.sum()
    (ux, uy), (vx, vy) = pts[1] - pts[0], pts[2] - pts[0]
    area = abs(ux * vy - uy * vx) / 2
    inradius = 2 * area / sides.sum()
    inner = centre + (pts - centre) * max(1 - width / inradius, 0.0)
    return np.stack([np.column_stack([pts, np.full(3, z)]), np.column_stack([inner, np.full(3, z)])])


def motorcycle_side(pal: Palette, rng: Rng, x: float, z: float) -> Thing:
    """A parked motorcycle seen side-on."""
    m = pal("motorcycle", int(rng.integers(3)))
    s = 1 if rng.random() < 0.5 else -1
    body = [(-0.8, 0.72), (-0.75, 0.55), (-0.2, 0.45), (0.55, 0.55), (0.72, 0.95), (0.2, 0.98), (-0.3, 0.86)]
    body_poly = np.array([[[x + s * bx, by, z] for bx, by in body]])
    parts = [
        Part(m, ellipse_z(z, x - 0.7 * s, 0.3, 0.3, 0.3, 10)),
        Part(m, ellipse_z(z, x + 0.7 * s, 0.3, 0.3, 0.3, 10)),
    ]
    return Thing(
        STREET, [*parts, Part(m, body_poly), Part(m, bar_z(z, (x + 0.55 * s, 0.6), (x + 0.62 * s, 1.12), 0.06))], x=x
    )


# ---------------------------------------------------------------------------------------------
# Vehicles: boxes with a visible end face (rear or front) and the side face the camera can see.


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, end: int, side: int) -> list[Part]:
    """Left and right faces (each drawn only when the camera is on that side) and the near end face."""
    return [
        Part(side, quad_x(x0, y0, y1, z0, z1), side=-1),
        Part(side, quad_x(x1, y0, y1, z0, z1), side=1),
        Part(end, quad_z(z0, x0, x1, y0, y1)),
    ]


def _wheels(x0: float, x1: float, zs: list[float], r: float, mat: int, detail: bool = False) -> list[Part]:
    """Wheel discs on the left and right faces (non-overlapping, so one even-odd fill each)."""
    left = np.concatenate([ellipse_x(x0, z, r, r, r) for z in zs])
    right = np.concatenate([ellipse_x(x1, z, r, r, r) for z in zs])
    return [Part(mat, left, side=-1, detail=detail), Part(mat, right, side=1, detail=detail)]


def car(pal: Palette, rng: Rng, x: float, z0: float, facing: int) -> Thing:
    """A passenger car; z0 is its near end. Far away it is two silhouettes: the visible side and the end."""
    length, width, height = _u(rng, 3.9, 4.9), _u(rng, 1.72, 1.9), _u(rng, 1.38, 1.75)
    v = int(rng.integers(pal.count("car")))
    body, side, glass = pal("car", v), pal("car_side", v), pal("car_glass", int(rng.integers(2)))
    x0, x1, z1, belt = x - width / 2, x + width / 2, z0 + length, 0.5 * height + 0.13
    c0, c1 = z0 + 0.12 * length, z0 + 0.9 * length  # cabin foot, along the car
    t0, t1 = z0 + 0.3 * length, z0 + 0.74 * length  # roof
    parts = []
    for xs, s in ((x0, -1), (x1, 1)):
        outline = [(0.22, z0), (belt, z0), (belt, c0), (height, t0), (height, t1), (belt, c1), (belt, z1), (0.22, z1)]
        win = [
            (belt + 0.05, c0 + 0.15),
            (height - 0.06, t0 + 0.05),
            (height - 0.06, t1 - 0.05),
            (belt + 0.05, c1 - 0.15),
        ]
        parts.append(Part(side, np.array([[[xs, y, z] for y, z in outline]]), side=s))
        parts.append(Part(glass, np.array([[[xs, y, z] for y, z in win]]), side=s, detail=True))
    parts += _wheels(x0 - 0.01, x1 + 0.01, [z0 + 0.18 * length, z0 + 0.82 * length], 0.33, pal("tyre"), detail=True)
    tyres = np.concatenate(
        [quad_z(z0 + 0.6, x0 + 0.04, x0 + 0.26, 0, 0.24), quad_z(z0 + 0.6, x1 - 0.26, x1 - 0.04, 0, 0.24)]
    )
    # The end face and the sloped rear (or front) window frame as one outline, its corners on two planes.
    end = [(x0, 0.22, z0), (x1, 0.22, z0), (x1, belt, z0), (x1 - 0.08, belt, z0 + 0.1), (x1 - 0.22, height, t0)]
    end += [(x0 + 0.22, height, t0), (x0 + 0.08, belt, z0 + 0.1), (x0, belt, z0)]
    win_end = np.array(
        [
            [
                [x0 + 0.14, belt + 0.05, z0 + 0.12],
                [x1 - 0.14, belt + 0.05, z0 + 0.12],
                [x1 - 0.25, height - 0.06, t0 - 0.04],
                [x0 + 0.25, height - 0.06, t0 - 0.04],
            ]
        ]
    )
    lights = np.concatenate(
        [
            quad_z(z0, x0 + 0.08, x0 + 0.34, belt - 0.2, belt - 0.07),
            quad_z(z0, x1 - 0.34, x1 - 0.08, belt - 0.2, belt - 0.07),
        ]
    )
    parts += [
        Part(pal("tyre"), tyres, detail=True),
        Part(body, np.array([end])),
        Part(glass, win_end, detail=True),
        Part(pal("car_light", 0 if facing > 0 else 1), lights, detail=True),
    ]
    return Thing(STREET, parts, x=x)


def truck(pal: Palette, rng: Rng, x: float, z0: float, facing: int) -> Thing:
    """A box truck or van (truck in Cityscapes): a cab and a taller cargo box."""
    v = int(rng.integers(pal.count("truck")))
    body, side, dark = pal("truck", v), pal("truck_side", v), pal("truck_dark", 0)
    width, box_h, cab_h = _u(rng, 2.2, 2.5), _u(rng, 3.0, 3.8), _u(rng, 2.5, 2.9)
    cab_l, box_l = 2.3, _u(rng, 4.5, 7.5)
    x0, x1 = x - width / 2, x + width / 2
    if facing > 0:  # cargo box at the near end, cab beyond it
        parts = _box(x0, x1, 0.45, cab_h, z0 + box_l, z0 + box_l + cab_l, body, side)[:2]
        parts += _box(x0, x1, 0.45, box_h, z0, z0 + box_l, body, side)
        parts.append(Part(dark, quad_z(z0, x0, x1, 0.35, 0.6), detail=True))
    else:  # cab at the near end, the box's front shows above it
        parts = _box(x0, x1, 0.45, box_h, z0 + cab_l, z0 + cab_l + box_l, body, side)
        parts += _box(x0, x1, 0.45, cab_h, z0, z0 + cab_l, body, side)
        parts.append(Part(dark, quad_z(z0, x0 + 0.15, x1 - 0.15, cab_h - 1.0, cab_h - 0.2), detail=True))
    total = cab_l + box_l
    parts += _wheels(x0 - 0.01, x1 + 0.01, [z0 + 0.15 * total, z0 + 0.85 * total], 0.48, dark)
    parts.append(
        Part(
            dark, np.concatenate([quad_z(z0, x0 + 0.05, x0 + 0.35, 0, 0.45), quad_z(z0, x1 - 0.35, x1 - 0.05, 0, 0.45)])
        )
    )
    return Thing(STREET, parts, x=x)


def bus(pal: Palette, rng: Rng, x: float, z0: float, facing: int, *, tram: bool = False) -> Thing:
    """A bus (or a tram: the train class) with a band of side windows."""
    role = "tram" if tram else "bus"
    v = int(rng.integers(pal.count(role)))
    body, side, dark = pal(role, v), pal(f"{role}_side", v), pal(f"{role}_dark", 0)
    width, height = (2.5, 3.4) if tram else (2.5, 3.1)
    length = _u(rng, 24, 32) if tram else _u(rng, 11, 13)
    x0, x1, z1 = x - width / 2, x + width / 2, z0 + length
    parts = _box(x0, x1, 0.35, height, z0, z1, body, side)
    end = parts.pop()
    for xs, s in ((x0 - 0.01, -1), (x1 + 0.01, 1)):
        parts.append(Part(dark, _windows_x(xs, z0 + 1.0, z1 - 0.5, 1.6, 0.85, 1.25, 2.6), side=s, detail=True))
    if not tram:
        parts += _wheels(x0 - 0.02, x1 + 0.02, [z0 + 2.5, z1 - 3.0], 0.5, dark)
    parts.append(end)
    glass_y = (0.9, height - 0.3) if facing < 0 else (1.6, height - 0.4)
    parts.append(Part(dark, quad_z(z0, x0 + 0.15, x1 - 0.15, *glass_y), detail=True))
    if tram:
        zm = z0 + length / 2
        parts.append(Part(dark, bar_z(zm, (x - 0.5, height), (x, height + 1.0), 0.06)))
        parts.append(Part(dark, quad_z(zm, x - 0.6, x + 0.6, height + 0.95, height + 1.02)))
    return Thing(STREET, parts, x=x)


# ---------------------------------------------------------------------------------------------
# Ground decals (drawn on the road after the ground strips).


def ground_ellipse(x: float, z: float, rx: float, rz: float) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, 10, endpoint=False)
    return np.stack([x + rx * np.cos(a), np.zeros(10), z + rz * np.sin(a)], axis=1)[None]


def stripes(x0: float, x1: float, z0: float, z1: float, period: float, fill: float) -> np.ndarray:
    """Zebra stripes: quads across [x0, x1], each running along z."""
    n = max(int((x1 - x0) / period), 1)
    starts = x0 + period * np.arange(n)
    return np.concatenate([ground(s, s + period * fill, z0, z1) for s in starts])


def decal(mat: int, polys: np.ndarray) -> Thing:
    """Paint on the road (a patch, a manhole, a zebra crossing)."""
    return Thing(GROUND, [Part(mat, polys)])
