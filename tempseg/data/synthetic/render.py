"""Rendering of one synthetic frame: camera, projection with clipping, painter's algorithm into a material map.

Public for the exact optical flow (data/synthetic/flow.py), which repeats the same painter's pass with
surface ids in place of materials.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tempseg.data.synthetic.scene import CAM_H, SKY_BANDS, Layer, Part, Thing
from tempseg.data.synthetic.world import NEAR_M, Scene

FOCAL = 0.75  # focal length as a fraction of the width (67 degree horizontal field of view)
HORIZON = 0.45  # horizon row as a fraction of the height, camera level
DETAIL_M = 40.0  # windows, lamps and similar small parts are skipped beyond this depth
SHIFT = 4  # fillPoly fractional bits: 1/16 pixel vertex precision keeps small renders faithful
GUARD_PX = 8000.0  # polygons reaching further outside the frame are clipped (fillPoly is exact to ~16k px)
STRIP_Z = np.geomspace(2.5, 600.0, 18)  # depths at which the ground bands are sampled (metres ahead)


class Camera:
    """Pinhole camera at frame t: world pose from the ego motion, intrinsics from the frame size."""

    def __init__(self, scene: Scene, t: int, height: int, width: int) -> None:
        ego = scene.ego
        self.z = ego.z(t)
        self.x_rel = ego.x(t)  # lateral position in road coordinates (for choosing visible side faces)
        self.x = scene.curve(self.z) + self.x_rel
        yaw = math.atan(scene.curve.slope(self.z)) + ego.yaw_at(t)
        self.yaw = yaw
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.f = FOCAL * width
        self.cx = width / 2.0
        self.cy = HORIZON * height + self.f * math.tan(ego.pitch_at(t))  # horizon row, with pitch jitter
        self.height, self.width = height, width

    def to_camera(self, verts: np.ndarray, curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x relative to the road, y, z) -> camera (right, down-from-camera-height, forward)."""
        dx = verts[:, 0] + curve - self.x
        dz = verts[:, 2] - self.z
        return self.cos * dx - self.sin * dz, CAM_H - verts[:, 1], self.sin * dx + self.cos * dz


def render_materials(scene: Scene, t: int, height: int, width: int) -> np.ndarray:
    """The HxW uint8 material map of frame t: sky, clouds, ground, then things far to near."""
    cam = Camera(scene, t, height, width)
    out = np.empty((height, width), np.uint8)
    sky_and_ground(out, scene, cam)
    clouds(out, scene, cam)
    calls = ground_calls(scene, cam)
    calls += [(part.mat, part.polys, off) for _thing, _i, part, off, _layer in visible_parts(scene, t, cam)]
    fill(out, calls, scene, cam)
    return out


def visible_parts(scene: Scene, t: int, cam: Camera) -> list[tuple[Thing, int, Part, float, Layer]]:
    """(thing, part index, part, z offset, layer) of every part drawn at frame t, in draw order."""
    out = []
    for _group, depth, thing, off, layer in scene.visible(t, cam.z):
        detail = depth < DETAIL_M
        right = cam.x_rel > thing.x
        for i, part in enumerate(thing.parts_at(t)):
            if (part.side and (part.side > 0) != right) or (part.detail and not detail):
                continue
            out.append((thing, i, part, off, layer))
    return out


def sky_and_ground(out: np.ndarray, scene: Scene, cam: Camera) -> None:
    """Sky as bands of rising elevation above the horizon, distant terrain below it."""
    pal = scene.palette
    horizon = int(np.clip(round(cam.cy), 0, out.shape[0]))
    out[horizon:] = pal("terrain_far")
    top = horizon
    for band in range(SKY_BANDS):
        elevation = 0.5 * ((band + 1) / SKY_BANDS) ** 1.4  # radians; bands thin out towards the horizon
        row = 0 if band == SKY_BANDS - 1 else int(np.clip(round(cam.cy - cam.f * math.tan(elevation)), 0, top))
        out[row:top] = pal("sky", band)
        top = row


