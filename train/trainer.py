"""The training loop: clips -> loss -> Adam, periodic streaming validation, atomic checkpoints.

Artefacts in the run directory:
- checkpoint.last.pt: resumable snapshot (weights, optimizer, step), rewritten atomically;
- checkpoint.pt: the finished model, written once at the end (what `make` waits for);
- train.json: the config and one record per validation ("epoch"): loss, val mIoU, pixel acc.

Under torchrun each process trains on its own clips (sampled by rank) through
DistributedDataParallel (gloo on CPU, nccl on GPU); rank 0 writes the artefacts.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.errors import UserError
from common.io import write_json
from models import FCResNet, build_model, check_input_size
from models.checkpoint import read_checkpoint, save_checkpoint
from train.clips import make_sampler, sample_batch
from train.config import TrainConfig
from train.evaluate import evaluate
from train.init import init_from_checkpoint, load_pretrained_backbone

log = logging.getLogger(__name__)
LAST = "checkpoint.last.pt"
FINAL = "checkpoint.pt"


def lr_factor(config: TrainConfig):
    """Multiplier of the base lr at each step: linear warm-up, then poly or exponential decay."""
    if config.schedule not in ("poly", "exp"):
        raise UserError(f"unknown lr schedule {config.schedule!r}: use 'poly' or 'exp'")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        progress = min(1.0, step / max(1, config.steps))
        decay = (1.0 - progress) ** 0.9 if config.schedule == "poly" else config.lr_decay**progress
        return warm * decay

    return factor


class ClipForward(nn.Module):
    """Runs a whole clip through the model so DDP sees one forward per step.

    Returns logits [B, L', C, H, W] of the supervised frames: frames 1..L-1 for a temporal
    model (each with the state of the frame before), every frame for a frame-by-frame one.
    """

    def __init__(self, model: FCResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if self.model.num_states == 0:
            b, length = clip.shape[:2]
            return self.model(clip.flatten(0, 1))[0].unflatten(0, (b, length))
        states = self.model.next_states(clip[:, 0])
        outputs = []
        for t in range(1, clip.shape[1]):
            logits, *states = self.model(clip[:, t], *states)
            outputs.append(logits)
        return torch.stack(outputs, dim=1)


def supervised_labels(model: FCResNet, labels: torch.Tensor) -> torch.Tensor:
    """Labels of the frames ClipForward returns logits for."""
    return labels if model.num_states == 0 else labels[:, 1:]


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train `config.model`; returns the train.json record. Resumes from checkpoint.last.pt if asked."""
    out_dir = Path(out_dir)
    rank, world, device = _setup_process(config.device)
    try:
        check_input_size(*(config.crop or (config.height, config.width)))
        check_input_size(config.height, config.width)
    except ValueError as err:
        raise UserError(str(err)) from None
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    clip_length = 1 if model.num_states == 0 else max(2, config.clip_length)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    history: list[dict[str, Any]] = []
    start_step = 0
    if resume and (out_dir / LAST).is_file():
        start_step, history = _restore(out_dir / LAST, model, optimizer, scheduler, config)
        if rank == 0:
            log.info("resuming %s at step %d of %d", config.model, start_step, config.steps)
    else:
        _initialise(model, config)
    wrapped = ClipForward(model)
    if world > 1:
        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = make_sampler(
        config.data,
        height=config.height,
        width=config.width,
        clip_length=clip_length,
        target_offset=config.target_offset,
        sequences=config.train_sequences,
        length=config.sequence_length,
        crop=config.crop,
        min_scale=config.min_scale,
    )
    if rank == 0 and start_step == 0 and config.time_note:
        log.info(
            "training %s (%s, %d steps x %d clips x %d frames, %s)",
            config.model,
            config.time_note,
            config.steps,
            config.batch_size * world,
            clip_length,
            device,
        )
    started = time.perf_counter()
    losses: list[float] = []
    progress = tqdm(
        range(start_step, config.steps),
        initial=start_step,
        total=config.steps,
        desc=f"train {config.model}",
        disable=rank != 0,
        unit="step",
    )
    for step in progress:
        model.train()
        batch = sample_batch(
            sampler,
            seed=config.seed,
            rank=rank,
            step=step,
            batch_size=config.batch_size,
            clip_length=clip_length,
            crop=config.crop,
        )
        images = torch.from_numpy(batch.images).to(device)
        labels = supervised_labels(model, torch.from_numpy(batch.labels).to(device))
        logits = wrapped(images)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1), ignore_index=255)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            history.append(_validate(model, config, done, losses, rank, world, device))
            losses = []
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
            _snapshot(out_dir / LAST, model, optimizer, scheduler, config, done, history)
    elapsed = time.perf_counter() - started
    record = {
        "rank": rank,
        "model": config.model,
        "config": _config_dict(config),
        "world_size": world,
        "device": str(device),
        "train_seconds": round(elapsed, 1),
        "epochs": history,
    }
    if rank == 0:
        save_checkpoint(
            out_dir / FINAL, model, config.model, train=_config_dict(config), epochs=history, step=config.steps
        )
        write_json(out_dir / "train.json", record)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record


def _validate(
    model: FCResNet, config: TrainConfig, step: int, losses: list[float], rank: int, world: int, device: torch.device
) -> dict[str, Any]:
    loss = float(np.mean(losses)) if losses else math.nan
    if world > 1:
        reduced = torch.tensor([loss], device=device)
        dist.all_reduce(reduced)
        loss = reduced.item() / world
    entry: dict[str, Any] = {"epoch": step // config.eval_every, "step": step, "loss": round(loss, 5)}
    if rank == 0:
        entry.update(evaluate(model, config, device))
        tqdm.write(
            f"step {step}: loss {loss:.4f}  val mIoU {entry['val_miou']:.4f}  pixel acc {entry['val_pixel_acc']:.4f}"
        )
    return entry


def _initialise(model: FCResNet, config: TrainConfig) -> None:
    if config.pretrained:
        load_pretrained_backbone(model, config.pretrained)
    if config.init_from:
        init_from_checkpoint(model, config.init_from, reinit_after_in=config.reinit_after_in)


def _snapshot(path: Path, model: FCResNet, optimizer, scheduler, config: TrainConfig, step: int, history: list) -> None:
    save_checkpoint(
        path,
        model,
        config.model,
        step=step,
        train=_config_dict(config),
        epochs=history,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
    )


def _restore(path: Path, model: FCResNet, optimizer, scheduler, config: TrainConfig) -> tuple[int, list]:
    payload = read_checkpoint(path)
    if payload["model"] != config.model:
        raise UserError(
            f"snapshot is for model {payload['model']!r}, not {config.model!r}; remove it to start over", path
        )
    saved = payload.get("train", {})
    changed = [
        k for k in ("steps", "batch_size", "lr", "seed", "data") if k in saved and saved[k] != _config_dict(config)[k]
    ]
    if changed:
        raise UserError(
            f"snapshot was trained with other settings ({', '.join(changed)}); remove it to start over", path
        )
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return int(payload["step"]), list(payload.get("epochs", []))


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    data = asdict(config)
    data["crop"] = None if config.crop is None else list(config.crop)
    return data


def _setup_process(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if world > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")
