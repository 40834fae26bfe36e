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
