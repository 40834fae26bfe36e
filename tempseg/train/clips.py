"""Training clips: (frames t-L+1..t, labels), sampled deterministically per step.

A clip is L consecutive frames; for a temporal model every frame after the first carries the
state of the one before it and has a loss (synthetic video is labelled on every frame), so one
clip of L frames gives L-1 supervised frames at the cost of L forwards. The paper's scheme is
L=2: previous frame -> state, current frame -> loss. Labelled video (Cityscapes, a user's folder or
CamVid tree) is labelled on some frames only: its clips end at a labelled frame, the only one supervised.

With `with_flow` (the temporal-consistency loss, ETC) a clip also carries the backward flow of each
frame after the first to the frame before it, with its validity mask: exact from the synthetic
generator (data/flow.py), OpenCV DIS with ETC's photometric mask on labelled video.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.common.preprocess import normalize_bgr
from tempseg.data.augment import Flow, augment_clip
from tempseg.data.flow import GridFlow, dis_flow
from tempseg.data.frames import resize_flow, resize_image, resize_label
from tempseg.data.labelled import KINDS, LabelledClips, open_dataset
from tempseg.data.sources import dataset_classes
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.metrics import IGNORE_INDEX


@dataclass
class ClipBatch:
    """images: float32 [B, L, 3, H, W] normalised; labels: int64 [B, L, H, W] (255 = no label); with flow,
    flows: float32 [B, L-1, H, W, 2], frame j+1 -> frame j in pixels, and flow_valid: bool [B, L-1, H, W]."""

    images: np.ndarray
    labels: np.ndarray
    flows: np.ndarray | None = None
    flow_valid: np.ndarray | None = None
    grid_flows: np.ndarray | None = None  # [B, L-1, 2, h, w]: DIS on the augmented frames (data/flow.py GridFlow)


Clip = tuple[list[np.ndarray], list[np.ndarray], list[Flow]]  # images, labels, flows (frames 1.. -> the one before)


class SyntheticClipSampler:
    """Clips from the synthetic train split; clip i of step s is a pure function of (seed, rank, s, i)."""

    def __init__(
        self,
        *,
        sequences: int,
        length: int,
        height: int,
        width: int,
        target_offset: int,
        min_size: tuple[int, int] = (0, 0),
        min_scale: float = 1.0,
        cache: int = 1024,
        frame_cache_mb: int = 0,
        with_flow: bool = False,
        label_every: int = 1,
    ) -> None:
        if label_every < 1:
            raise UserError(f"label_every {label_every} is below 1")
        self.sequences, self.length = sequences, length
        self.label_every = label_every
        self.with_flow = with_flow
        self.height, self.width = height, width
        self.min_size, self.min_scale = min_size, min_scale
        self.target_offset = target_offset
        self._videos: OrderedDict[int, SyntheticVideo] = OrderedDict()
        self._cache = cache  # scenes are costly to build (~50 ms) and small to keep: hold them all
        # A full-size frame costs ~5 ms to render and 0.5 MB to keep; a default run draws each one ~8 times.
        self._frames: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, Flow | None]] = OrderedDict()
        bytes_per_frame = height * width * (4 + (9 if with_flow else 0))  # image, label (+ flow, mask)
        self._frame_budget = frame_cache_mb * 2**20 // bytes_per_frame

    def clip(self, rng: np.random.Generator, clip_length: int) -> Clip:
        last_start = self.length - clip_length - self.target_offset
        if last_start < 0:
            raise UserError(
                f"synthetic sequences of {self.length} frames are too short for clips of {clip_length} "
                f"+ offset {self.target_offset}"
            )
        if self.label_every == 1:
            index = int(rng.integers(self.sequences))
            start = int(rng.integers(last_start + 1))
        else:
            index, start = self._sparse_start(rng, clip_length)
        size = self._size(rng)
        # Each frame is rendered once; with a target offset k the labels come from frames t+k.
        rendered = [self._frame(index, start + j, size) for j in range(clip_length + self.target_offset)]
        frames = [image for image, _, _ in rendered[:clip_length]]
        labels = [label for _, label, _ in rendered[self.target_offset : self.target_offset + clip_length]]
        if self.label_every > 1:  # as labelled video: the clip's last frame is its only supervised one
            labels = [np.full_like(label, IGNORE_INDEX) for label in labels[:-1]] + labels[-1:]
        flows: list[Flow] = []
        for j, (_, _, flow) in enumerate(rendered[1:clip_length] if self.with_flow else [], start=1):
            if flow is None:  # with_flow: every frame after a sequence's first carries its flow
                raise RuntimeError(f"synthetic frame {start + j} of sequence {index} has no flow")
            flows.append(flow)
        return frames, labels, flows

    def _sparse_start(self, rng: np.random.Generator, clip_length: int) -> tuple[int, int]:
        """(sequence, first frame) of a clip whose label is a labelled frame (`labelled_frames`): one draw
        over the (sequence, labelled frame) pairs in LabelledClips' order, so a folder tree written from
        these sequences (data/folder.py write_synthetic_folder) gives the same clip for the same draw."""
        history = clip_length - 1 + self.target_offset
        targets = [t for t in labelled_frames(self.length, self.label_every) if t >= history]
        if not targets:
            raise UserError(
                f"no frame labelled every {self.label_every} of {self.length} has {history} frames before it "
                f"for clips of {clip_length} + offset {self.target_offset}"
            )
        pick = int(rng.integers(self.sequences * len(targets)))
        index, target = divmod(pick, len(targets))
        return index, targets[target] - history

    def warm_cache(self) -> None:
        """Render every training frame into the cache (as a long run has by its end), as far as it holds."""
        for index in range(self.sequences):
            for t in range(self.length):
                if len(self._frames) < self._frame_budget:
                    self._frame(index, t, (self.height, self.width))

    def _frame(self, index: int, t: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Flow | None]:
        """(image, label, flow to frame t-1 or None) of frame t at `size`: a full-size render from the
        cache, resized."""
        if not self._frame_budget:
            return self._render(index, t, size)
        key = (index, t)
        if key not in self._frames:
            self._frames[key] = self._render(index, t, None)
            while len(self._frames) > self._frame_budget:
                self._frames.popitem(last=False)
        self._frames.move_to_end(key)
        image, label, flow = self._frames[key]
        resized_flow = resize_flow(*flow, *size) if flow is not None else None
        return resize_image(image, *size), resize_label(label, *size), resized_flow

    def _render(self, index: int, t: int, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, Flow | None]:
        frame = self._video(index).render(t, size)  # with_flow: the flow comes from the same render pass
        if frame.label is None:  # synthetic frames are all labelled
            raise RuntimeError(f"synthetic frame {t} of sequence {index} has no label")
        flow = None
        if frame.flow_prev is not None and frame.flow_valid is not None:
            flow = frame.flow_prev, frame.flow_valid
        return frame.image, frame.label, flow

    def _size(self, rng: np.random.Generator) -> tuple[int, int]:
        """Random render size: scale augmentation, never smaller than the crop."""
        scale = rng.uniform(self.min_scale, 1.0) if self.min_scale < 1.0 else 1.0
        return max(self.min_size[0], round(self.height * scale)), max(self.min_size[1], round(self.width * scale))

    def _video(self, index: int) -> SyntheticVideo:
        if index not in self._videos:
            self._videos[index] = SyntheticVideo(
                split_seed("train", index), self.height, self.width, length=self.length, with_flow=self.with_flow
            )
            while len(self._videos) > self._cache:
                self._videos.popitem(last=False)
        self._videos.move_to_end(index)
        return self._videos[index]


def labelled_frames(length: int, label_every: int) -> range:
    """The frames of a `length`-frame synthetic sequence trained on with `label_every` K: every K-th one,
    K-1, 2K-1, ... (all of them for K = 1), so each has the K-1 frames before it for clips of up to K."""
    return range(label_every - 1, length, label_every)


class ClipsDataset(Protocol):
    """Labelled clips (data/cityscapes.py CityscapesClips, data/labelled.py LabelledClips): item i is the frames
    of one clip, oldest first, and the label of the labelled frame it ends at (or `target_offset` frames on)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> tuple[Sequence[np.ndarray], np.ndarray]: ...


