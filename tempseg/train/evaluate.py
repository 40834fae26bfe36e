"""Validation as the runtime sees it: val sequences streamed through the runtime's loop and torch runner.

The model in memory runs through the same Runner and frame loop as a deployed graph, so training
reports the accuracy the runtime will measure: mIoU of all, clean and degraded frames, per-class IoU.
For a temporal model `state_gain` scores the same frames again with the state zeroed before every
frame (the runtime's --reset-every 1): the difference is what the state buys, with its interval.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace

import torch

from tempseg.data.classes import CLASS_NAMES
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.metrics import StreamScores, paired_delta
from tempseg.models import FCResNet
from tempseg.models.accel import Accel
from tempseg.models.contract import build_contract
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.loop import LoopOptions, run_loop
from tempseg.runtime.policy import StatePolicy
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
    (Cityscapes val clips when the config trains on Cityscapes), through the runtime's loop;
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
    from tempseg.data.cityscapes import CityscapesClips

    root = config.data.split(":", 1)[1]
    clips = CityscapesClips(
        root, "val", clip_length=2, target_offset=config.target_offset, height=config.height, width=config.width
    )
    for index in range(len(clips)):
        images, label = clips[index]
        for t, image in enumerate(images):
            last = t == len(images) - 1
            yield Frame(image=image, label=label if last else None, index=t, sequence=f"cityscapes/val/{index}")


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


def evaluate_synthetic(model: FCResNet | Accel, config: TrainConfig, device: torch.device, *, final: bool) -> dict:
    """The val record of train.json; on the `final` pass of a temporal model also its state gain."""
    scores = stream_scores(model, config, device)
    summary = scores.summary(list(CLASS_NAMES))
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


def evaluate(model: FCResNet | Accel, config: TrainConfig, device: torch.device, *, final: bool = False) -> dict:
    """Validation on the data the model trains on: Cityscapes val clips, or synthetic val sequences."""
    if config.data.startswith("cityscapes:"):
        summary = stream_scores(model, config, device).summary(list(CLASS_NAMES))
        return {"val_miou": summary["miou"], "val_pixel_acc": summary["pixel_acc"]}
    return evaluate_synthetic(model, config, device, final=final)
