"""Small labelled data set trees in the real layouts (a folder dataset, CamVid as distributed), for tests.

Frames are drawn blocks of class colours that shift with the frame index (so neighbouring frames differ);
videos are FFV1 in AVI, lossless, so frames read back from them equal what was written. Each writer
returns what it wrote: frames, and labels as the train ids the readers should return (ignore 255).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tempseg.data.frames import write_png

HEIGHT, WIDTH = 64, 128
BLOCK = 16
FOURCC = "FFV1"  # lossless, and OpenCV's FFmpeg backend seeks it exactly

# CamVid's label_colors.txt as distributed: "R G B<tab>Name", 32 classes.
CAMVID_COLORS = (
    ((64, 128, 64), "Animal"),
    ((192, 0, 128), "Archway"),
    ((0, 128, 192), "Bicyclist"),
    ((0, 128, 64), "Bridge"),
    ((128, 0, 0), "Building"),
    ((64, 0, 128), "Car"),
    ((64, 0, 192), "CartLuggagePram"),
    ((192, 128, 64), "Child"),
    ((192, 192, 128), "Column_Pole"),
    ((64, 64, 128), "Fence"),
    ((128, 0, 192), "LaneMkgsDriv"),
    ((192, 0, 64), "LaneMkgsNonDriv"),
    ((128, 128, 64), "Misc_Text"),
    ((192, 0, 192), "MotorcycleScooter"),
    ((128, 64, 64), "OtherMoving"),
    ((64, 192, 128), "ParkingBlock"),
    ((64, 64, 0), "Pedestrian"),
    ((128, 64, 128), "Road"),
    ((128, 128, 192), "RoadShoulder"),
    ((0, 0, 192), "Sidewalk"),
    ((192, 128, 128), "SignSymbol"),
    ((128, 128, 128), "Sky"),
    ((64, 128, 192), "SUVPickupTruck"),
    ((0, 0, 64), "TrafficCone"),
    ((0, 64, 64), "TrafficLight"),
    ((192, 64, 128), "Train"),
    ((128, 128, 0), "Tree"),
    ((192, 128, 192), "Truck_Bus"),
    ((64, 0, 64), "Tunnel"),
    ((192, 192, 0), "VegetationMisc"),
    ((0, 0, 0), "Void"),
    ((64, 192, 0), "Wall"),
)
CAMVID_ELEVEN = ("Sky", "Building", "Column_Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car")
CAMVID_ELEVEN += ("Pedestrian", "Bicyclist")


def block_map(rng: np.random.Generator, values: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """HxW uint8 of random values 0..values-1 in BLOCK x BLOCK squares."""
    blocks = rng.integers(0, values, (height // BLOCK, width // BLOCK), dtype=np.uint8)
    return np.kron(blocks, np.ones((BLOCK, BLOCK), np.uint8))


def draw_frame(seed: int, t: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A BGR frame distinct per (seed, t): coloured blocks, shifted one pixel per frame."""
    rng = np.random.default_rng([seed, t])
    image = rng.integers(0, 256, (height // BLOCK, width // BLOCK, 3), dtype=np.uint8)
    image = np.kron(image, np.ones((BLOCK, BLOCK, 1), np.uint8))
    return np.roll(image, t, axis=1)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV cannot write {FOURCC} to {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@dataclass
class WrittenTree:
    """What a writer wrote: per sequence name ("<split>/<sequence>"), its frames and its labels as train ids."""

    root: Path
    spec: str
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    labels: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    files: dict[str, dict[int, Path]] = field(default_factory=dict)  # label files


def write_folder_tree(
    root: Path,
    *,
    classes: int = 7,
    splits: tuple[str, ...] = ("train", "val"),
    sequences: int = 2,
    length: int = 6,
    label_every: int = 2,
    first_label: int = 1,
    video: bool = False,
    stored_ignore: int = 255,
    mapped: bool = False,
    fps: float | None = None,
) -> WrittenTree:
    """A folder dataset of `classes` classes: per split `sequences` sequences of `length` frames, labels on frames
    first_label, first_label + label_every, ...; with `video` the last sequence of each split is one video file.
    `mapped` stores label value 10 + 3 * train id (and `stored_ignore` for ignore) through classes.json's
    label_values, else train ids and `stored_ignore` are stored as they are."""
    root = Path(root)
    names = [f"class{k}" for k in range(classes)]
    colors = [[(37 * k) % 256, (91 * k) % 256, (151 * k) % 256] for k in range(classes)]
    meta: dict[str, object] = {"names": names, "colors": colors, "ignore": stored_ignore}
    if mapped:
        meta["label_values"] = {str(10 + 3 * k): k for k in range(classes)}
    if fps is not None:
        meta["fps"] = fps
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(meta))
    tree = WrittenTree(root, f"folder:{root}")
    stored = np.array([10 + 3 * k if mapped else k for k in range(classes)] + [stored_ignore], np.uint8)
    for s, split in enumerate(splits):
        for q in range(sequences):
            name, folder, seed = f"{split}/seq{q}", root / split / f"seq{q}", 100 * s + q
            frames = [draw_frame(seed, t) for t in range(length)]
            as_video = video and q == sequences - 1
            if as_video:
                write_video(folder / "clip.avi", frames)
            for t, frame in enumerate(frames):
                if not as_video:
                    write_png(folder / f"frame_{t:04d}.png", frame)
            tree.frames[name], tree.labels[name], tree.files[name] = frames, {}, {}
            for t in range(first_label, length, label_every):
                ids = block_map(np.random.default_rng([seed, t, 1]), classes + 1)  # value `classes` = ignore
                path = folder / "labels" / (f"{t:06d}.png" if as_video else f"frame_{t:04d}.png")
                write_png(path, stored[ids])
                tree.labels[name][t] = np.where(ids == classes, 255, ids).astype(np.uint8)
                tree.files[name][t] = path
    return tree


@dataclass
class CamVidTree(WrittenTree):
    """Besides the labels as 11-class train ids: the same labels as 31-class train ids (camvid32), per still."""

    labels32: dict[str, np.ndarray] = field(default_factory=dict)  # still stem -> train ids
    labels11: dict[str, np.ndarray] = field(default_factory=dict)
    stills: dict[str, np.ndarray] = field(default_factory=dict)


def write_camvid_tree(root: Path, *, video: bool = True, frames: bool = True) -> CamVidTree:
    """A CamVid tree in the real naming, its stills falling in SegNet's splits:

    train: 0006R0_f00004, 0006R0_f00008 (with `video`: videos/0006R0.avi, 12 frames, darker at the stills)
    val:   0016E5_07960, 0016E5_07962 (with `frames`: frames/0016E5/0016E5_007930..007962.png)
    test:  Seq05VD_f00000 (a still alone)
    Each still is the frame written at its index; colour labels use all 32 colours.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{name}\n" for (r, g, b), name in CAMVID_COLORS))
    tree = CamVidTree(root, f"camvid:{root}")
    eleven = {name: k for k, name in enumerate(CAMVID_ELEVEN)}
    to11 = np.array([eleven.get(name, 255) for _, name in CAMVID_COLORS], np.uint8)
    not_void = [name for _, name in CAMVID_COLORS if name != "Void"]
    to32 = np.array([not_void.index(name) if name != "Void" else 255 for _, name in CAMVID_COLORS], np.uint8)
    rgb = np.array([c for c, _ in CAMVID_COLORS], np.uint8)
    layout = (("0006R0", "f{:05d}", (4, 8), range(12)), ("0016E5", "{:05d}", (7960, 7962), range(7930, 7963)))
    layout += (("Seq05VD", "f{:05d}", (0,), range(0)),)
    for seed, (prefix, pattern, indices, extent) in enumerate(layout):
        drawn = {t: draw_frame(seed, t) for t in [*extent, *indices]}
        if prefix == "0006R0" and video:
            # The video's frame at a still's index is darker than the still: readers must show the still there.
            tree.frames[prefix] = [drawn[t] // 2 if t in indices else drawn[t] for t in extent]
            write_video(root / "videos" / f"{prefix}.avi", tree.frames[prefix])
        if prefix == "0016E5" and frames:
            for t in extent:
                write_png(root / "frames" / prefix / f"{prefix}_{t:06d}.png", drawn[t])
            tree.frames[prefix] = [drawn[t] for t in extent]
        for t in indices:
            stem = f"{prefix}_{pattern.format(t)}"
            colour = block_map(np.random.default_rng([seed, t, 2]), len(CAMVID_COLORS))
            write_png(root / "701_StillsRaw_full" / f"{stem}.png", drawn[t])
            write_png(root / "LabeledApproved_full" / f"{stem}_L.png", rgb[colour][..., ::-1])  # files are RGB
            tree.stills[stem], tree.labels11[stem], tree.labels32[stem] = drawn[t], to11[colour], to32[colour]
    return tree
