"""Exact backward optical flow of a synthetic frame to the frame before it, with a validity mask.

The flow is HxWx2 float32, current -> previous: pixel (x, y) of frame t shows the surface point that
frame t-1 showed at (x + dx, y + dy), the convention of cv2.remap maps and of
metrics.consistency.warp_with_flow. The mask (HxW bool) is True where that point was visible in
frame t-1: inside the frame and not hidden there; disocclusions and pixels entering the view are False.

The generator knows every surface (`ExactFlow`, `exact_flow`). An int32
map names the surface under each pixel (a part of a thing; the road plane; the sky and far terrain; a
cloud), filled by the same painter's pass as the materials. A planar surface moving rigidly between two
frames moves in the image by one 3x3 homography: for the plane n.c = d in frame t's camera coordinates
and the motion c' = R c + T into frame t-1's camera, p' ~ K' (R + T n^T / d) K^-1 p. The flow is each
pixel's surface homography applied to it; a pixel is valid where frame t-1's id map holds the same
surface at the point it maps to (rounded, as cv2.remap's nearest sampling does).

Beyond that exact case: a swinging limb (walkers' legs and arms, cyclists' legs) gets per contour the
homography fitted to where its vertices were, exact for the generator's sheared quads; a part whose
vertices are not planar (a car's outline folds over its rear window) is split into planar triangles
around each contour's centre, each with its own plane's homography. Two approximations remain, both well
under a pixel: a moving layer's sideways shift along the curved road is taken at each part's centre,
and the contours of one long part (a facade's windows) bent by the road's curve share one fitted plane.

Other video gets OpenCV DIS flow (tempseg/data/flow.py).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tempseg.data.synthetic.render import Camera, clouds, fill, ground_calls, sky_and_ground, visible_parts
from tempseg.data.synthetic.scene import CAM_H, GROUND, Layer, Part, Thing, Walker
from tempseg.data.synthetic.world import Scene

SKY_ID = 0  # sky bands and the far terrain: drawn at infinity, they move with the camera's rotation only
GROUND_ID = 1  # the road plane y = 0: ground strips, lane dashes and road paint are one surface
FIRST_CLOUD = 2  # cloud k has the id FIRST_CLOUD + k; things' parts come after the clouds
EDGE_ON = 1e-3  # a plane passing closer than this (metres) to the camera is seen edge-on: no valid pixels
BAND = 32  # rows per block of the per-pixel pass
PLANAR_M = 0.01  # parts whose vertices stray further (RMS, metres) from one plane are folded: triangulated


Visible = list[tuple[Thing, int, Part, float, Layer]]


class _Ids:
    """Stable integer ids of the parts seen in two frames: (thing, part index) -> first id of the part."""

    def __init__(self, first: int) -> None:
        self.keys: dict[tuple[int, int], int] = {}
        self.next = first

    def of(self, thing: Thing, index: int, count: int) -> int:
        key = (id(thing), index)  # the things of both frames stay alive in the scene's chunk cache
        first = self.keys.get(key)
        if first is None:
            first = self.keys[key] = self.next
            self.next += count
        return first


def _split(thing: Thing, index: int) -> bool:
    """Parts whose contours move apart (a walker's two legs) get one id per contour."""
    return isinstance(thing, Walker) and index in thing.swings


def _id_pass(
    scene: Scene, t: int, height: int, width: int, ids: _Ids, materials: np.ndarray | None = None
) -> tuple[Camera, np.ndarray, Visible, list[int]]:
    """Frame t's surface id map (and its material map into `materials` if given) from one painter's pass.

    Returns the camera, the id map, the visible parts and each part's first id.
    """
    cam = Camera(scene, t, height, width)
    id_map = np.full((height, width), SKY_ID, np.int32)
    if materials is not None:
        sky_and_ground(materials, scene, cam)
    clouds(materials, scene, cam, id_map, FIRST_CLOUD)
    calls = ground_calls(scene, cam)
    first = [GROUND_ID] * len(calls)
    split = [False] * len(calls)
    parts = visible_parts(scene, t, cam)
    for thing, i, part, off, _layer in parts:
        calls.append((part.mat, part.polys, off))
        if thing.group == GROUND:  # road paint lies on the road plane
            first.append(GROUND_ID)
            split.append(False)
        else:
            s = _split(thing, i)
            first.append(ids.of(thing, i, part.polys.shape[0] if s else 1))
            split.append(s)
    fill(materials, calls, scene, cam, (id_map, first, split))
    return cam, id_map, parts, first[len(first) - len(parts) :]


def _axes(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(A, C) with camera coordinates c = A (W - C) for absolute world points W = (x + curve(z), y, z)."""
    a = np.array([[cam.cos, 0.0, -cam.sin], [0.0, -1.0, 0.0], [cam.sin, 0.0, cam.cos]])
    return a, np.array([cam.x, CAM_H, cam.z])


def _intrinsics(cam: Camera) -> np.ndarray:
    return np.array([[cam.f, 0.0, cam.cx], [0.0, cam.f, cam.cy], [0.0, 0.0, 1.0]])


def _plane_fits(parts: Visible, scene: Scene, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each part's plane n.c = d in camera coordinates (least squares over its vertices, d >= 0), the RMS
    distance of its vertices to that plane and its centre's world z; one vectorised pass over all parts."""
    flat = [part.polys.reshape(-1, 3) for _, _, part, _, _ in parts]
    counts = np.fromiter((len(f) for f in flat), np.int64, len(flat))
    verts = np.concatenate(flat)
    verts[:, 2] += np.repeat(np.fromiter((p[3] for p in parts), np.float64, len(parts)), counts)
    c = np.stack(cam.to_camera(verts, scene.curve(verts[:, 2])), axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    centre = np.add.reduceat(c, starts) / counts[:, None]
    q = c - np.repeat(centre, counts, axis=0)
    spread, axes = np.linalg.eigh(np.add.reduceat(q[:, :, None] * q[:, None, :], starts))
    normal = axes[:, :, 0]  # the direction of least spread
    d = np.einsum("ij,ij->i", normal, centre)
    flip = np.where(d < 0, -1.0, 1.0)
    rms = np.sqrt(np.maximum(spread[:, 0], 0.0) / counts)
    z_world = np.add.reduceat(verts[:, 2], starts) / counts
    return normal * flip[:, None], d * flip, rms, z_world


def _corners(polys: np.ndarray) -> np.ndarray:
    """(m, k + 1, 3): each contour's vertices and centre (the centre pins down the homography of a
    triangle, and follows any affine motion of the contour)."""
    return np.concatenate([polys, polys.sum(axis=1, keepdims=True) / polys.shape[1]], axis=1)


def _to_camera(pts: np.ndarray, offsets: np.ndarray, scene: Scene, cam: Camera) -> np.ndarray:
    """(n, K, 3) layer-coordinate points, shifted by each set's z offset (n,), in camera coordinates."""
    flat = pts.reshape(-1, 3).copy()
    flat[:, 2] += np.repeat(offsets, pts.shape[1])
    return np.stack(cam.to_camera(flat, scene.curve(flat[:, 2])), axis=1).reshape(pts.shape)


def _dlt(q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """(n, 3, 3) G with q1 ~ G q0 for n sets of K homogeneous correspondences (n, K, 3), by least squares
    on unit vectors (points behind a camera keep their sign), signed so that G q0 points along q1."""
    q0 = q0 / np.linalg.norm(q0, axis=2, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=2, keepdims=True)
    x, y, w = q1[..., 0:1], q1[..., 1:2], q1[..., 2:3]
    zero = np.zeros_like(q0)
    rows = [  # the three components of q1 x (G q0) = 0, linear in G's rows
        np.concatenate([zero, -w * q0, y * q0], axis=2),
        np.concatenate([w * q0, zero, -x * q0], axis=2),
        np.concatenate([-y * q0, x * q0, zero], axis=2),
    ]
    a = np.concatenate(rows, axis=1)
    g = np.linalg.eigh(np.einsum("nki,nkj->nij", a, a))[1][:, :, 0].reshape(-1, 3, 3)  # least-squares null vector
    sign = np.sign(np.einsum("nij,nkj,nki->n", g, q0, q1))
    return g * sign[:, None, None]


class _Motion:
    """From frame t's camera to frame t-1's: c' = R c + T for a point at rest, and both intrinsics."""

    def __init__(self, cam: Camera, prev_cam: Camera) -> None:
        a0, c0 = _axes(cam)
        self.a1, c1 = _axes(prev_cam)
        self.rot = self.a1 @ a0.T
        self.shift = self.a1 @ (c0 - c1)
        self.k0_inv = np.linalg.inv(_intrinsics(cam))
        self.k1 = _intrinsics(prev_cam)
        self.cam, self.prev_cam = cam, prev_cam

    def at_infinity(self) -> np.ndarray:
        """The homography of directions (sky, far terrain): the rotation alone."""
        return self.k1 @ self.rot @ self.k0_inv

    def planes(self, normal: np.ndarray, d: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """(n, 3, 3) homographies K' (R + T n^T / d) K^-1 of planes n.c = d (camera t) whose points move
        by `moved` (n, 3, world axes) between frames t and t-1."""
        trans = self.shift + moved @ self.a1.T
        return self.k1 @ (self.rot + trans[:, :, None] * normal[:, None, :] / d[:, None, None]) @ self.k0_inv

    def fitted(self, now: np.ndarray, before: np.ndarray) -> np.ndarray:
        """(n, 3, 3) homographies fitted to n sets of points in camera t (now) and camera t-1 (before)."""
        return self.k1 @ _dlt(now, before) @ self.k0_inv


Fan = tuple[int, np.ndarray, float]  # (first triangle id, triangles (n, 3, 3) in layer coordinates, z offset)
PointSet = tuple[np.ndarray, np.ndarray, float, float, np.ndarray]  # layer points at t, t-1, offsets, ids


def _homographies(
    scene: Scene, t: int, cam: Camera, prev_cam: Camera, parts: Visible, first: list[int], count: int
) -> tuple[np.ndarray, np.ndarray, list[Fan], np.ndarray]:
    """Homographies from frame t's pixels to frame t-1's per surface id, which ids have one, the fans of
    folded parts (ids from `count` on, see `_folds`), and the part id each id belongs to."""
    motion = _Motion(cam, prev_cam)
    h = np.zeros((count, 3, 3))
    ok = np.zeros(count, bool)
    h[SKY_ID] = motion.at_infinity()
    h[GROUND_ID] = motion.planes(np.array([[0.0, 1.0, 0.0]]), np.array([CAM_H]), np.zeros((1, 3)))[0]
    ok[[SKY_ID, GROUND_ID]] = True
    for k, (azimuth, _elevation, _) in enumerate(scene.clouds):  # flat sprites at infinity: they translate
        du = prev_cam.f * (math.tan(azimuth - prev_cam.yaw) - math.tan(azimuth - cam.yaw))
        h[FIRST_CLOUD + k] = [[1.0, 0.0, du], [0.0, 1.0, prev_cam.cy - cam.cy], [0.0, 0.0, 1.0]]
        ok[FIRST_CLOUD + k] = True
    things = [n for n, p in enumerate(parts) if p[0].group != GROUND]  # road paint is the road plane
    if not things:
        return h, ok, [], np.arange(count)
    chosen, ids = [parts[n] for n in things], np.array([first[n] for n in things])
    folded, moved = _rigid(h, ok, ids, chosen, scene, t, motion)
    _limbs(h, ids, chosen, scene, t, motion)
    return _folds(h, ok, ids, chosen, folded, moved, scene, motion)


def _rigid(
    h: np.ndarray, ok: np.ndarray, ids: np.ndarray, parts: Visible, scene: Scene, t: int, motion: _Motion
) -> tuple[np.ndarray, np.ndarray]:
    """Plane-induced homographies of the parts (into h[ids]). Returns which parts are folded (not planar)
    and each part's world displacement from frame t to t-1.

    A layer moves its parts back by dz along the road, and sideways as the curve bends under them,
    taken at each part's centre.
    """
    normal, d, rms, z_world = _plane_fits(parts, scene, motion.cam)
    step = {id(layer): layer.offset(t) - layer.offset(t - 1) for layer in scene.layers}
    dz = np.array([step[id(p[4])] for p in parts])
    moved = np.zeros((len(parts), 3))
    moved[:, 0] = scene.curve(z_world - dz) - scene.curve(z_world)
    moved[:, 2] = -dz
    edge_on = d < EDGE_ON
    h[ids] = motion.planes(normal, np.where(edge_on, 1.0, d), moved)
    ok[ids] = ~edge_on
    return (rms > PLANAR_M) & ~edge_on, moved


def _limbs(h: np.ndarray, ids: np.ndarray, parts: Visible, scene: Scene, t: int, motion: _Motion) -> None:
    """Swinging limbs: per contour, the homography fitted to where its vertices and centre were in frame
    t-1 (into h), exact for the generator's sheared quads."""
    sets: dict[int, list[PointSet]] = {}  # by the number of points per contour, for batched fits
    earlier: dict[int, list[Part]] = {}  # each walker's parts at t-1, computed once
    for n, (thing, i, part, off, layer) in enumerate(parts):
        if not _split(thing, i):
            continue
        if id(thing) not in earlier:
            earlier[id(thing)] = thing.parts_at(t - 1)
        now, before = _corners(part.polys), _corners(earlier[id(thing)][i].polys)
        target = ids[n] + np.arange(len(now))
        sets.setdefault(now.shape[1], []).append((now, before, off, layer.offset(t - 1), target))
    for group in sets.values():
        size = [len(s[0]) for s in group]
        now = _to_camera(
            np.concatenate([s[0] for s in group]), np.repeat([s[2] for s in group], size), scene, motion.cam
        )
        before = _to_camera(
            np.concatenate([s[1] for s in group]), np.repeat([s[3] for s in group], size), scene, motion.prev_cam
        )
        h[np.concatenate([s[4] for s in group])] = motion.fitted(now, before)


def _folds(
    h: np.ndarray,
    ok: np.ndarray,
    ids: np.ndarray,
    parts: Visible,
    folded: np.ndarray,
    moved: np.ndarray,
    scene: Scene,
    motion: _Motion,
) -> tuple[np.ndarray, np.ndarray, list[Fan], np.ndarray]:
    """Folded parts (a car's outline folds over its rear window) split into planar triangles around each
    contour's centre, each with its own plane's homography under the part's motion and an id from len(h)
    on; the part's plane fit covers the few pixels no triangle reaches.

    Returns h and ok grown by the triangles, the fans and the part id of every id.
    """
    count = len(h)
    chosen = np.flatnonzero(folded)
    if not len(chosen):
        return h, ok, [], np.arange(count)
    tris = [_fan(parts[n][2].polys) for n in chosen]
    size = [len(x) for x in tris]
    c = _to_camera(np.concatenate(tris), np.repeat([parts[n][3] for n in chosen], size), scene, motion.cam)
    normal = np.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    d = np.einsum("ij,ij->i", normal, c[:, 0])
    normal *= np.where(d < 0, -1.0, 1.0)[:, None]
    d = np.abs(d)
    part = np.repeat(chosen, size)
    owner = ids[part]
    edge_on = d < EDGE_ON  # or a sliver: its pixels keep the part's homography
    fitted = motion.planes(normal, np.where(edge_on, 1.0, d), moved[part])
    fitted[edge_on] = h[owner[edge_on]]
    first = count + np.concatenate([[0], np.cumsum(size)[:-1]])
    fans = [(int(f), x, parts[n][3]) for f, x, n in zip(first, tris, chosen, strict=True)]
    h = np.concatenate([h, fitted])
    ok = np.concatenate([ok, ok[owner]])
    return h, ok, fans, np.concatenate([np.arange(count), owner])


def _fan(polys: np.ndarray) -> np.ndarray:
    """The (m * k, 3, 3) triangles joining each of m contours' k edges to the contour's centre."""
    centre = np.broadcast_to(polys.mean(axis=1, keepdims=True), polys.shape)
    return np.stack([centre, polys, np.roll(polys, -1, axis=1)], axis=2).reshape(-1, 3, 3)


def _fan_map(scene: Scene, cam: Camera, fans: list[Fan], shape: tuple[int, int]) -> np.ndarray:
    """The fan triangle under each pixel (-1: none), filled in draw order like the id map."""
    fan_map = np.full(shape, -1, np.int32)
    calls = [(0, tris, off) for _, tris, off in fans]
    fill(None, calls, scene, cam, (fan_map, [f for f, _, _ in fans], [True] * len(fans)))
    return fan_map


def _apply(
    h: np.ndarray, ok: np.ndarray, id_map: np.ndarray, prev_ids: np.ndarray, fans: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, its surface's homography: the backward flow, and where frame t-1 shows the same surface.

    `fans`: (fan map, part id of each id) where folded parts were split into triangles.
    """
    height, width = id_map.shape
    surface = id_map
    if fans is not None:  # a triangle counts where its own part is the one in view
        fan_map, owner = fans
        where = np.flatnonzero(fan_map >= 0)
        tri = fan_map.ravel()[where]
        keep = owner[tri] == id_map.ravel()[where]
        surface = id_map.copy()
        surface.ravel()[where[keep]] = tri[keep]
    table = h.reshape(len(h), 9).T.astype(np.float32)
    x, y = np.empty((height, width), np.float32), np.empty((height, width), np.float32)
    behind = np.empty((height, width), bool)
    for top in range(0, height, BAND):  # in bands of rows, so the temporaries stay in cache
        rows = slice(top, top + BAND)
        _map_rows(table, surface[rows], top, x[rows], y[rows], behind[rows])
    flow = np.empty((height, width, 2), np.float32)
    np.subtract(x, np.arange(width, dtype=np.float32)[None, :], out=flow[..., 0])
    np.subtract(y, np.arange(height, dtype=np.float32)[:, None], out=flow[..., 1])
    flow[behind] = 0.0  # no source: the point is behind frame t-1's camera
    # Frame t-1's surface where the point lands, read as warp_with_flow reads labels (nearest, remap).
    seen = cv2.remap(
        prev_ids.astype(np.float32), x, y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0
    )
    valid = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    valid &= seen == id_map
    valid &= np.take(ok, id_map, mode="wrap")
    return flow, valid


def _map_rows(
    table: np.ndarray, surface: np.ndarray, top: int, x: np.ndarray, y: np.ndarray, behind: np.ndarray
) -> None:
    """Where the pixels of rows top.. land in frame t-1 (into x, y), by their surface's homography, and
    which points are behind frame t-1's camera (x = y = -1 there)."""
    c = np.take(table, surface, axis=1, mode="wrap")  # one map per coefficient; "wrap": ids are in range
    u = np.arange(surface.shape[1], dtype=np.float32)[None, :]
    v = np.arange(top, top + surface.shape[0], dtype=np.float32)[:, None]
    w = c[6] * u
    w += c[7] * v
    w += c[8]  # the depth in frame t-1, up to a positive factor
    np.less_equal(w, 0.0, out=behind)
    w[behind] = 1.0
    np.multiply(c[0], u, out=x)
    x += c[1] * v
    x += c[2]
    x /= w
    np.multiply(c[3], u, out=y)
    y += c[4] * v
    y += c[5]
    y /= w
    x[behind] = -1.0
    y[behind] = -1.0


class ExactFlow:
    """Exact backward flow of one synthetic scene. It remembers the last frame's surface ids, so frames
    asked for in order cost one painter's pass each, not two."""

    MAX_KEYS = 1 << 16  # part ids remembered along a run of consecutive frames before starting afresh

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self._ids = _Ids(FIRST_CLOUD + len(scene.clouds))
        self._last: tuple[int, tuple[int, int], np.ndarray] | None = None  # (t, (h, w), id map)

    def __call__(
        self, t: int, height: int, width: int, materials: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Backward flow (HxWx2 float32) from frame t >= 1 to frame t-1, and its validity mask (HxW bool).

        `materials`, an HxW uint8 array, receives frame t's material map from the same pass (what
        synthetic.render_materials returns), so rendering with flow needs no second material pass.
        """
        if t < 1:
            raise ValueError(f"frame {t} has no previous frame")
        scene, last = self.scene, self._last
        follows = last is not None and last[0] == t - 1 and last[1] == (height, width)
        if not follows or len(self._ids.keys) > self.MAX_KEYS:  # ids only need to agree between t-1 and t
            self._ids, last = _Ids(FIRST_CLOUD + len(scene.clouds)), None
        cam, id_map, parts, first = _id_pass(scene, t, height, width, self._ids, materials)
        if last is not None:
            prev_cam, prev_ids = Camera(scene, t - 1, height, width), last[2]
        else:
            prev_cam, prev_ids, _, _ = _id_pass(scene, t - 1, height, width, self._ids)
        self._last = (t, (height, width), id_map)
        count = self._ids.next
        h, ok, fans, owner = _homographies(scene, t, cam, prev_cam, parts, first, count)
        folded = (_fan_map(scene, cam, fans, id_map.shape), owner) if fans else None
        return _apply(h, ok, id_map, prev_ids, folded)


def exact_flow(
    scene: Scene, t: int, height: int, width: int, materials: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ExactFlow(scene)(t, height, width, materials), without memory between calls."""
    return ExactFlow(scene)(t, height, width, materials)