class LabelledClipSampler:
    """Clips ending at the labelled frames of a labelled video's train split; only the last frame is labelled."""

    def __init__(self, dataset: ClipsDataset, *, with_flow: bool = False) -> None:
        if not len(dataset):
            raise UserError("the training split has no labelled frames")
        self.dataset = dataset
        self.with_flow = with_flow

    def clip(self, rng: np.random.Generator, clip_length: int) -> Clip:
        """A random clip; its length is the dataset's (`clip_length` is the synthetic sampler's)."""
        del clip_length
        frames, label = self.dataset[int(rng.integers(len(self.dataset)))]
        unlabelled = np.full_like(label, IGNORE_INDEX)
        # No exact motion here: DIS between the decoded frames, with ETC's photometric mask.
        flows = [dis_flow(frames[j], frames[j - 1]) for j in range(1, len(frames))] if self.with_flow else []
        return list(frames), [unlabelled] * (len(frames) - 1) + [label], flows


ClipSampler = SyntheticClipSampler | LabelledClipSampler
# What --data accepts: the synthetic street video, or labelled video (Cityscapes, the data layer's kinds).
LABELLED_SCHEMES = ("cityscapes", *KINDS)
DATA_SPECS = ("synthetic", *(f"{scheme}:PATH" for scheme in LABELLED_SCHEMES))


