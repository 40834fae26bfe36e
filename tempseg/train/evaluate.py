"""Validation as the runtime sees it: val sequences streamed through the runtime's loop and torch runner.

The model in memory runs through the same Runner and frame loop as a deployed graph, so training
reports the accuracy the runtime will measure: mIoU of all, clean and degraded frames, per-class IoU.
For a temporal model `state_gain` scores the same frames again with the state zeroed before every
frame (the runtime's --reset-every 1): the difference is what the state buys, with its interval.
Labelled video (Cityscapes, a folder or CamVid tree) is scored on its labelled val frames, per class of
the data's own table.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace

import torch

from tempseg.common.classes import ClassTable
from tempseg.data.frames import Frame, FrameSource
from tempseg.data.labelled import LabelledSource, open_dataset
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.models import FCResNet
from tempseg.models.accel import Accel
from tempseg.models.contract import build_contract
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.loop import LoopOptions, run_loop
from tempseg.runtime.policy import StatePolicy
from tempseg.train.clips import data_classes, labelled_clips
from tempseg.train.config import TrainConfig


def stream_scores(
    model: FCResNet | Accel,
    config: TrainConfig,
    device: torch.device,
    *,
    zero_state: bool = False,
    consistency: bool = False,
) -> StreamScores:
    """Scores of `config.val_sequences` synthetic val sequences of `config.val_frames` frames each
    (the val split of labelled video when the config trains on it), through the runtime's loop;
    `consistency` adds TC (exact flow on synthetic frames, DIS elsewhere)."""
    contract = build_contract(model, config.model, height=config.height, width=config.width)
    runner = TorchRunner(contract, model=model, device=device.type)
    policy = StatePolicy(reset_every=1 if zero_state else None)
    options = LoopOptions(warmup=0, policy=policy, consistency=consistency, progress=False)
    with runner:
        result = run_loop(runner, val_frames(config, with_flow=consistency), options, source_fps=17.0)
    if result.accuracy is None:  # LoopOptions.accuracy is on
        raise RuntimeError("the loop kept no accuracy")
    return result.accuracy.scores


def val_frames(config: TrainConfig, *, with_flow: bool = False) -> Iterator[Frame]:
    """The validation frames of `config`'s data, in stream order, labelled where the truth is known."""
    if config.data.startswith("cityscapes:"):
        yield from cityscapes_frames(config)
        return
    if config.data != "synthetic":
        yield from labelled_frames(config)
        return
    k = config.target_offset
    source = open_source(
        "synthetic",
        split="val",
        height=config.height,
        width=config.width,
        frames=config.val_sequences * (config.val_frames + k),
        sequence_length=config.val_frames + k,
        with_flow=with_flow,
    )
    with source:
        yield from labels_ahead(source, k)


def cityscapes_frames(config: TrainConfig) -> Iterator[Frame]:
    """Cityscapes val clips (paper section IV-A: previous frame -> state, annotated frame): each clip a
    sequence of two frames, only the last labelled."""
    clips = labelled_clips(
        config.data, "val", height=config.height, width=config.width, clip_length=2, target_offset=config.target_offset
    )
    for index in range(len(clips)):
        images, label = clips[index]
        for t, image in enumerate(images):
            last = t == len(images) - 1
            yield Frame(image=image, label=label if last else None, index=t, sequence=f"cityscapes/val/{index}")


def labelled_frames(config: TrainConfig) -> Iterator[Frame]:
    """The val split of a folder or CamVid tree: whole sequences streamed with the state carried, the labelled
    frames scored (with a target offset k, each frame against the label k frames on)."""
    with labelled_source(config) as source:
        yield from labels_ahead(source, config.target_offset)


def labelled_source(config: TrainConfig) -> FrameSource:
    """The val split of a folder or CamVid `config.data`, at the config's frame size."""
    return LabelledSource(open_dataset(config.data), "val", height=config.height, width=config.width)


def check_val_data(config: TrainConfig) -> None:
    """Open the val split of labelled data: a missing or unreadable one fails before training, not after it."""
    if config.data.startswith("cityscapes:"):
        k = config.target_offset
        labelled_clips(config.data, "val", height=config.height, width=config.width, clip_length=2, target_offset=k)
    elif config.data != "synthetic":
        labelled_source(config).close()


def labels_ahead(frames: Iterable[Frame], offset: int) -> Iterator[Frame]:
    """Frame t with the label of frame t + `offset` of its sequence (the latency-aware target);
    the last `offset` frames of each sequence have no such label and are left out."""
    window: deque[Frame] = deque()
    for frame in frames:
        if window and window[0].sequence != frame.sequence:
            window.clear()
        window.append(frame)
        if len(window) > offset:
            yield replace(window.popleft(), label=frame.label)


def evaluate_synthetic(
    model: FCResNet | Accel, config: TrainConfig, device: torch.device, *, final: bool, classes: ClassTable
) -> dict:
    """The val record of train.json; on the `final` pass of a temporal model also its state gain."""
    scores = stream_scores(model, config, device)
    summary = scores.summary(list(classes.names))
    record = {
        "val_miou": summary["miou"],
        "val_miou_clean": summary["miou_clean"],
        "val_miou_degraded": summary["miou_degraded"],
        "val_pixel_acc": summary["pixel_acc"],
        "val_frames": summary["frames"],
        "val_sequences": summary["sequences"],
        "val_per_class_iou_clean": summary["per_class_iou_clean"],
        "val_miou_by_degradation": summary["miou_by_degradation"],
    }
    if final and model.num_states:
        zeroed = stream_scores(model, config, device, zero_state=True)
        record["state_gain"] = {s: paired_delta(scores, zeroed, s).to_dict() for s in ("clean", "degraded")}
    return record


def evaluate(
    model: FCResNet | Accel,
    config: TrainConfig,
    device: torch.device,
    *,
    final: bool = False,
    classes: ClassTable | None = None,
) -> dict:
    """Validation on the data the model trains on: labelled val frames, or synthetic val sequences.
    `classes`: the data's class table (read from `config.data` when not given)."""
    classes = classes or data_classes(config.data)
    if config.data == "synthetic":
        return evaluate_synthetic(model, config, device, final=final, classes=classes)
    summary = stream_scores(model, config, device).summary(list(classes.names))
    record = {"val_miou": summary["miou"], "val_pixel_acc": summary["pixel_acc"]}
    if not config.data.startswith("cityscapes:"):  # the data's own classes: say how many frames, how each fares
        record.update(val_frames=summary["frames"], val_per_class_iou=summary["per_class_iou"])
    return record
