"""Labelled video data sets: the folder layout, CamVid as distributed, clips, streams, specs and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tempseg.common.errors import UserError
from tempseg.data.camvid import default_split
from tempseg.data.classes import CITYSCAPES, colorize
from tempseg.data.folder import write_synthetic_folder
from tempseg.data.frames import write_png
from tempseg.data.labelled import LabelledClips, LabelledSource, open_dataset
from tempseg.data.sources import dataset_classes, open_source
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tests.conftest import run_python
from tests.datasets import CAMVID_ELEVEN, write_camvid_tree, write_folder_tree, write_video


@pytest.mark.parametrize(
    "options",
    [
        {"classes": 7},
        {"classes": 11, "mapped": True, "stored_ignore": 0},
        {"classes": 7, "stored_ignore": 200, "video": True},
    ],
    ids=["7-classes", "11-classes-mapped-ignore-0", "7-classes-ignore-200-video"],
)
def test_folder_labels_and_frames_read_back(tmp_path, options):
    tree = write_folder_tree(tmp_path, **options)
    dataset = open_dataset(tree.spec)
    assert len(dataset.classes) == options["classes"]
    assert dataset.classes.ignore == 255
    for split in ("train", "val"):
        sequences = dataset.sequences(split)
        assert [s.name for s in sequences] == [f"{split}/seq0", f"{split}/seq1"]
        for sequence in sequences:
            assert sorted(sequence.labels) == sorted(tree.labels[sequence.name]) == [1, 3, 5]
            for index, expected in tree.labels[sequence.name].items():
                assert np.array_equal(dataset.read_label(sequence, index), expected)  # stored values -> train ids
                assert np.array_equal(sequence.read_frame(index), tree.frames[sequence.name][index])


def test_camvid_colour_labels_map_to_11_and_32_classes(tmp_path):
    tree = write_camvid_tree(tmp_path)
    eleven, full = open_dataset(f"camvid:{tmp_path}"), open_dataset(f"camvid32:{tmp_path}")
    names = ("Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian")
    assert eleven.classes.names == (*names, "Bicyclist")
    assert eleven.classes.palette[2] == (192, 192, 128)  # Pole takes Column_Pole's colour from label_colors.txt
    assert len(full.classes) == 31
    assert "Void" not in full.classes.names
    seen = 0
    for split in ("train", "val", "test"):
        for dataset, expected in ((eleven, tree.labels11), (full, tree.labels32)):
            for sequence in dataset.sequences(split):
                for index, path in sequence.labels.items():
                    label = dataset.read_label(sequence, index)
                    assert np.array_equal(label, expected[path.name.removesuffix("_L.png")])
                    seen += 1
    assert seen == 2 * 5
    sample = tree.labels11["0006R0_f00004"]
    assert set(np.unique(sample)) - {255} <= set(range(len(CAMVID_ELEVEN)))
    assert (sample == 255).any()


def test_camvid_split_is_segnets():
    assert default_split("0016E5", 7959) == default_split("0016E5", 8159) == "val"
    assert default_split("0016E5", 7957) == default_split("0016E5", 8190) == default_split("0016E5", 390) == "train"
    assert default_split("0001TP", 8520) == default_split("0006R0", 930) == "train"
    assert default_split("0001TP", 8550) == default_split("Seq05VD", 0) == "test"
    # SegNet's lists: 0001TP 6690..8520 train, 8550..10380 test (every 30th); 0016E5 7959..8159 val (every 2nd).
    assert sum(default_split("0001TP", n) == "train" for n in range(6690, 10381, 30)) == 62
    assert sum(default_split("0016E5", n) == "val" for n in range(7959, 8160, 2)) == 101


def test_camvid_split_lists_override_the_rule(tmp_path):
    write_camvid_tree(tmp_path)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text(
        "/SegNet/CamVid/val/0006R0_f00008.png /SegNet/CamVid/valannot/0006R0_f00008.png\n"
    )
    (tmp_path / "splits" / "train.txt").write_text("0016E5_07960\n0016E5_07962.png\n")
    dataset = open_dataset(f"camvid:{tmp_path}")
    assert [sorted(s.labels) for s in dataset.sequences("val")] == [[8]]
    assert [s.name for s in dataset.sequences("train")] == ["train/0016E5_007960"]
    with pytest.raises(UserError, match="empty split"):
        dataset.sequences("test")


def test_folder_clips_end_on_labelled_frames(tmp_path):
    tree = write_folder_tree(tmp_path, length=8, first_label=3, video=True)
    dataset = open_dataset(tree.spec)
    clips = LabelledClips(dataset, "train", clip_length=3, target_offset=1)
    assert len(clips) == 2 * 3  # frames 3, 5, 7 of two sequences
    for i, (sequence, t) in enumerate(clips.items):
        frames, label = clips[i]
        expected = tree.frames[sequence.name][t - 3 : t]  # t-3, t-2, t-1: the clip ends one frame early
        assert len(frames) == 3
        assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
        assert np.array_equal(label, tree.labels[sequence.name][t])
    small = LabelledClips(dataset, "val", clip_length=2, height=32, width=64)
    frames, label = small[0]
    assert frames[0].shape == (32, 64, 3)
    assert label.shape == (32, 64)
    expected = tree.labels["val/seq0"][3]
    assert np.array_equal(label, cv2.resize(expected, (64, 32), interpolation=cv2.INTER_NEAREST))


def test_camvid_clips_take_preceding_frames_from_video_and_extracted_frames(tmp_path):
    tree = write_camvid_tree(tmp_path)
    dataset = open_dataset(f"camvid:{tmp_path}")
    train = LabelledClips(dataset, "train", clip_length=3)  # 0006R0 stills f00004, f00008 over its video
    frames, label = train[1]
    assert np.array_equal(frames[0], tree.frames["0006R0"][6])
    assert np.array_equal(frames[1], tree.frames["0006R0"][7])
    assert np.array_equal(frames[2], tree.stills["0006R0_f00008"])
    assert np.array_equal(label, tree.labels11["0006R0_f00008"])
    val = LabelledClips(dataset, "val", clip_length=2, target_offset=2)  # 0016E5 from frames/0016E5/
    (sequence, t), (frames, _) = val.items[0], val[0]
    assert sequence.name == "val/0016E5_007960"
    assert t == 30
    assert np.array_equal(frames[0], tree.frames["0016E5"][7957 - 7930])
    assert np.array_equal(frames[1], tree.frames["0016E5"][7958 - 7930])


def test_labelled_source_streams_every_sequence_in_order(tmp_path):
    tree = write_folder_tree(tmp_path, video=True, fps=12.5)
    with open_source(f"folder:{tmp_path}:val", split="train") as source:  # the spec's split wins
        frames = list(source)
        assert source.fps == 12.5
        assert source.length == 12
    assert [(f.sequence, f.index) for f in frames] == [(f"val/seq{q}", t) for q in range(2) for t in range(6)]
    for frame in frames:
        assert np.array_equal(frame.image, tree.frames[frame.sequence][frame.index])
        expected = tree.labels[frame.sequence].get(frame.index)
        assert (frame.label is None) == (expected is None)
        assert expected is None or np.array_equal(frame.label, expected)
    with open_source(f"folder:{tmp_path}", split="train", height=32, width=64, frames=3) as source:
        assert [f.image.shape for f in source] == [(32, 64, 3)] * 3


def test_camvid_source_streams_video_stills_and_frames(tmp_path):
    tree = write_camvid_tree(tmp_path)
    dataset = open_dataset(f"camvid:{tmp_path}")
    frames = list(LabelledSource(dataset, "train"))
    assert len(frames) == 9
    assert [f.index for f in frames if f.label is not None] == [4, 8]
    for frame in frames:  # the stills on labelled frames, the video elsewhere
        still = tree.stills.get(f"0006R0_f{frame.index:05d}")
        expected = tree.frames["0006R0"][frame.index] if still is None else still
        assert np.array_equal(frame.image, expected)
        assert still is None or np.array_equal(frame.label, tree.labels11[f"0006R0_f{frame.index:05d}"])
    test = list(open_source(f"camvid:{tmp_path}:test"))
    assert len(test) == 1
    assert test[0].label is not None
    assert np.array_equal(test[0].image, tree.stills["Seq05VD_f00000"])


def _refusal(error: pytest.ExceptionInfo[UserError], path: Path) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    assert error.value.path == str(path), text
    return text


def _folder(tmp_path: Path, **options):
    return write_folder_tree(tmp_path, **options)


def test_refused_without_classes_json(tmp_path):
    _folder(tmp_path)
    (tmp_path / "classes.json").unlink()
    with pytest.raises(UserError) as error:
        open_dataset(f"folder:{tmp_path}")
    assert "classes.json" in _refusal(error, tmp_path / "classes.json")


@pytest.mark.parametrize("mapped", [False, True])
def test_refused_label_value_outside_the_classes(tmp_path, mapped):
    tree = _folder(tmp_path, mapped=mapped)
    path = tree.files["val/seq1"][3]
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    stored[0, 0] = 7 if not mapped else 11  # one past the last class; not a mapped value
    write_png(path, stored)
    dataset = open_dataset(tree.spec)
    with pytest.raises(UserError) as error:
        dataset.read_label(dataset.sequences("val")[1], 3)
    text = _refusal(error, path)
    assert ("label values 7 " in text) if not mapped else ("label values 11 " in text and "label_values" in text)


def test_refused_colour_not_in_label_colors(tmp_path):
    write_camvid_tree(tmp_path)
    path = tmp_path / "LabeledApproved_full" / "0006R0_f00004_L.png"
    image = cv2.imread(str(path))
    image[5, 5] = (3, 2, 1)  # BGR: RGB (1, 2, 3)
    write_png(path, image)
    dataset = open_dataset(f"camvid:{tmp_path}")
    with pytest.raises(UserError) as error:
        dataset.read_label(dataset.sequences("train")[0], 4)
    assert "(1, 2, 3)" in _refusal(error, path)
    assert "label_colors.txt" in str(error.value)


def test_refused_label_size_differs_from_frame(tmp_path):
    tree = _folder(tmp_path)
    path = tree.files["train/seq0"][1]
    write_png(path, np.zeros((32, 64), np.uint8))
    dataset = open_dataset(tree.spec)
    with pytest.raises(UserError) as error:
        LabelledClips(dataset, "train")[0]
    assert "64x32" in _refusal(error, path)
    assert "128x64" in str(error.value)


@pytest.mark.parametrize("layout", ["folder", "camvid-video", "camvid-stills"])
def test_refused_too_few_preceding_frames(tmp_path, layout):
    if layout == "folder":
        tree = _folder(tmp_path)  # first label on frame 1
        spec, split, length, path = tree.spec, "train", 3, tree.files["train/seq0"][1]
        needs, has = 2, 1
    else:
        write_camvid_tree(tmp_path)
        if layout == "camvid-video":  # still f00004 over a video of 12 frames: 4 before it
            spec, split, length, needs, has = f"camvid:{tmp_path}", "train", 6, 5, 4
            path = tmp_path / "LabeledApproved_full" / "0006R0_f00004_L.png"
        else:  # Seq05VD: a still alone
            spec, split, length, needs, has = f"camvid:{tmp_path}", "test", 2, 1, 0
            path = tmp_path / "LabeledApproved_full" / "Seq05VD_f00000_L.png"
    with pytest.raises(UserError) as error:
        LabelledClips(open_dataset(spec), split, clip_length=length)
    assert f"needs {needs} preceding frames" in _refusal(error, path)
    assert f"has {has}" in str(error.value)
    assert layout != "camvid-stills" or "videos" in str(error.value)


@pytest.mark.parametrize("layout", ["folder", "camvid"])
def test_refused_empty_or_unknown_split(tmp_path, layout):
    if layout == "folder":
        _folder(tmp_path, splits=("train",))
        (tmp_path / "val").mkdir()
        where = tmp_path / "val"
    else:
        write_camvid_tree(tmp_path)
        for still in (tmp_path / "701_StillsRaw_full").glob("Seq05VD*"):
            still.unlink()
        where = tmp_path
    dataset = open_dataset(f"{layout}:{tmp_path}")
    with pytest.raises(UserError) as error:
        dataset.sequences("val" if layout == "folder" else "test")
    assert "empty split" in _refusal(error, where)
    with pytest.raises(UserError, match="unknown split 'holdout'"):
        dataset.sequences("holdout")


@pytest.mark.parametrize("layout", ["folder", "camvid"])
def test_refused_video_shorter_than_a_labelled_frame(tmp_path, layout):
    if layout == "folder":
        tree = _folder(tmp_path, video=True)
        video = tmp_path / "val" / "seq1" / "clip.avi"
        write_video(video, tree.frames["val/seq1"][:5])  # frame 5 is labelled
        dataset, split, index = open_dataset(tree.spec), "val", 5
    else:
        tree = write_camvid_tree(tmp_path)
        video = tmp_path / "videos" / "0006R0.avi"
        write_video(video, tree.frames["0006R0"][:8])  # still f00008
        dataset, split, index = open_dataset(f"camvid:{tmp_path}"), "train", 8
    with pytest.raises(UserError) as error:
        dataset.sequences(split)
    text = _refusal(error, video)
    assert "has 5 frames" in text if layout == "folder" else "has 8 frames" in text
    assert str(index) in text


def test_refused_bad_classes_json(tmp_path):
    _folder(tmp_path, stored_ignore=0)  # ignore 0 collides with class 0 without label_values
    with pytest.raises(UserError) as error:
        open_dataset(f"folder:{tmp_path}")
    assert "ignore value 0" in _refusal(error, tmp_path / "classes.json")
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["a", "b"], "colors": [[0, 0, 0]]}))
    with pytest.raises(UserError, match="2 names but 1 colors"):
        open_dataset(f"folder:{tmp_path}")


def test_dataset_classes_of_every_spec(tmp_path):
    write_folder_tree(tmp_path / "mine", classes=7)
    write_camvid_tree(tmp_path / "camvid")
    shutil.rmtree(tmp_path / "camvid" / "701_StillsRaw_full")  # the table comes from label_colors.txt alone
    for spec in ("synthetic", "synthetic:3", f"cityscapes:{tmp_path}", f"cityscapes:{tmp_path}:val"):
        assert dataset_classes(spec) is CITYSCAPES
    folder = dataset_classes(f"folder:{tmp_path / 'mine'}:train")
    assert folder.names == tuple(f"class{k}" for k in range(7))
    assert folder.ignore == 255
    assert len(dataset_classes(f"camvid:{tmp_path / 'camvid'}")) == 11
    assert len(dataset_classes(f"camvid32:{tmp_path / 'camvid'}:val")) == 31
    with pytest.raises(UserError, match="no class list"):
        dataset_classes(str(tmp_path / "video.mp4"))
    with pytest.raises(UserError, match=r"label_colors\.txt"):
        dataset_classes(f"camvid:{tmp_path}")


def test_colorize_takes_a_class_table(tmp_path):
    classes = dataset_classes(f"folder:{write_folder_tree(tmp_path, classes=7).root}")
    image = colorize(np.array([[1, 255]], np.uint8), classes)
    assert tuple(image[0, 0]) == tuple(classes.palette[1][::-1])
    assert tuple(image[0, 1]) == (0, 0, 0)


def test_written_folder_holds_the_synthetic_training_frames(tmp_path):
    write_synthetic_folder(tmp_path, split="train", sequences=2, length=4, label_every=2, height=32, width=64)
    dataset = open_dataset(f"folder:{tmp_path}")
    assert dataset.classes == CITYSCAPES
    assert dataset.fps == 17.0
    for i, sequence in enumerate(dataset.sequences("train")):
        video = SyntheticVideo(split_seed("train", i), 32, 64, length=4)  # as the training sampler renders it
        assert sequence.frame_count == 4
        assert sorted(sequence.labels) == [1, 3]
        for t in range(4):
            frame = video.render(t)
            assert np.array_equal(sequence.read_frame(t), frame.image)  # lossless PNG: the same pixels
            if t in sequence.labels:
                assert np.array_equal(dataset.read_label(sequence, t), frame.label)


def test_write_folder_command(tmp_path):
    out = tmp_path / "data"
    args = ["-m", "tempseg.data", "write-folder", str(out), "--split", "val", "--sequences", "1", "--length", "3"]
    result = run_python(*args, "--label-every", "2", "--first-label", "0", "--height", "16", "--width", "32")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "val" / "0000" / "labels").iterdir()) == ["000000.png", "000002.png"]
    frame = cv2.imread(str(out / "val" / "0000" / "000001.png"))
    assert np.array_equal(frame, SyntheticVideo(split_seed("val", 0), 16, 32, length=3).render(1).image)


def test_classes_command_prints_the_datas_classes(tmp_path):
    """`python -m tempseg.data classes SPEC`: what a model trained on SPEC predicts; a bad spec is one line, exit 2."""
    write_folder_tree(tmp_path / "own", classes=7)
    names = dataset_classes(f"folder:{tmp_path / 'own'}").names
    shown = run_python("-m", "tempseg.data", "classes", f"folder:{tmp_path / 'own'}")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == list(names)
    assert len(names) == 7
    assert lines[-1] == "ignore 255"
    missing = run_python("-m", "tempseg.data", "classes", f"folder:{tmp_path / 'none'}")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "none" in missing.stderr