def check_data_spec(data: str) -> None:
    """UserError, one line listing the specs, unless `data` is one of DATA_SPECS."""
    scheme, sep, path = data.partition(":")
    if data != "synthetic" and not (sep and path and scheme in LABELLED_SCHEMES):
        raise UserError(f"unknown training data {data!r}: use {', '.join(DATA_SPECS[:-1])} or {DATA_SPECS[-1]}")


def data_classes(data: str) -> ClassTable:
    """The classes of a `--data` spec, which the model's head predicts: the 19 Cityscapes classes of the
    synthetic video and Cityscapes, a folder's or CamVid tree's own."""
    check_data_spec(data)
    return dataset_classes(data)


def labelled_clips(
    data: str, split: str, *, height: int, width: int, clip_length: int, target_offset: int
) -> ClipsDataset:
    """The clips of a labelled `--data` spec's `split`, frames and labels at height x width."""
    check_data_spec(data)
    if data.startswith("cityscapes:"):
        from tempseg.data.cityscapes import CityscapesClips  # lazy: only this spec needs cityscapesscripts

        root = data.split(":", 1)[1]
        return CityscapesClips(
            root, split, clip_length=clip_length, target_offset=target_offset, height=height, width=width
        )
    return LabelledClips(
        open_dataset(data), split, clip_length=clip_length, target_offset=target_offset, height=height, width=width
    )


def make_sampler(
    data: str,
    *,
    height: int,
    width: int,
    clip_length: int,
    target_offset: int,
    sequences: int,
    length: int,
    crop: tuple[int, int] | None = None,
    min_scale: float = 1.0,
    frame_cache_mb: int = 0,
    with_flow: bool = False,
    label_every: int = 1,
) -> ClipSampler:
    """The clip sampler of a `--data` spec (DATA_SPECS); `with_flow` adds the flows; `label_every` K > 1
    supervises synthetic clips on every K-th frame only (`labelled_frames`), as labelled video is."""
    check_data_spec(data)
    if data == "synthetic":
        return SyntheticClipSampler(
            sequences=sequences,
            length=length,
            height=height,
            width=width,
            target_offset=target_offset,
            min_size=crop or (height, width),
            min_scale=min_scale,
            frame_cache_mb=frame_cache_mb,
            with_flow=with_flow,
            label_every=label_every,
        )
    if label_every != 1:
        raise UserError(f"label_every {label_every} thins synthetic labels; {data} has its own labelled frames")
    clips = labelled_clips(
        data, "train", height=height, width=width, clip_length=clip_length, target_offset=target_offset
    )
    return LabelledClipSampler(clips, with_flow=with_flow)


def sample_batch(
    sampler: ClipSampler,
    *,
    seed: int,
    rank: int,
    step: int,
    batch_size: int,
    clip_length: int,
    crop: tuple[int, int] | None,
    grid_flow: GridFlow | None = None,
) -> ClipBatch:
    """Batch of step `step` on process `rank`: reproducible, so a resumed run sees the same data.
    `grid_flow` adds the host flow of a keyframe model (DIS between consecutive augmented frames)."""
    images, labels, flows, grid_flows = [], [], [], []
    for item in range(batch_size):
        rng = np.random.default_rng((seed, rank, step, item))
        frames, frame_labels, frame_flows = sampler.clip(rng, clip_length)
        # augment_clip transforms every image and one label identically; stack the labels as extra images
        stacked = np.stack(frame_labels, axis=-1)
        frames, stacked, frame_flows = augment_clip(frames, stacked, rng, crop=crop, flows=frame_flows)
        images.append(np.stack(frames))
        labels.append(np.moveaxis(stacked.reshape(*stacked.shape[:2], -1), -1, 0))
        flows.append(frame_flows)
        if grid_flow is not None:
            grid_flows.append(grid_flow.clip(list(frames)))
    images_arr = np.stack(images)  # [B, L, H, W, 3] uint8
    b, length = images_arr.shape[:2]
    normalized = normalize_bgr(images_arr.reshape(b * length, *images_arr.shape[2:]))
    batch = ClipBatch(normalized.reshape(b, length, *normalized.shape[1:]), np.stack(labels).astype(np.int64))
    if grid_flows:
        batch.grid_flows = np.stack(grid_flows)
    if flows[0]:
        batch.flows = np.stack([np.stack([f for f, _ in clip]) for clip in flows])
        batch.flow_valid = np.stack([np.stack([v for _, v in clip]) for clip in flows])
    return batch
