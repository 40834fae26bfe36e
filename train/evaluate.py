"""Validation as the runtime sees it: whole val sequences streamed in order, the state carried.

mIoU is also split by frame kind: on frames with a transient degradation (noise, blur, flicker,
occluder) a temporal model can lean on the clean frame before; on clean frames it should not lose.
"""

from __future__ import annotations

import numpy as np
import torch

from common.preprocess import normalize_bgr
from data import SyntheticVideo, split_seed
from metrics import ConfusionMatrix
from models import FCResNet
from train.config import TrainConfig


@torch.no_grad()
def evaluate_stream(model: FCResNet, config: TrainConfig, device: torch.device, split: str = "val") -> dict[str, float]:
    """mIoU and pixel accuracy over `config.val_sequences` synthetic sequences at full frame size."""
    model.eval()
    classes = model.config.num_classes
    overall, degraded, clean = ConfusionMatrix(classes), ConfusionMatrix(classes), ConfusionMatrix(classes)
    for index in range(config.val_sequences):
        length = config.val_frames + config.target_offset
        video = SyntheticVideo(split_seed(split, index), config.height, config.width, length=length)
        states = None
        for t in range(config.val_frames):
            frame = video.render(t)
            image = torch.from_numpy(normalize_bgr(frame.image)).to(device)
            states = model.initial_states(image) if states is None else states
            logits, *states = model(image, *states)
            prediction = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
            target = video.render(t + config.target_offset).label
            overall.update(prediction, target)
            (degraded if frame.degraded else clean).update(prediction, target)
    return {
        "val_miou": _round(overall.miou()),
        "val_pixel_acc": _round(overall.pixel_accuracy()),
        "val_miou_degraded_frames": _round(degraded.miou()),
        "val_miou_clean_frames": _round(clean.miou()),
    }


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 5)


@torch.no_grad()
def evaluate_cityscapes(model: FCResNet, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """mIoU and pixel accuracy on Cityscapes val clips (section IV-A: previous frame -> state, annotated frame)."""
    from data import CityscapesClips

    model.eval()
    root = config.data.split(":", 1)[1]
    clips = CityscapesClips(
        root, "val", clip_length=2, target_offset=config.target_offset, height=config.height, width=config.width
    )
    confusion = ConfusionMatrix(model.config.num_classes)
    for index in range(len(clips)):
        frames, label = clips[index]
        previous, current = (torch.from_numpy(normalize_bgr(f)).to(device) for f in frames[-2:])
        logits = model(current, *model.next_states(previous))[0]
        confusion.update(logits.argmax(1)[0].cpu().numpy().astype(np.uint8), label)
    return {"val_miou": _round(confusion.miou()), "val_pixel_acc": _round(confusion.pixel_accuracy())}


def evaluate(model: FCResNet, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation on the data the model trains on: Cityscapes val clips, or synthetic val sequences."""
    if config.data.startswith("cityscapes:"):
        return evaluate_cityscapes(model, config, device)
    return evaluate_stream(model, config, device)
