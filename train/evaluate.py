"""Validation as the runtime sees it: whole val sequences streamed in order, the state carried."""

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
    confusion = ConfusionMatrix(model.config.num_classes)
    for index in range(config.val_sequences):
        video = SyntheticVideo(
            split_seed(split, index), config.height, config.width, length=config.val_frames + config.target_offset
        )
        states = None
        for t in range(config.val_frames):
            frame = video.render(t)
            image = torch.from_numpy(normalize_bgr(frame.image)).to(device)
            states = model.initial_states(image) if states is None else states
            logits, *states = model(image, *states)
            target = video.render(t + config.target_offset).label
            confusion.update(logits.argmax(1)[0].cpu().numpy().astype(np.uint8), target)
    return {"val_miou": round(confusion.miou(), 5), "val_pixel_acc": round(confusion.pixel_accuracy(), 5)}