def clouds(out: np.ndarray | None, scene: Scene, cam: Camera, ids: np.ndarray | None = None, first: int = 0) -> None:
    """Clouds at infinity: they move only with the camera's yaw and pitch. With `ids`, cloud k is also
    filled there with the id first + k (data/flow.py)."""
    for k, (azimuth, elevation, outline) in enumerate(scene.clouds):
        rel = azimuth - cam.yaw
        if abs(rel) > 1.3:
            continue
        centre = np.array([cam.cx + cam.f * math.tan(rel), cam.cy - cam.f * math.tan(elevation)])
        pts = np.rint((centre + cam.f * outline) * (1 << SHIFT)).astype(np.int32)
        if out is not None:
            cv2.fillPoly(out, [pts], scene.palette("cloud", k), cv2.LINE_8, SHIFT)
        if ids is not None:
            cv2.fillPoly(ids, [pts], first + k, cv2.LINE_8, SHIFT)


def ground_calls(scene: Scene, cam: Camera) -> list[tuple[int, np.ndarray, float]]:
    """Ground bands (sampled along the curved road) and dashed lane lines as fill calls."""
    zs = cam.z + STRIP_Z
    calls = []
    for x0, x1, mat in scene.strips:
        poly = np.empty((1, 2 * len(zs), 3))
        poly[0, :, 0] = np.concatenate([np.full(len(zs), x0), np.full(len(zs), x1)])
        poly[0, :, 1] = 0.0
        poly[0, :, 2] = np.concatenate([zs, zs[::-1]])
        calls.append((mat, poly, 0.0))
    dashes = scene.dashes(cam.z + STRIP_Z[0], cam.z + 120.0)
    if len(dashes):
        calls.append((scene.palette("lane_mark", 0), dashes, 0.0))
    return calls


IdFill = tuple[np.ndarray, list[int], list[bool]]  # id map (int32), first id of each call, one id per contour


def fill(
    out: np.ndarray | None,
    calls: list[tuple[int, np.ndarray, float]],
    scene: Scene,
    cam: Camera,
    ids: IdFill | None = None,
) -> None:
    """Project every call's contours at once (z shifted by the call's layer offset), cull what is out of
    view, clip the few that cross the near plane or the guard band, and fill the rest in order.

    With `ids` (data/flow.py), the same contours are also filled into an int32 id map: call i with the id
    first[i], or, where split[i], its contour j with first[i] + j (for parts whose contours move apart).
    `out` None fills the id map alone.
    """
    if not calls:
        return
    flat = [polys.reshape(-1, 3) for _, polys, _ in calls]
    counts = np.fromiter((len(f) for f in flat), np.int64, len(flat))
    verts = np.concatenate(flat)
    verts[:, 2] += np.repeat(np.fromiter((c[2] for c in calls), np.float64, len(calls)), counts)
    xc, yc, zc = cam.to_camera(verts, scene.curve(verts[:, 2]))
    h, w = cam.height, cam.width
    # Frustum culling by half-spaces, valid for vertices behind the camera too: a polygon whose
    # vertices all lie beyond one side plane (or the near plane) cannot reach the frame.
    beyond = np.stack(
        [
            zc < NEAR_M,
            xc > (w - cam.cx) / cam.f * zc,
            xc < -cam.cx / cam.f * zc,
            yc > (h - cam.cy) / cam.f * zc,
            yc < -cam.cy / cam.f * zc,
        ]
    )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    culled = np.logical_and.reduceat(beyond, starts, axis=1).any(0)
    zs = np.maximum(zc, NEAR_M)
    u = cam.cx + cam.f * xc / zs
    v = cam.cy + cam.f * yc / zs
    outside = (u < -GUARD_PX) | (u > w + GUARD_PX) | (v < -GUARD_PX) | (v > h + GUARD_PX)
    needs_clip = beyond[0] | outside
    slow = np.logical_or.reduceat(needs_clip, starts)
    pts = np.empty((len(verts), 2), np.int32)
    pts[:, 0] = np.rint(u * (1 << SHIFT))
    pts[:, 1] = np.rint(v * (1 << SHIFT))
    fill_poly, line8 = cv2.fillPoly, cv2.LINE_8
    start_list, slow_list = starts.tolist(), slow.tolist()
    for i in np.flatnonzero(~culled).tolist():
        mat, polys, _ = calls[i]
        s = start_list[i]
        m, k = polys.shape[0], polys.shape[1]
        if not slow_list[i]:
            contours = pts[s : s + m * k].reshape(m, k, 2)
            if out is not None:
                # an (m, k, 2) int32 array is m contours to OpenCV; the stubs take only a Sequence of arrays
                fill_poly(out, contours, mat, line8, SHIFT)  # pyright: ignore[reportCallIssue, reportArgumentType]
            if ids is not None:
                fill_ids(ids, i, contours, range(m))
            continue
        # Per contour: cull again, fill the clean ones directly and clip only the rest.
        sl = slice(s, s + m * k)
        gone = beyond[:, sl].reshape(5, m, k).all(2).any(0)
        needs = needs_clip[sl].reshape(m, k).any(1)
        index = np.flatnonzero(~needs & ~gone).tolist()
        contours = [pts[s + j * k : s + (j + 1) * k] for j in index]
        for j in np.flatnonzero(needs & ~gone).tolist():
            a = s + j * k
            c = _clip(xc[a : a + k], yc[a : a + k], zc[a : a + k], cam, w, h)
            if c is not None:
                contours.append(c)
                index.append(j)
        if contours:
            if out is not None:
                fill_poly(out, contours, mat, line8, SHIFT)
            if ids is not None:
                fill_ids(ids, i, contours, index)


