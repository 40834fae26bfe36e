"""data/flow.py: exact backward flow of the synthetic video, its validity mask, and the DIS fallback."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import pytest
import torch

from tempseg.data.flow import GridFlow, backward_flow, dis_flow
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo
from tempseg.data.synthetic.flow import FIRST_CLOUD, ExactFlow, _fan, _homographies, _id_pass, _Ids, _split
from tempseg.data.synthetic.render import Camera
from tempseg.data.synthetic.scene import CAR, TRUCK, Walker
from tempseg.metrics.consistency import warp_with_flow
from tempseg.models.accel import FEATURE_STRIDE, warp
from tempseg.runtime.stream import HostFlow
from tempseg.train.accel import grid_flow_target
from tempseg.train.clips import sample_batch

H, W = 256, 512  # the training size: flow is a few pixels per frame here
# (seed, frame): moving vehicles close to the camera (an oncoming car 3.5 m ahead at frame 4 of seed 2,
# a slower car 2.8 m ahead in the next lane in seed 1, an overtaking one in seed 3) and ordinary street.
CASES = [(2, 4), (1, 10), (3, 16), (0, 235), (5, 100)]


@pytest.fixture(scope="module")
def cases() -> list[tuple[Frame, Frame, np.ndarray, np.ndarray]]:
    """(frame t-1, frame t, flow, valid) of every case, without degradations."""
    out = []
    for seed, t in CASES:
        video = SyntheticVideo(seed, H, W, degrade_rate=0.0)
        flow, valid = video.exact_flow(t)
        out.append((video.render(t - 1), video.render(t), flow, valid))
    return out


def _agreement(prev_label: np.ndarray, label: np.ndarray, flow: np.ndarray, where: np.ndarray) -> float:
    warped, _ = warp_with_flow(prev_label, flow)
    return float((warped == label)[where].mean())


def test_exact_flow_carries_the_previous_label_onto_the_current_one(cases):
    for prev, cur, flow, valid in cases:
        assert flow.shape == (H, W, 2)
        assert flow.dtype == np.float32
        assert valid.dtype == bool
        assert valid.mean() > 0.9
        assert np.linalg.norm(flow, axis=2)[valid].mean() > 3.0  # enough motion that a zero flow fails
        assert _agreement(prev.label, cur.label, flow, valid) >= 0.97
        vehicles = valid & np.isin(cur.label, [CAR, TRUCK])
        if vehicles.sum() > 500:
            assert _agreement(prev.label, cur.label, flow, vehicles) >= 0.97
    # The close moving vehicles are really there and really move: oncoming car of seed 2 at frame 4.
    prev, cur, flow, valid = cases[0]
    car = valid & (cur.label == CAR)
    assert car.mean() > 0.03
    assert np.linalg.norm(flow, axis=2)[car].mean() > 10.0


def test_zero_flow_scores_clearly_worse_on_the_same_pixels(cases):
    for prev, cur, flow, valid in cases:
        exact_miss = 1.0 - _agreement(prev.label, cur.label, flow, valid)
        zero_miss = 1.0 - _agreement(prev.label, cur.label, np.zeros_like(flow), valid)
        assert zero_miss > 0.01
        assert zero_miss > 5 * exact_miss


def test_exact_flow_matches_the_images_too(cases):
    """An independent check of the motion itself: the warped previous image matches up to sensor noise."""
    for prev, cur, flow, valid in cases:
        h, w = flow.shape[:2]
        map_x = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
        map_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
        warped = cv2.remap(prev.image, map_x, map_y, cv2.INTER_LINEAR)
        exact = np.abs(warped.astype(np.float32) - cur.image).mean(axis=2)[valid].mean()
        still = np.abs(prev.image.astype(np.float32) - cur.image).mean(axis=2)[valid].mean()
        assert exact < 5.0
        assert exact < 0.75 * still


def test_mask_is_false_on_disocclusions_and_sources_outside_the_frame(cases):
    outside = 0
    for prev, cur, flow, valid in cases:
        h, w = flow.shape[:2]
        x = flow[..., 0] + np.arange(w)[None, :]
        y = flow[..., 1] + np.arange(h)[:, None]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        assert not valid[~inside].any()
        outside += int((~inside).sum())
        hidden = inside & ~valid  # occluded in t-1 or newly in view: the warped label is often wrong there
        assert hidden.sum() > 200
        assert _agreement(prev.label, cur.label, flow, hidden) < 0.8
    assert outside > 100  # (an overtaking car, seed 3, came from beside the camera)
    # The vacated road behind the close oncoming car of seed 2 is among them.
    prev, cur, flow, valid = cases[0]
    was_car = warp_with_flow(prev.label, flow)[0] == CAR
    assert (was_car & (cur.label != CAR) & ~valid).sum() > 200


def test_mask_is_false_where_the_surface_did_not_exist_in_the_previous_frame():
    """Parts that enter the view between two frames (far things, detail appearing) are never valid."""
    new_pixels = 0
    for seed, t in [(0, 40), (1, 77), (3, 120), (4, 200), (5, 31)]:
        video = SyntheticVideo(seed, H, W, degrade_rate=0.0)
        ids = _Ids(FIRST_CLOUD + len(video.scene.clouds))
        _, now, _, _ = _id_pass(video.scene, t, H, W, ids)
        _, before, _, _ = _id_pass(video.scene, t - 1, H, W, ids)
        new = ~np.isin(now, before)
        _, valid = ExactFlow(video.scene)(t, H, W)
        assert not valid[new].any()
        new_pixels += int(new.sum())
    assert new_pixels > 0


def _project(cam: Camera, scene, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xc, yc, zc = cam.to_camera(verts, scene.curve(verts[:, 2]))
    return np.stack([cam.cx + cam.f * xc / zc, cam.cy + cam.f * yc / zc, np.ones_like(zc)], axis=1), zc


class Surfaces(NamedTuple):
    cam: Camera
    prev_cam: Camera
    id_map: np.ndarray
    parts: list
    first: list[int]
    h: np.ndarray  # homography of each surface id, frame t -> t-1
    ok: np.ndarray
    owner: np.ndarray  # the part id each id belongs to (fan triangles from `count` on)
    count: int  # ids of parts; fan triangles come after


def _surfaces(scene, t: int) -> Surfaces:
    """Frame t's id pass and the per-surface homographies to frame t-1, as ExactFlow computes them."""
    ids = _Ids(FIRST_CLOUD + len(scene.clouds))
    cam, id_map, parts, first = _id_pass(scene, t, H, W, ids)
    prev_cam = Camera(scene, t - 1, H, W)
    h, ok, _, owner = _homographies(scene, t, cam, prev_cam, parts, first, ids.next)
    return Surfaces(cam, prev_cam, id_map, parts, first, h, ok, owner, ids.next)


