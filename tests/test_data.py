"""data/: synthetic video, augmentation, Cityscapes layout, streams and the command line."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from tempseg.common.errors import UserError, run_cli
from tempseg.data import degrade
from tempseg.data.__main__ import main
from tempseg.data.augment import augment_clip
from tempseg.data.cityscapes import CityscapesClips, cityscapes_source
from tempseg.data.classes import PALETTE, colorize
from tempseg.data.degrade import KINDS
from tempseg.data.demo import write_synthetic_video
from tempseg.data.sources import open_source
from tempseg.data.synthetic import SyntheticVideo, split_seed, synthetic_split, write_cityscapes_tree

H, W = 64, 128  # small frames keep the file fast; the renderer is resolution-free

(ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR) = (0, 1, 2, 5, 7, 8, 10, 11, 13)


def labels_at(video: SyntheticVideo, ts: list[int]) -> list[np.ndarray]:
    return [video.render(t).label for t in ts]


# ---- synthetic video --------------------------------------------------------------------------


def test_same_seed_same_video_other_seed_other_video():
    a, b, c = SyntheticVideo(7, H, W), SyntheticVideo(7, H, W), SyntheticVideo(8, H, W)
    for t in (0, 33):
        fa, fb, fc = a.render(t), b.render(t), c.render(t)
        assert np.array_equal(fa.image, fb.image)
        assert np.array_equal(fa.label, fb.label)
        assert (fa.label != fc.label).mean() > 0.1  # another street, not a jittered copy


def test_frames_have_the_documented_types():
    frame = SyntheticVideo(3, H, W, sequence="synthetic/val/3").render(5)
    assert frame.image.shape == (H, W, 3)
    assert frame.image.dtype == np.uint8
    assert frame.label.shape == (H, W)
    assert frame.label.dtype == np.uint8
    assert set(np.unique(frame.label)) <= {*range(19), 255}
    assert (frame.index, frame.sequence) == (5, "synthetic/val/3")


def test_resolution_changes_only_the_scale():
    for seed, t in ((0, 0), (1, 120)):
        small = SyntheticVideo(seed, 128, 256).render(t).label
        big = SyntheticVideo(seed, 256, 512).render(t).label
        down = cv2.resize(big, (256, 128), interpolation=cv2.INTER_NEAREST)
        assert (small == down).mean() >= 0.9


def test_random_access_equals_iteration():
    iterated = list(SyntheticVideo(11, H, W, length=12))
    assert [f.index for f in iterated] == list(range(12))
    fresh = SyntheticVideo(11, H, W, length=12)
    for t in (9, 2, 11, 0):  # out of order, on an object that never rendered the frames before
        frame = fresh.render(t)
        assert np.array_equal(frame.image, iterated[t].image)
        assert np.array_equal(frame.label, iterated[t].label)
        assert frame.degraded == iterated[t].degraded


def test_the_camera_moves_through_a_coherent_street():
    video = SyntheticVideo(2, H, W)
    first, next_, later = video.render(0).label, video.render(1).label, video.render(40).label
    assert (first == next_).mean() > 0.85  # consecutive frames: the same scene, moved a little
    assert (first != later).mean() > 0.1


def test_classes_cover_cityscapes():
    """Big classes in most frames; every one of the 19 classes somewhere in a few sequences."""
    common = [ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, POLE, SIGN, PERSON, CAR]
    videos = synthetic_split("val", 8, height=48, width=96)
    frames = [label for v in videos for label in labels_at(v, [0, 70, 140, 210])]
    present = np.array([np.bincount(label.ravel(), minlength=256)[:19] > 0 for label in frames])
    share = present.mean(0)
    assert (share[common] >= 0.75).all(), dict(zip(common, share[common].round(2), strict=True))
    assert present.any(0).all(), f"classes never seen: {np.flatnonzero(~present.any(0)).tolist()}"


def test_degradations_come_at_the_configured_rate_and_spare_the_labels():
    video = SyntheticVideo(4, 48, 96, length=1200)
    frames = list(video)
    degraded = [f.degraded is not None for f in frames]
    assert 0.2 <= np.mean(degraded) <= 0.3  # default rate 0.25
    assert {f.degraded for f in frames} == {None, *KINDS}
    runs = "".join("x" if d else "." for d in degraded).split(".")
    assert max(len(r) for r in runs) <= 3  # each event lasts 1-3 frames
    clean = SyntheticVideo(4, 48, 96, length=1200, degrade_rate=0.0)
    for frame in [f for f in frames if f.degraded][:40]:
        reference = clean.render(frame.index)
        assert reference.degraded is None
        assert np.array_equal(frame.label, reference.label)  # the label is the true scene
        assert np.abs(frame.image.astype(int) - reference.image).mean() > 0.5, frame.degraded  # visibly changed


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "frozen"])
def test_every_degradation_destroys_a_large_part_of_the_frame(kind):
    """Severity: each kind moves at least 12 % of the pixels by more than 20 grey levels and the frame by 8
    on average (fresh draws of its parameters on three seeds): the current frame alone loses what it shows."""
    image = SyntheticVideo(11, 128, 256, length=4, degrade_rate=0.0).render(2).image
    for seed in range(3):
        event = degrade.Event(kind, 1, 3, degrade._draw_params(kind, np.random.default_rng(seed)))
        damaged = degrade.apply(image, event, 2, seed=5)
        assert damaged.shape == image.shape
        assert damaged.dtype == np.uint8
        difference = np.abs(damaged.astype(int) - image)
        assert (difference.max(axis=2) > 20).mean() > 0.12, (kind, seed)
        assert difference.mean() > 8, (kind, seed)


def test_frozen_frames_repeat_the_last_clean_frame_and_keep_their_own_label():
    video = SyntheticVideo(4, 48, 96, length=1200)
    clean = SyntheticVideo(4, 48, 96, length=1200, degrade_rate=0.0)
    frozen = [t for t in range(1200) if video.schedule.at(t) and video.schedule.at(t).kind == "frozen"]
    assert frozen
    for t in frozen[:4]:
        start = video.schedule.at(t).start
        assert np.array_equal(video.render(t).image, clean.render(start - 1).image)
        assert np.array_equal(video.render(t).label, clean.render(t).label)
        assert not np.array_equal(clean.render(t).label, clean.render(start - 1).label)  # the scene moved on


def test_degradation_events_are_separated_by_clean_frames():
    video = SyntheticVideo(9, 16, 32, length=300, degrade_rate=0.4)
    events = [video.schedule.at(t) for t in range(300)]
    for t in range(1, 300):
        if events[t] is not None and events[t - 1] is not None:
            assert events[t] is events[t - 1]  # consecutive degraded frames belong to one event
    assert all(1 <= e.duration <= 3 for e in events if e)
    assert 0.3 <= np.mean([e is not None for e in events]) <= 0.5
    assert [video.render(t).degraded for t in range(40)] == [e.kind if e else None for e in events[:40]]
    assert all(f.degraded is None for f in SyntheticVideo(9, 16, 32, length=50, degrade_rate=0.0))


def test_split_seeds_are_disjoint():
    ranges = {split: (split_seed(split, 0), split_seed(split, 999_999)) for split in ("train", "val", "test")}
    ordered = sorted(ranges.values())
    assert all(hi < next_lo for (_, hi), (next_lo, _) in itertools.pairwise(ordered))
    assert len({split_seed(split, 5) for split in ranges}) == 3
    videos = synthetic_split("test", 2, length=5, height=16, width=32)
    assert [v.name for v in videos] == ["synthetic/test/0", "synthetic/test/1"]
    assert [v.seed for v in videos] == [split_seed("test", 0), split_seed("test", 1)]
    with pytest.raises(ValueError, match="unknown split"):
        split_seed("holdout", 0)


# ---- augmentation ---------------------------------------------------------------------------


def clip_from_label(label: np.ndarray) -> list[np.ndarray]:
    """Two frames drawn from the label, so any misalignment with the label shows."""
    return [colorize(label), colorize(label)]


def test_augmentation_keeps_frames_and_label_aligned():
    label = SyntheticVideo(1, H, W).render(0).label
    flips = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        images, out, _ = augment_clip(clip_from_label(label), label, rng, crop=(40, 96), colour=False)
        assert out.shape == (40, 96)
        assert all(im.shape == (40, 96, 3) for im in images)
        assert all(np.array_equal(im, colorize(out)) for im in images)
        assert set(np.unique(out)) <= set(np.unique(label))  # cropped and flipped, never interpolated
        mirrored = label[:, ::-1]
        flips.add(any(np.array_equal(out, mirrored[y : y + 40, x : x + 96]) for y in range(25) for x in range(33)))
    assert flips == {True, False}  # both outcomes of the random flip happened


def test_flip_twice_is_identity():
    label = SyntheticVideo(2, H, W).render(0).label
    seen = 0
    for seed in range(6):
        images, out, _ = augment_clip([colorize(label)], label, np.random.default_rng(seed), colour=False)
        if not np.array_equal(out, label):
            seen += 1
            assert np.array_equal(cv2.flip(out, 1), label)
            assert np.array_equal(cv2.flip(images[0], 1), colorize(label))
    assert seen > 0


def test_colour_jitter_is_the_same_on_every_frame():
    frame = SyntheticVideo(3, H, W).render(0)
    images, out, _ = augment_clip([frame.image, frame.image.copy()], frame.label, np.random.default_rng(0), flip=False)
    assert np.array_equal(images[0], images[1])
    assert np.array_equal(out, frame.label)
    assert np.abs(images[0].astype(int) - frame.image).mean() > 2.0


def test_augmentation_rejects_a_crop_that_does_not_fit():
    label = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="does not fit"):
        augment_clip([np.zeros((32, 32, 3), np.uint8)], label, np.random.default_rng(0), crop=(40, 16))


# ---- Cityscapes layout ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def city_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cs")
    return write_cityscapes_tree(root, cities=("frankfurt", "lindau"), snippets=1, height=32, width=64)


def test_cityscapes_clips_round_trip(city_root):
    clips = CityscapesClips(city_root, "val", clip_length=2)
    assert len(clips) == 2
    for k in range(2):  # snippet k was rendered from SyntheticVideo(seed + k)
        video = SyntheticVideo(k, 32, 64, length=30)
        frames, label = clips[k]
        assert np.array_equal(label, video.render(19).label)  # ids -> train ids through cityscapesscripts
        assert np.array_equal(frames[0], video.render(18).image)
        assert np.array_equal(frames[1], video.render(19).image)


def test_cityscapes_target_offset_picks_earlier_frames(city_root):
    frames, label = CityscapesClips(city_root, "val", clip_length=3, target_offset=4)[0]
    video = SyntheticVideo(0, 32, 64, length=30)
    assert [np.array_equal(f, video.render(t).image) for f, t in zip(frames, (13, 14, 15), strict=True)] == [True] * 3
    assert np.array_equal(label, video.render(19).label)  # still the label of the annotated frame


def test_cityscapes_clips_resize_labels_by_nearest(city_root):
    frames, label = CityscapesClips(city_root, "val", height=64, width=128)[1]
    assert frames[0].shape == (64, 128, 3)
    assert label.shape == (64, 128)
    assert set(np.unique(label)) <= set(np.unique(SyntheticVideo(1, 32, 64, length=30).render(19).label))


def test_cityscapes_source_streams_snippets(city_root):
    with cityscapes_source(city_root, "val") as source:
        frames = list(source)
    assert (source.fps, source.length, len(frames)) == (17.0, 60, 60)
    assert [i for i, f in enumerate(frames) if f.label is not None] == [19, 49]
    assert frames[0].sequence == "cityscapes/val/frankfurt_000000_000019"
    assert frames[30].sequence == "cityscapes/val/lindau_000000_000019"
    assert frames[30].index == 0


def test_cityscapes_missing_files_are_user_errors(tmp_path):
    root = write_cityscapes_tree(tmp_path / "cs", cities=("ulm",), snippets=1, height=16, width=32)
    missing = root / "leftImg8bit_sequence" / "val" / "ulm" / "ulm_000000_000018_leftImg8bit.png"
    missing.unlink()
    with pytest.raises(UserError) as err:
        CityscapesClips(root, "val", clip_length=2)
    assert err.value.path == str(missing)
    CityscapesClips(root, "val", clip_length=1)  # the annotated frame alone is still there
    with pytest.raises(UserError) as err:
        cityscapes_source(root, "val")
    assert err.value.path == str(missing)
    with pytest.raises(UserError) as err:
        CityscapesClips(tmp_path / "nowhere", "val")
    assert err.value.path == str(tmp_path / "nowhere")
    (root / "gtFine" / "train").mkdir()
    (root / "leftImg8bit_sequence" / "train").mkdir()
    with pytest.raises(UserError, match=r"no \*_gtFine_labelIds\.png") as err:
        CityscapesClips(root, "train")
    assert err.value.path == str(root / "gtFine" / "train")


# ---- streams --------------------------------------------------------------------------------


def test_video_round_trip(tmp_path):
    out = tmp_path / "demo.mp4"
    write_synthetic_video(out, frames=20, height=H, width=W, labels_out=tmp_path / "labels")
    with open_source(str(out)) as source:
        frames = list(source)
    assert (source.fps, len(frames)) == (17.0, 20)
    assert all(f.image.shape == (H, W, 3) and f.label is None for f in frames)
    assert [f.index for f in frames] == list(range(20))
    reference = SyntheticVideo(split_seed("val", 0), H, W)
    assert np.abs(frames[5].image.astype(int) - reference.render(5).image).mean() < 20  # lossy, same picture
    labels = sorted((tmp_path / "labels").glob("*.png"))
    assert len(labels) == 20
    assert np.array_equal(cv2.imread(str(labels[7]), cv2.IMREAD_UNCHANGED), reference.render(7).label)
    assert len(list(open_source(str(out), frames=6))) == 6


def test_damaged_video_ends_the_stream_cleanly(tmp_path):
    out = tmp_path / "demo.mp4"
    write_synthetic_video(out, frames=30, height=H, width=W)
    data_bytes = bytearray(out.read_bytes())
    moov = data_bytes.find(b"moov")
    data_bytes[len(data_bytes) // 2 : moov - 100] = bytes(moov - 100 - len(data_bytes) // 2)  # zero late frames
    out.write_bytes(bytes(data_bytes))
    frames = list(open_source(str(out)))
    assert 0 < len(frames) < 30


def test_synthetic_stream_continues_with_the_next_sequence():
    frames = list(open_source("synthetic:4", frames=25, height=16, width=32, sequence_length=10))
    assert [f.sequence for f in frames] == ["synthetic/val/4"] * 10 + ["synthetic/val/5"] * 10 + ["synthetic/val/6"] * 5
    assert [f.index for f in frames[8:12]] == [8, 9, 0, 1]  # each sequence counts its own frames
    assert all(f.label is not None for f in frames)
    first = SyntheticVideo(split_seed("val", 5), 16, 32).render(0)
    assert np.array_equal(frames[10].image, first.image)


def test_image_folder_in_natural_order_with_conversion_notices(tmp_path, caplog):
    gray = np.full((20, 30), 100, np.uint8)
    cv2.imwrite(str(tmp_path / "frame10.png"), np.full((20, 30, 3), 30, np.uint8))
    cv2.imwrite(str(tmp_path / "frame2.png"), gray)
    cv2.imwrite(str(tmp_path / "frame1.png"), gray)
    (tmp_path / "notes.txt").write_text("not an image, not listed")
    with caplog.at_level(logging.WARNING, logger="tempseg.data.streams"):
        frames = list(open_source(str(tmp_path), height=40, width=60))
    assert [int(f.image[0, 0, 0]) for f in frames] == [100, 100, 30]  # frame1, frame2, frame10
    assert all(f.image.shape == (40, 60, 3) for f in frames)
    notices = [r.getMessage() for r in caplog.records]
    assert sum("grayscale" in m for m in notices) == 1  # once, although two frames were converted
    assert sum("resizing frames 30x20 -> 60x40" in m for m in notices) == 1
    assert all(m.startswith(str(tmp_path)) for m in notices)


def test_bgra_frames_lose_alpha_with_a_notice(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 4), (10, 20, 30, 255), np.uint8))
    with caplog.at_level(logging.WARNING, logger="tempseg.data.streams"):
        (frame,) = list(open_source(str(tmp_path)))
    assert frame.image.shape == (8, 8, 3)
    assert tuple(frame.image[0, 0]) == (10, 20, 30)
    assert any("alpha" in r.getMessage() for r in caplog.records)


def test_bad_inputs_are_user_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as err:
        open_source(str(empty))
    assert err.value.path == str(empty)
    broken = tmp_path / "frames"
    broken.mkdir()
    cv2.imwrite(str(broken / "0.png"), np.zeros((4, 4, 3), np.uint8))
    (broken / "1.png").write_text("not a png")
    with pytest.raises(UserError) as err:
        open_source(str(broken))
    assert err.value.path == str(broken / "1.png")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(UserError, match="does not open as a video") as err:
        open_source(str(fake))
    assert err.value.path == str(fake)
    with pytest.raises(UserError) as err:
        open_source(str(tmp_path / "missing.mp4"))
    assert err.value.path == str(tmp_path / "missing.mp4")
    with pytest.raises(UserError, match="does not open"):
        open_source("camera:57")


def test_open_source_reads_cityscapes_specs(city_root):
    frames = list(open_source(f"cityscapes:{city_root}:val", frames=31))
    assert len(frames) == 31
    assert frames[19].label is not None
    assert frames[30].index == 0
    assert len(list(open_source(f"cityscapes:{city_root}", frames=2))) == 2  # split defaults to val


# ---- command line and palette ---------------------------------------------------------------


def test_cli_writes_a_video_and_a_preview(tmp_path):
    video, preview = tmp_path / "demo.mp4", tmp_path / "preview.png"
    assert run_cli(main, ["synthetic", "--out", str(video), "--frames", "6", "--height", "32", "--width", "64"]) == 0
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
    assert run_cli(main, ["preview", "--out", str(preview), "--count", "3", "--step", "2"]) == 0
    grid = cv2.imread(str(preview))
    assert grid.shape == (2 * 192, 3 * 384, 3)  # three frames over their labels
    assert run_cli(main, ["preview", "--out", str(preview), "--source", str(tmp_path / "nope")]) == 2


def test_palette_comes_from_cityscapesscripts():
    from tempseg.data import classes

    assert len(classes.CLASS_NAMES) == 19
    assert classes.CLASS_NAMES[0] == "road"
    assert classes.CLASS_NAMES[18] == "bicycle"
    assert len(PALETTE) == 19
    assert PALETTE[0] == (128, 64, 128)
    assert tuple(colorize(np.array([[0, 255]], np.uint8))[0, 0]) == (128, 64, 128)[::-1]


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    """A tree written by hand in the real layout (not by write_cityscapes_tree): one snippet of ulm, sequence 3,
    annotated at absolute frame 119, whose *_gtFine_labelIds.png holds road (7), car (26), unlabeled (0) and
    static (4); training and streaming both read train ids road 0, car 13, and ignore (255) for the others."""
    label_ids = np.array([[7, 26], [0, 4]], np.uint8)
    gt = tmp_path / "gtFine" / "val" / "ulm" / "ulm_000003_000119_gtFine_labelIds.png"
    gt.parent.mkdir(parents=True)
    assert cv2.imwrite(str(gt), label_ids)
    images = tmp_path / "leftImg8bit_sequence" / "val" / "ulm"
    images.mkdir(parents=True)
    for frame in range(100, 130):  # the snippet: 19 frames before the annotated one, 10 after
        assert cv2.imwrite(str(images / f"ulm_000003_{frame:06d}_leftImg8bit.png"), np.zeros((2, 2, 3), np.uint8))
    assert np.array_equal(cv2.imread(str(gt), cv2.IMREAD_UNCHANGED), label_ids)  # the ids went to disk as written
    train_ids = np.array([[0, 13], [255, 255]], np.uint8)
    _, label = CityscapesClips(tmp_path, "val", clip_length=2)[0]
    assert np.array_equal(label, train_ids)
    with cityscapes_source(tmp_path, "val") as source:
        streamed = [frame.label for frame in source]
    assert len(streamed) == 30
    assert np.array_equal(streamed[19], train_ids)