def fill_ids(ids: IdFill, call: int, contours: np.ndarray | list[np.ndarray], index: range | list[int]) -> None:
    """A call's contours into the id map: one id for all (filled together, even-odd like the materials),
    or one per contour where the call is split."""
    target, first, split = ids
    if not split[call]:
        # an (m, k, 2) int32 array is m contours to OpenCV; the stubs take only a Sequence of arrays
        cv2.fillPoly(target, contours, first[call], cv2.LINE_8, SHIFT)  # pyright: ignore[reportCallIssue, reportArgumentType]
        return
    for c, j in zip(contours, index, strict=True):
        cv2.fillPoly(target, [c], first[call] + j, cv2.LINE_8, SHIFT)


def _clip(xc: np.ndarray, yc: np.ndarray, zc: np.ndarray, cam: Camera, w: int, h: int) -> np.ndarray | None:
    """One contour clipped to z >= NEAR_M in camera space, projected, then clipped to the guard band."""
    pts = _clip_plane(np.stack([xc, yc, zc], axis=1), 2, NEAR_M, 1)
    if pts is None:
        return None
    uv = np.stack([cam.cx + cam.f * pts[:, 0] / pts[:, 2], cam.cy + cam.f * pts[:, 1] / pts[:, 2]], axis=1)
    for axis, limit, keep in ((0, -GUARD_PX, 1), (0, w + GUARD_PX, -1), (1, -GUARD_PX, 1), (1, h + GUARD_PX, -1)):
        uv = _clip_plane(uv, axis, limit, keep)
        if uv is None:
            return None
    return np.rint(uv * (1 << SHIFT)).astype(np.int32)


def _clip_plane(pts: np.ndarray, axis: int, limit: float, keep: int) -> np.ndarray | None:
    """Sutherland-Hodgman against one axis-aligned plane, keeping keep * (p[axis] - limit) >= 0."""
    d = keep * (pts[:, axis] - limit)
    inside = d >= 0
    if inside.all():
        return pts
    if not inside.any():
        return None
    out = []
    n = len(pts)
    for i in range(n):
        j = (i + 1) % n
        if inside[i]:
            out.append(pts[i])
        if inside[i] != inside[j]:
            a = d[i] / (d[i] - d[j])
            out.append(pts[i] + a * (pts[j] - pts[i]))
    return np.array(out) if len(out) >= 3 else None