def test_every_surface_maps_its_vertices_to_where_they_were():
    """The per-surface homographies carry each part's vertices, as projected in frame t, onto the same
    vertices projected in frame t-1: still parts, moving layers, swinging limbs and folded outlines (split
    into triangles around their centre) alike."""
    limbs = folds = 0
    for seed, t in [*CASES, (4, 30)]:
        scene = SyntheticVideo(seed, H, W).scene
        s = _surfaces(scene, t)
        for (thing, i, part, off, layer), f in zip(s.parts, s.first, strict=True):
            now, before = part.polys, thing.parts_at(t - 1)[i].polys
            m, k = now.shape[:2]
            triangles = s.count + np.flatnonzero(s.owner[s.count :] == f)
            # Exact (0.05 px) but for two approximations of rigid parts, each well under a pixel: a moving
            # layer's sideways shift along the curved road is taken at the part's centre, and a long part's
            # contours (a facade's windows) bent by the curve share one fitted plane.
            moving = layer.offset(t) != layer.offset(t - 1)
            if len(triangles):  # a folded part: its fan of triangles, three corners each
                now, before, surface = _fan(now), _fan(before), np.repeat(triangles, 3)
                tolerance = 0.5 if moving else 0.05
                folds += 1
            elif isinstance(thing, Walker) and i in thing.swings:  # a limb: one surface per contour
                surface = f + np.repeat(np.arange(m), k)
                tolerance = 0.05
                limbs += 1
            else:
                surface = np.full(m * k, f)
                tolerance = 0.5 if moving or m > 1 else 0.05
            p0, z0 = _project(s.cam, scene, now.reshape(-1, 3) + np.array([0.0, 0.0, off]))
            p1, z1 = _project(s.prev_cam, scene, before.reshape(-1, 3) + np.array([0.0, 0.0, layer.offset(t - 1)]))
            mapped = np.einsum("nij,nj->ni", s.h[surface], p0)
            err = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - p1[:, :2], axis=1)
            seen = (z0 > 2.0) & (z1 > 2.0) & s.ok[surface]  # in front of both cameras
            assert err[seen].max(initial=0.0) < tolerance, (seed, t, thing, i)
    assert limbs > 10
    assert folds > 10


