"""One sequence's world: layout, palette, camera motion and the layers of things, generated chunk by chunk.

`Scene(seed)` draws everything per sequence from `seed` alone; `Scene.visible(t)` lists the things in
view at frame t with their current z offset, in O(1) of t: chunks are pure functions of
(seed, layer, chunk index), cached per scene, and motion is closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tempseg.data.synthetic import props
from tempseg.data.synthetic.scene import (
    CHUNK_M,
    FAR,
    MAX_THING_M,
    SEGMENT,
    STREET,
    Curve,
    Ego,
    Layer,
    Look,
    Palette,
    Side,
    Street,
    Thing,
    ground,
    make_palette,
)

NEAR_M = 1.5  # near clipping distance; nothing is ever that close in the field of view (bottom row sees 3.5 m)
STREET_FAR_M = 80.0  # street things beyond this are not drawn (a person there is ~4% of the frame height)
CACHE_CHUNKS = 48  # chunks kept per layer: one sequence's worth at walking pace

ChunkBuilder = Callable[[np.random.Generator, float, float], list[Thing]]  # chunk [z0, z1) -> things


class Scene:
    """The world of one synthetic sequence; resolution-free, every number in metres or radians."""

    def __init__(self, seed: int, fps: float = 17.0) -> None:
        self.seed = seed
        rng = np.random.default_rng([seed, 1])
        self.look = Look.draw(rng)
        self.palette: Palette = make_palette(rng, self.look)
        self.ego = Ego.draw(rng, fps)
        self.street = Street.draw(rng, self.ego.speed)
        self.curve = Curve.draw(rng)
        self.dash = (float(rng.uniform(2.5, 4.0)), float(rng.uniform(5.0, 9.0)))  # dash length, period
        self.clouds = [self._cloud(rng) for _ in range(self.look.clouds)]
        self.strips = self._strips(rng)
        self.layers = self._layers(rng, fps)

    @staticmethod
    def _cloud(rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
        """(azimuth, elevation, outline): angles in radians, the outline as (12, 2) angular offsets."""
        azimuth, elevation, radius = rng.uniform(-1.2, 1.2), rng.uniform(0.06, 0.3), rng.uniform(0.08, 0.3)
        a = np.linspace(0, 2 * math.pi, 12, endpoint=False)
        r = radius * rng.uniform(0.75, 1.15, 12)
        return float(azimuth), float(elevation), np.stack([1.6 * r * np.cos(a), 0.45 * r * np.sin(a)], axis=1)

    # -- ground -----------------------------------------------------------------------------

    def _strips(self, rng: np.random.Generator) -> list[tuple[float, float, int]]:
        """Ground bands along the road, (x0, x1, material), drawn back to front before anything else."""
        pal, s = self.palette, self.street
        out: list[tuple[float, float, int]] = []
        for side in (s.left, s.right):
            g = side.sign
            yard = pal("terrain", 0) if rng.random() < 0.5 else pal("sidewalk", 1)

            def band(a: float, b: float, mat: int, g: int = g) -> tuple[float, float, int]:
                return (min(g * a, g * b), max(g * a, g * b), mat)

            out.append(band(side.prop, side.prop + 14.0, yard))
            if side.verge:
                out.append(band(side.prop - side.verge, side.prop, pal("terrain", 1)))
            out.append(band(side.curb, side.curb + side.sidewalk, pal("sidewalk", 0)))
            out.append(band(side.curb - 0.02, side.curb + 0.22, pal("curb")))
        out.append((-s.left.curb, s.right.curb, pal("road")))
        if rng.random() < 0.5:
            out += [(x - 0.75, x + 0.75, pal("bike_lane")) for x, _ in s.bike_x]
        out += [(x - 0.07, x + 0.07, pal("lane_mark", v)) for x, v in s.solid]
        return out

    def dashes(self, z0: float, z1: float) -> np.ndarray:
        """Dashed lane lines between z0 and z1 (world z), as (m, 4, 3) ground quads."""
        length, period = self.dash
        k = np.arange(math.floor(z0 / period), math.ceil(z1 / period))
        if not len(k) or not self.street.dashed:
            return np.zeros((0, 4, 3))
        a = np.maximum(k * period, z0)
        b = np.minimum(k * period + length, z1)
        keep = b > a
        a, b = a[keep], b[keep]
        quads = [ground(x - 0.07, x + 0.07, 0.0, 1.0) for x in self.street.dashed]
        q = np.concatenate([np.repeat(qq, len(a), axis=0) for qq in quads])
        zs0, zs1 = np.tile(a, len(quads)), np.tile(b, len(quads))
        q[:, :2, 2] = zs0[:, None]
        q[:, 2:, 2] = zs1[:, None]
        return q

    # -- layers -----------------------------------------------------------------------------

    def _layers(self, rng: np.random.Generator, fps: float) -> list[Layer]:
        s, ego = self.street, self.ego
        layers = [Layer(0, 170.0, self._static, fps=fps), Layer(1, 320.0, self._far, fps=fps)]
        for i, lane in enumerate(s.lanes):
            if lane.kind == "car":
                layers.append(Layer(10 + i, 130.0, self._traffic(lane.x, lane.speed), speed=lane.speed, fps=fps))
            elif lane.kind == "tram":
                layers.append(Layer(10 + i, 150.0, self._trams(lane.x, lane.speed), speed=lane.speed, fps=fps))
        if rng.random() < 0.65:  # a lead vehicle in the ego lane keeping a varying gap
            gap = float(rng.uniform(12, 30))
            wobble = (float(rng.uniform(0, 5)), float(rng.uniform(0.01, 0.04)), float(rng.uniform(0, 2 * math.pi)))
            layers.append(Layer(5, 130.0, self._lead(gap), follow=ego, wobble=wobble, fps=fps))
        for j, side in enumerate((s.left, s.right)):
            for k, direction in enumerate((-1, 1)):
                speed = direction * float(rng.uniform(1.0, 1.6))
                spacing = float(rng.uniform(12, 45))  # metres between walkers of one flow
                layers.append(Layer(30 + 2 * j + k, 90.0, self._walkers(side, spacing, fps), speed=speed, fps=fps))
        for j, (x, direction) in enumerate(s.bike_x):
            speed = direction * float(rng.uniform(3.5, 6.5))
            layers.append(Layer(40 + j, 110.0, self._cyclists(x, fps), speed=speed, fps=fps))
        return layers

    def chunk(self, layer: Layer, index: int) -> tuple[list[Thing], np.ndarray, np.ndarray]:
        """Things of one chunk with their z extents; a pure function of (seed, layer.key, index), cached."""
        hit = layer.cache.get(index)
        if hit is not None:
            return hit
        rng = np.random.default_rng([self.seed, 2, layer.key, index + (1 << 32)])
        things = layer.build(rng, index * CHUNK_M, (index + 1) * CHUNK_M)
        entry = (things, np.array([t.z_lo for t in things]), np.array([t.z_hi for t in things]))
        if len(layer.cache) >= CACHE_CHUNKS:
            layer.cache.pop(next(iter(layer.cache)))
        layer.cache[index] = entry
        return entry

    def visible(self, t: float, cam_z: float) -> list[tuple[int, float, Thing, float, Layer]]:
        """(group, depth, thing, z offset, layer) of everything in view at frame t, in draw order."""
        out = []
        for layer in self.layers:
            off = layer.offset(t)
            lo, hi = cam_z + NEAR_M - off, cam_z + layer.far - off
            for c in range(math.floor((lo - MAX_THING_M) / CHUNK_M), math.floor(hi / CHUNK_M) + 1):
                things, z_lo, z_hi = self.chunk(layer, c)
                if not things:
                    continue
                for i in np.flatnonzero((z_hi >= lo) & (z_lo <= hi)):
                    thing = things[i]
                    depth = thing.z_lo + off - cam_z
                    if thing.group == STREET and depth > STREET_FAR_M:
                        continue
                    out.append((thing.group, depth, thing, off, layer))
        out.sort(key=lambda e: (e[0], -e[1]))
        return out

    # -- chunk builders ---------------------------------------------------------------------

    def _static(self, rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
        """Buildings, property lines, furniture, parked vehicles and road paint of [z0, z1)."""
        s, pal = self.street, self.palette
        things: list[Thing] = []
        blocked = None
        if rng.random() < s.intersection_p:
            width = float(rng.uniform(10, 16))
            zi = float(rng.uniform(z0 + 10, z1 - width - 8))
            things += self._intersection(rng, zi, width)
            blocked = (zi - 5.0, zi + width + 5.0)
        for side in (s.left, s.right):
            things += self._segments(rng, side, z0, z1, blocked)
            things += self._furniture(rng, side, z0, z1, blocked)
            if side.parking:
                things += self._parked(rng, side, z0, z1, blocked)
        for _ in range(rng.poisson((z1 - z0) / 25)):
            x, z = float(rng.uniform(-s.left.curb + 0.5, s.right.curb - 2.0)), float(rng.uniform(z0, z1 - 3))
            patch = props.ground(x, x + float(rng.uniform(0.5, 2.5)), z, z + float(rng.uniform(0.5, 3.0)))
            things.append(props.decal(pal("road_patch", int(rng.integers(2))), patch))
        for _ in range(rng.poisson((z1 - z0) / 40)):
            x, z = float(rng.uniform(-s.left.curb + 1, s.right.curb - 1)), float(rng.uniform(z0, z1))
            things.append(props.decal(pal("road_patch", 0), props.ground_ellipse(x, z, 0.35, 0.35)))
        return things

    def _intersection(self, rng: np.random.Generator, zi: float, width: float) -> list[Thing]:
        """A cross street over [zi, zi + width]: road, corner sidewalks, zebra crossings, signals."""
        s, pal = self.street, self.palette
        left, right = -s.left.curb, s.right.curb
        things = [props.decal(pal("road"), props.ground(-90, 90, zi, zi + width))]
        for side in (s.left, s.right):
            g = side.sign
            for za, zb in ((zi - 3.0, zi), (zi + width, zi + width + 3.0)):
                a, b = g * side.curb, g * 90.0
                things.append(props.decal(pal("sidewalk", 0), props.ground(min(a, b), max(a, b), za, zb)))
        mark = pal("lane_mark", 0)
        things.append(props.decal(mark, props.stripes(left + 0.3, right - 0.3, zi - 4.5, zi - 1.0, 1.0, 0.5)))
        things.append(
            props.decal(mark, props.stripes(left + 0.3, right - 0.3, zi + width + 1.0, zi + width + 4.5, 1.0, 0.5))
        )
        same = [lane.x for lane in s.lanes if lane.speed > 0 and lane.kind != "tram"]
        if same:
            things.append(props.decal(mark, props.ground(min(same) - 1.6, max(same) + 1.6, zi - 6.0, zi - 5.6)))
        period, offset = float(rng.uniform(200, 400)), float(rng.uniform(0, 400))
        arm = float(np.mean(same)) if same and rng.random() < 0.6 else None
        near_r, near_l = (right + 0.5, zi - 1.5), (left - 0.5, zi - 1.5)
        far_r, far_l = (right + 0.5, zi + width + 1.5), (left - 0.5, zi + width + 1.5)
        for (x, z), back, arm_to in (
            (near_r, False, arm),
            (near_l, False, None),
            (far_l, False, None),
            (far_r, True, None),
        ):
            things.append(props.traffic_light(pal, x, z, period=period, offset=offset, back=back, arm_to=arm_to))
        if rng.random() < 0.6:
            things.append(props.sign_post(pal, rng, right + 0.8, zi - 2.5, back=False))
        for _ in range(rng.poisson(1.5)):  # people waiting at the corners
            side = s.right if rng.random() < 0.6 else s.left
            x = side.sign * float(rng.uniform(side.curb + 0.5, side.curb + side.sidewalk - 0.3))
            things.append(props.person(pal, rng, x, zi - float(rng.uniform(0.5, 3.0)), omega=0.0))
        return things

    def _segments(
        self, rng: np.random.Generator, side: Side, z0: float, z1: float, blocked: tuple[float, float] | None
    ) -> list[Thing]:
        """Fill the property line of [z0, z1) with buildings, parks, walls and fences."""
        pal, g = self.palette, side.sign
        things: list[Thing] = []
        z = z0
        while z < z1 - 1.0:
            if blocked and blocked[0] <= z < blocked[1]:
                z = blocked[1]
                continue
            kind = int(rng.choice(4, p=side.weights))
            length = float(rng.uniform(*[(8, 32), (15, 40), (8, 25), (8, 25)][kind]))
            end = min(z + length, z1)
            if blocked and z < blocked[0] < end:
                end = blocked[0]
            if end - z < 2.0:
                z = end
                continue
            prop = side.prop
            if kind == 0:
                setback = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.5, 4.0))
                things.append(props.building(pal, rng, g, z, end, prop + setback, float(rng.uniform(7, 28))))
            else:
                if kind == 1 or rng.random() < 0.4:  # trees behind the line
                    for zt in np.arange(z + 2.0, end - 1.0, float(rng.uniform(4, 9))):
                        x = g * (prop + float(rng.uniform(2, 12)))
                        things.append(props.tree(pal, rng, x, float(zt), float(rng.uniform(0.9, 1.4)), group=SEGMENT))
                elif rng.random() < 0.7:  # a building set back behind the wall or fence
                    things.append(
                        props.building(pal, rng, g, z, end, prop + float(rng.uniform(4, 10)), float(rng.uniform(7, 22)))
                    )
                if kind == 1:
                    if rng.random() < 0.5:
                        things.append(
                            props.hedge_or_wall(pal, rng, "crown", g, z, end, prop, float(rng.uniform(0.8, 1.6)))
                        )
                elif kind == 2:
                    things.append(props.hedge_or_wall(pal, rng, "wall", g, z, end, prop, float(rng.uniform(1.2, 3.0))))
                else:
                    things.append(props.fence(pal, rng, g, z, end, prop, float(rng.uniform(1.0, 2.0))))
            z = end + (float(rng.uniform(1, 6)) if rng.random() < 0.25 else 0.0)
        return things

    def _furniture(
        self, rng: np.random.Generator, side: Side, z0: float, z1: float, blocked: tuple[float, float] | None
    ) -> list[Thing]:
        """Lamps, trees, signs, clutter, bike racks and standing people on one sidewalk."""
        s, pal, g = self.street, self.palette, side.sign
        walk0, walk1 = side.walk

        def free(z: float) -> bool:
            return not (blocked and blocked[0] - 2 <= z <= blocked[1] + 2)

        things: list[Thing] = []
        spacing = s.lamp_spacing
        shift = spacing / 2 if g > 0 else 0.0
        for z in np.arange(math.ceil((z0 - shift) / spacing) * spacing + shift, z1, spacing):
            if free(z):
                things.append(props.street_lamp(pal, g, g * (walk0 + 0.45), float(z), float(rng.uniform(7, 9))))
        if side.treed:
            tree_spacing = float(rng.uniform(7, 12))
            for z in np.arange(z0 + float(rng.uniform(0, tree_spacing)), z1, tree_spacing):
                if free(z):
                    things.append(props.tree(pal, rng, g * (walk0 + 0.9), float(z), float(rng.uniform(0.7, 1.1))))
        for _ in range(rng.poisson(s.sign_rate * (z1 - z0))):
            z = float(rng.uniform(z0, z1))
            if free(z):
                back = rng.random() < (0.7 if g < 0 and s.lanes[0].speed < 0 else 0.2)
                things.append(props.sign_post(pal, rng, g * (walk0 + 0.35), z, back=back))
        for _ in range(rng.poisson((z1 - z0) / 40)):
            z = float(rng.uniform(z0, z1))
            if free(z):
                things.append(props.bin_or_column(pal, rng, g * float(rng.uniform(walk0 + 0.6, walk1 - 0.4)), z))
        if rng.random() < 0.35:
            zr = float(rng.uniform(z0, z1 - 5))
            for k in range(int(rng.integers(2, 6))):
                things.append(props.bicycle_side(pal, rng, g * (walk1 - 0.9), zr + 0.8 * k))
        if rng.random() < 0.2:
            zr = float(rng.uniform(z0, z1 - 5))
            for k in range(int(rng.integers(1, 4))):
                things.append(props.motorcycle_side(pal, rng, g * (walk1 - 1.0), zr + 1.1 * k))
        for _ in range(rng.poisson((z1 - z0) / 40)):  # people standing about
            x = g * float(rng.uniform(walk0 + 0.5, walk1 - 0.3))
            things.append(props.person(pal, rng, x, float(rng.uniform(z0, z1)), omega=0.0))
        return things

    def _parked(
        self, rng: np.random.Generator, side: Side, z0: float, z1: float, blocked: tuple[float, float] | None
    ) -> list[Thing]:
        """Cars (and the odd van) in the parking strip along the curb."""
        pal, g = self.palette, side.sign
        facing = -1 if g < 0 and self.street.lanes[0].speed < 0 else 1
        things: list[Thing] = []
        z = z0 + float(rng.uniform(0, 4))
        occupancy = float(rng.uniform(0.5, 0.95))
        while z < z1:
            length = 6.5 if rng.random() < 0.05 else 5.0  # the odd van
            if (not blocked or not (blocked[0] - 6 <= z <= blocked[1])) and rng.random() < occupancy:
                x = g * (side.curb - 1.15)  # the parking strip is the 2.2 m inside the curb
                if length > 6:
                    things.append(props.truck(pal, rng, x, z, facing))
                else:
                    things.append(props.car(pal, rng, x, z, facing))
            z += length + float(rng.uniform(0.8, 3.0))
        return things

    def _far(self, rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
        """The skyline: big hazy blocks far behind the property line."""
        pal = self.palette
        things: list[Thing] = []
        for side in (self.street.left, self.street.right):
            z = z0 + float(rng.uniform(0, 10))
            while z < z1:
                length = float(rng.uniform(12, 40))
                x = side.prop + float(rng.uniform(16, 45))
                if rng.random() < 0.8:
                    things.append(
                        props.far_block(pal, rng, side.sign, z, min(z + length, z1 + 20), x, float(rng.uniform(8, 35)))
                    )
                else:
                    things.append(props.tree(pal, rng, side.sign * x, z, float(rng.uniform(1.5, 2.5)), group=FAR))
                z += length + float(rng.uniform(0, 8))
        return things

    def _traffic(self, x: float, speed: float) -> ChunkBuilder:
        pal = self.palette
        facing = 1 if speed > 0 else -1

        def build(rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
            things: list[Thing] = []
            z = z0 + float(rng.uniform(0, 25))
            while z < z1:
                kind = rng.choice(4, p=[0.85, 0.06, 0.04, 0.05])  # car, truck, bus, motorcycle
                xj = x + float(rng.uniform(-0.25, 0.25))
                if kind == 0:
                    thing = props.car(pal, rng, xj, z, facing)
                elif kind == 1:
                    thing = props.truck(pal, rng, xj, z, facing)
                elif kind == 2:
                    thing = props.bus(pal, rng, xj, z, facing)
                else:
                    thing = props.cyclist(pal, rng, xj, z, omega=0.0, motor=True)
                things.append(thing)
                z = thing.z_hi + float(rng.uniform(6, 45))
            return things

        return build

    def _trams(self, x: float, speed: float) -> ChunkBuilder:
        pal = self.palette

        def build(rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
            if rng.random() < 0.6:
                return [props.bus(pal, rng, x, z0 + float(rng.uniform(0, 25)), 1 if speed > 0 else -1, tram=True)]
            return []

        return build

    def _lead(self, gap: float) -> ChunkBuilder:
        pal = self.palette

        def build(rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
            if not z0 <= gap < z1:
                return []
            kind = rng.random()
            if kind < 0.85:
                return [props.car(pal, rng, 0.0, gap, 1)]
            return [props.truck(pal, rng, 0.0, gap, 1) if kind < 0.95 else props.bus(pal, rng, 0.0, gap, 1)]

        return build

    def _walkers(self, side: Side, spacing: float, fps: float) -> ChunkBuilder:
        pal = self.palette
        walk0, walk1 = side.walk

        def build(rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
            things: list[Thing] = []
            z = z0 + float(rng.uniform(0, spacing))
            while z < z1:
                x = side.sign * float(rng.uniform(walk0 + 0.4, walk1 - 0.3))
                omega = 2 * math.pi * float(rng.uniform(0.8, 1.0)) / fps  # one stride per ~1.1 s
                things.append(props.person(pal, rng, x, z, omega=omega))
                z += float(rng.uniform(0.3, 1.7)) * spacing
            return things

        return build

    def _cyclists(self, x: float, fps: float) -> ChunkBuilder:
        pal = self.palette

        def build(rng: np.random.Generator, z0: float, z1: float) -> list[Thing]:
            things: list[Thing] = []
            z = z0 + float(rng.uniform(0, 40))
            while z < z1:
                omega = 2 * math.pi * float(rng.uniform(0.9, 1.3)) / fps
                things.append(props.cyclist(pal, rng, x + float(rng.uniform(-0.2, 0.2)), z, omega=omega, motor=False))
                z += float(rng.uniform(25, 80))
            return things

        return build