def test_flow_at_each_part_follows_its_surface_point():
    """Pixel by pixel: near each corner of every visible part (10% in towards its contour's centre, a point
    of the part), the flow at that pixel is where the point was in frame t-1. Catches what the per-surface
    homographies are not used for: the fan triangles of folded parts and the per-contour limbs."""
    errors, folded_errors = [], []
    for seed, t in [(2, 4), (1, 10), (3, 16), (4, 30)]:
        video = SyntheticVideo(seed, H, W)
        scene = video.scene
        flow, valid = video.exact_flow(t)
        s = _surfaces(scene, t)
        for (thing, i, part, off, layer), f in zip(s.parts, s.first, strict=True):
            now, before = part.polys, thing.parts_at(t - 1)[i].polys
            inner = now.mean(axis=1, keepdims=True) + 0.9 * (now - now.mean(axis=1, keepdims=True))
            earlier = before.mean(axis=1, keepdims=True) + 0.9 * (before - before.mean(axis=1, keepdims=True))
            p0, z0 = _project(s.cam, scene, inner.reshape(-1, 3) + np.array([0.0, 0.0, off]))
            p1, z1 = _project(s.prev_cam, scene, earlier.reshape(-1, 3) + np.array([0.0, 0.0, layer.offset(t - 1)]))
            col, row = np.rint(p0[:, 0]).astype(int), np.rint(p0[:, 1]).astype(int)
            seen = (z0 > 2.0) & (z1 > 2.0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
            col, row, p0, p1 = col[seen], row[seen], p0[seen], p1[seen]
            surface = f + (np.repeat(np.arange(now.shape[0]), now.shape[1])[seen] if _split(thing, i) else 0)
            mine = (s.id_map[row, col] == surface) & valid[row, col]
            # The flow varies little within the pixel's distance (<= 0.71 px) to the projected point.
            err = np.linalg.norm(flow[row, col] - (p1[:, :2] - p0[:, :2]), axis=1)[mine]
            (folded_errors if (s.owner[s.count :] == f).any() else errors).extend(err.tolist())
    assert len(errors) > 1000
    assert len(folded_errors) > 50
    assert np.median(errors) < 0.05
    assert np.quantile(errors, 0.99) < 0.2
    # Folded outlines too (one plane for the whole part instead of its triangles is off by 0.3-0.4 px here).
    assert np.median(folded_errors) < 0.05
    assert np.max(folded_errors) < 0.25


def test_frames_carry_the_flow_only_when_asked():
    plain = SyntheticVideo(2, H, W)
    flowing = SyntheticVideo(2, H, W, with_flow=True)
    assert plain.render(4).flow_prev is None
    assert flowing.render(0).flow_prev is None
    frames = [flowing.render(t) for t in (3, 4)]  # in order: the second reuses the first's surface ids
    frame = frames[1]
    expected, valid = plain.exact_flow(4)
    np.testing.assert_array_equal(frame.label, plain.render(4).label)
    np.testing.assert_array_equal(frame.image, plain.render(4).image)
    np.testing.assert_array_equal(frame.flow_prev, expected)
    np.testing.assert_array_equal(frame.flow_valid, valid)
    flow, mask, source = backward_flow(frame)
    assert source == "exact"
    assert flow is frame.flow_prev
    assert mask is frame.flow_valid
    small = plain.render(4, (128, 256))
    flow, mask, source = backward_flow(small, source=plain)
    assert source == "exact"
    assert flow.shape == (128, 256, 2)
    assert mask.shape == (128, 256)
    with pytest.raises(ValueError, match="no previous frame"):
        plain.exact_flow(0)
    old = Frame(image=frame.image, label=None, index=0, sequence="old")  # the four-field form still works
    assert old.flow_prev is None
    assert old.flow_valid is None


def test_dis_flow_masks_what_a_moving_square_uncovered():
    rng = np.random.default_rng(0)

    def texture(shape: tuple[int, int, int]) -> np.ndarray:
        blurred = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 2.0)
        return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)

    background, square = texture((128, 192, 3)), texture((48, 48, 3))
    prev, cur = background.copy(), background.copy()
    prev[40:88, 60:108] = square
    cur[40:88, 68:116] = square  # moved 8 px right: columns 60..67 are background uncovered in frame t
    frames = [Frame(image, None, i, "a moving square") for i, image in enumerate((prev, cur))]
    flow, valid, source = backward_flow(frames[1], frames[0])
    assert source == "dis"
    assert flow.shape == (128, 192, 2)
    assert valid.shape == (128, 192)
    assert valid[42:86, 61:67].mean() < 0.3  # uncovered: frame t-1 showed the square there
    assert valid[44:84, 72:112].mean() > 0.9  # the square itself, moved but visible before
    still = np.ones_like(valid)
    still[30:98, 50:130] = False
    assert valid[still].mean() > 0.9
    np.testing.assert_array_equal(dis_flow(cur, prev)[1], valid)


# ---- the host flow of a keyframe pair (the `flow` input of an Accel update graph) -------------------------

PAIR_HW = (128, 256)  # DIS runs at half size: 64x128, where a 16 px shift is 8 px
GRID_HW = (PAIR_HW[0] // FEATURE_STRIDE, PAIR_HW[1] // FEATURE_STRIDE)
SHIFT = 16  # pixels to the right from frame t-1 to frame t: 2 cells of the state's stride-8 grid
INNER = (slice(None), slice(2, -2), slice(4, -4))  # grid cells away from the border np.roll wraps round


def _shifted_pair() -> tuple[np.ndarray, np.ndarray]:
    """(frame t-1, frame t): a smooth random texture with detail in every grid cell, then the same texture
    moved SHIFT px right, so frame t shows at x what frame t-1 showed at x - SHIFT."""
    rng = np.random.default_rng(0)
    h, w = PAIR_HW
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    previous = cv2.GaussianBlur(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 1.5)
    return previous, np.roll(previous, SHIFT, axis=1)


def _runtime_flow(frames: list[np.ndarray]) -> np.ndarray:
    """[2, h, w]: what the runtime's stream hands the update graph on the last of `frames`."""
    buffer = np.zeros((1, 2, *GRID_HW), np.float32)
    host = HostFlow(buffer)
    for image in frames:
        host(image, needed=True)
    return buffer[0]


def _pooled(image: np.ndarray) -> torch.Tensor:
    """A stand-in for a feature map on the grid: the frame averaged over each cell, [1, 3, h, w]."""
    cells = cv2.resize(image.astype(np.float32), GRID_HW[::-1], interpolation=cv2.INTER_AREA)
    return torch.from_numpy(cells).permute(2, 0, 1)[None]


def test_the_runtime_flow_points_back_by_the_shift_in_grid_pixels():
    """Backward flow, current -> previous: each pixel of frame t came from 16 px (2 cells) to its left."""
    flow = _runtime_flow(list(_shifted_pair()))
    assert flow.shape == (2, *GRID_HW)
    np.testing.assert_allclose(flow[0][INNER[1:]], -SHIFT / FEATURE_STRIDE, atol=0.3)
    np.testing.assert_allclose(flow[1][INNER[1:]], 0.0, atol=0.3)


def test_warping_the_previous_features_by_the_runtime_flow_lands_them_on_the_current_frame():
    """The sign the Accel update graph needs: warp(state of t-1, flow) is the state of frame t."""
    previous, current = _shifted_pair()
    flow = torch.from_numpy(_runtime_flow([previous, current]))[None]

    def error(by: torch.Tensor) -> float:
        return float((warp(_pooled(previous), by) - _pooled(current))[(0, *INNER)].abs().mean())

    assert error(flow) < 0.1 * error(torch.zeros_like(flow))
    assert error(flow) < 0.1 * error(-flow)


def test_training_and_the_runtime_compute_the_same_flow_for_the_same_pair():
    """The GridFlow a keyframe model trains with (sample_batch stores its clip()) gives what the runtime hands
    the deployed update graph: same order of the frames, same scale and grid."""
    from tempseg.train.config import preset_config
    from tempseg.train.trainer import TrainingRun

    hw = {"height": PAIR_HW[0], "width": PAIR_HW[1]}
    run = TrainingRun(preset_config("smoke", "base", model="fcresnet18x0.25_accel18x0.25", class_weights="none", **hw))
    assert run.grid_flow is not None
    previous, current = _shifted_pair()
    trained = run.grid_flow.clip([previous, current])
    assert trained.shape == (1, 2, *GRID_HW)
    np.testing.assert_array_equal(trained[0], _runtime_flow([previous, current]))


class _PairSampler:
    """A clip sampler that always hands out the shifted pair, with its exact backward flow."""

    def clip(self, rng: np.random.Generator, length: int) -> tuple[list, list, list]:
        previous, current = _shifted_pair()
        flow = np.zeros((*PAIR_HW, 2), np.float32)
        flow[..., 0] = -SHIFT
        valid = np.ones(PAIR_HW, bool)
        valid[:, :SHIFT] = False  # np.roll brought these in from the right edge
        labels = [np.zeros(PAIR_HW, np.uint8)] * length
        return [previous, current], labels, [(flow, valid)]


def test_the_training_batch_flow_follows_the_exact_flow_through_augmentation():
    """sample_batch's host flow (DIS on the augmented frames) agrees with the exact flow flipped and jittered
    the same way, in grid pixels as the flow net's end-point error reads it."""
    batch = sample_batch(
        _PairSampler(),  # pyright: ignore[reportArgumentType]
        seed=0,
        rank=0,
        step=0,
        batch_size=4,
        clip_length=2,
        crop=None,
        grid_flow=GridFlow(GRID_HW),
    )
    assert batch.grid_flows is not None
    assert batch.flows is not None
    assert batch.flow_valid is not None
    target, mask = grid_flow_target(torch.from_numpy(batch.flows[:, 0]), torch.from_numpy(batch.flow_valid[:, 0]))
    signs = set(np.sign(target[:, 0].mean(dim=(1, 2)).numpy()))
    assert signs == {-1.0, 1.0}  # both a flipped and an unflipped clip: the flip must reverse the flow
    inner = mask[(slice(None), *INNER)].expand(-1, 2, -1, -1).numpy()
    difference = batch.grid_flows[:, 0][(slice(None), *INNER)] - target[(slice(None), *INNER)].numpy()
    assert np.abs(difference[inner]).max() < 0.3
