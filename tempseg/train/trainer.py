"""The training loop: clips -> loss -> Adam, periodic streaming validation, atomic checkpoints.

Artefacts in the run directory:
- checkpoint.last.pt: resumable snapshot (weights, optimizer, step), rewritten atomically;
- checkpoint.pt: the finished model, written once at the end (what `make` waits for);
- train.json: the recipe (with the base's hash and recipe), the config, and one record per validation
  ("epoch"): loss, val mIoU of all, clean and degraded frames, per-class IoU, and on the last one of
  a temporal model its state gain (the same frames with the state zeroed).

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

from tempseg.common.errors import UserError
from tempseg.common.io import sha256_file, write_json
from tempseg.common.text import number
from tempseg.data.flow import GridFlow
from tempseg.models import FCResNet, build_model, check_model_input, model_config
from tempseg.models.accel import FEATURE_STRIDE, Accel
from tempseg.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from tempseg.train.accel import FLOW_EPE_WEIGHT, flow_epe, keyframe_offset
from tempseg.train.clips import ClipBatch, ClipSampler, data_classes, make_sampler, sample_batch
from tempseg.train.config import TrainConfig, recipe
from tempseg.train.consistency import pairwise_frames, pixel_distillation, temporal_loss
from tempseg.train.evaluate import check_val_data, evaluate
from tempseg.train.init import init_from_checkpoint, load_pretrained_backbone

log = logging.getLogger(__name__)
LAST = "checkpoint.last.pt"
FINAL = "checkpoint.pt"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `amp` on `device`: bf16, or None for plain fp32.

    "auto" takes bf16 where the hardware computes it natively (CPUs with AVX-512 BF16 or AMX through
    oneDNN, CUDA GPUs from Ampere on); elsewhere bf16 is emulated and slower than fp32.
    """
    if amp not in ("auto", "bf16", "fp32"):
        raise UserError(f"unknown --amp {amp!r}: use auto, bf16 or fp32")
    if amp == "fp32":
        return None
    if amp == "auto" and not _native_bf16(device):
        return None
    return torch.bfloat16


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def class_weights(kind: str, sampler: ClipSampler, num_classes: int, *, seed: int, clips: int = 64) -> torch.Tensor:
    """Per-class loss weights from the label frequencies p of `clips` training clips, over the data's
    `num_classes` classes (ignored pixels, 255, are not counted).

    "erfnet": 1 / ln(1.10 + p), the ENet weighting with ERFNet's constant (rare classes weigh ~4x road);
    "none": all ones.
    """
    if kind == "none":
        return torch.ones(num_classes)
    if kind != "erfnet":
        raise UserError(f"unknown class weighting {kind!r}: use 'erfnet' or 'none'")
    counts = np.zeros(num_classes, np.int64)
    for item in range(clips):
        _, labels, _ = sampler.clip(np.random.default_rng((seed, 1 << 20, item)), 1)
        for label in labels:  # a labelled-video clip is labelled on its last frame only
            counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    frequency = counts / max(1, counts.sum())
    return torch.from_numpy(1.0 / np.log(1.10 + frequency)).float()


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

    Returns logits [B, L', C, H, W] of the supervised frames (`supervised_labels` picks their labels):
    - a temporal model: the last frame of the clip, with the state the frames before it built (a feedback
      state from the frame before, a memory from the S frames before, paper of LMANet III-E: "clips of
      S+1 frames, loss on the last"); one supervised frame per clip whatever the family; the memory's
      context frames run the encoder without autograd;
    - a keyframe model (Accel): the last frame, its keyframe `offset` frames before it, the state warped by
      `flows` (the host flow; None with a flow net), train/accel.py;
    - a frame-by-frame model: frames 1..L-1, or the one frame when L = 1. It skips frame 0, the temporal
      model's context only, so a control fine-tuned on clips of 2 is scored on as many frames.
    With `first_frame` (ETC's terms compare consecutive predictions) every frame is predicted, each with the
    state of the one before (the full frame-0 forward from the zero state, as the runtime's first frame).
    """

    def __init__(self, model: FCResNet | Accel, *, first_frame: bool = False) -> None:
        super().__init__()
        self.model = model
        self.first_frame = first_frame

    def forward(self, clip: torch.Tensor, flows: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        model = self.model
        if isinstance(model, Accel):
            return model.clip_logits(clip, flows, offset)[:, None]
        if model.num_states == 0:
            frames = clip if clip.shape[1] == 1 or self.first_frame else clip[:, 1:]
            b, length = frames.shape[:2]
            return model(frames.flatten(0, 1))[0].unflatten(0, (b, length))
        if not self.first_frame:
            # The memory's context frames train its key and value convs, not the encoder: one encoder
            # backward per clip instead of S+1.
            logits, *_ = model(clip[:, -1], *model.clip_states(clip[:, :-1], encoder_grad=False))
            return logits[:, None]
        states, outputs = model.initial_states(clip[:, 0]), []
        for t in range(clip.shape[1]):
            logits, *states = model(clip[:, t], *states)
            outputs.append(logits)
        return torch.stack(outputs, dim=1)

    def supervised_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels [B, L', H, W] of the frames `forward` scores with the cross-entropy."""
        if self.model.num_states and not self.first_frame:
            return labels[:, -1:]
        return supervised(labels)


def supervised(values: torch.Tensor) -> torch.Tensor:
    """The supervised frames of a clip's labels (or of ClipForward's logits with `first_frame`): frames
    1..L-1, or the one frame when L = 1."""
    return values if values.shape[1] == 1 else values[:, 1:]


def clip_length_of(model: FCResNet | Accel, config: TrainConfig) -> int:
    """Frames per clip: the config's, at least 2 for a temporal model (a state needs a frame before) and
    for ETC's terms (they compare consecutive frames), at least S+1 for a memory of S frames, and the
    keyframe interval N for a keyframe model (its keyframe up to N-1 frames before the labelled one)."""
    if isinstance(model, Accel):
        return config.keyframe_interval
    if model.config.memory is not None:
        return max(model.config.memory.frames + 1, config.clip_length)
    pairs = model.num_states or config.tc_loss or config.kd_loss
    return max(2, config.clip_length) if pairs else max(1, config.clip_length)


def module_warmup_steps(model: FCResNet | Accel, config: TrainConfig) -> int:
    """Steps at the start of a fine-tune in which only a module trained from scratch learns (0: none)."""
    if config.stage != "finetune" or not model.module_parameters():
        return 0
    return round(config.module_warmup * config.steps)


class TrainingRun:
    """One model's training state: model, optimizer, schedule, clip sampler and loss weights.

    `step(i)` runs optimizer step i on the batch that step i always gets (a pure function of the
    seed, rank and step), so two runs stepped alternately in one process (bench/train_speed.py)
    see the same data as they would alone.
    """

    def __init__(self, config: TrainConfig, *, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.config, self.rank, self.world = config, rank, world
        self.device = device or torch.device("cpu")
        try:
            architecture = model_config(config.model)
            check_model_input(architecture, *(config.crop or (config.height, config.width)))
            check_model_input(architecture, config.height, config.width)
        except ValueError as err:
            raise UserError(str(err)) from None
        if config.tc_loss < 0 or config.kd_loss < 0:
            raise UserError(f"loss weights are >= 0 (--tc-loss {config.tc_loss}, --kd-loss {config.kd_loss})")
        if config.kd_loss and not config.teacher:
            raise UserError("distillation (+kd, --kd-loss) needs a trained teacher: pass --teacher CHECKPOINT")
        if config.stage == "finetune" and not config.init_from:
            raise UserError("the finetune stage starts from a trained base: pass --init-from BASE/checkpoint.pt")
        if config.keyframe_interval < 1:
            raise UserError(f"--keyframe-every {config.keyframe_interval} is below 1")
        if architecture.accel is not None and config.stage == "finetune" and not config.reference_from:
            raise UserError("a keyframe model fine-tunes a trained reference: pass --reference-from REF/checkpoint.pt")
        self.classes = data_classes(config.data)  # before anything is built: a bad spec fails first
        torch.manual_seed(config.seed)
        model = build_model(config.model, num_classes=len(self.classes)).to(self.device)
        if config.channels_last:  # Module.to works in place; torch's overloads omit its memory_format keyword
            model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
        self.model = model
        self.autocast = autocast_dtype(config.amp, self.device)
        self.clip_length = clip_length_of(self.model, config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config))
        self.all_frames = config.tc_loss > 0 or config.kd_loss > 0  # ETC's terms need frame 0's prediction too
        self.forward = self.clip_forward = ClipForward(self.model, first_frame=self.all_frames)
        self.module_warmup_steps = module_warmup_steps(self.model, config)
        self.teacher = self._teacher(config, model.config.num_classes) if config.kd_loss else None
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Parameters frozen during a module warm-up get no gradient: DDP must not wait for them.
            unused = self.module_warmup_steps > 0
            self.forward = DistributedDataParallel(self.forward, device_ids=ids, find_unused_parameters=unused)
        self.sampler = make_sampler(
            config.data,
            height=config.height,
            width=config.width,
            clip_length=self.clip_length,
            target_offset=config.target_offset,
            sequences=config.train_sequences,
            length=config.sequence_length,
            crop=config.crop,
            min_scale=config.min_scale,
            frame_cache_mb=config.frame_cache_mb,
            with_flow=config.tc_loss > 0 or getattr(self.model, "flow_net", None) is not None,
            label_every=config.label_every,
        )
        self.grid_flow = None  # the host flow of a keyframe model's update graph, computed as the runtime does
        if isinstance(self.model, Accel) and self.model.takes_flow:
            h, w = config.crop or (config.height, config.width)
            self.grid_flow = GridFlow((h // FEATURE_STRIDE, w // FEATURE_STRIDE))
        check_val_data(config)
        self.weights = class_weights(config.class_weights, self.sampler, model.config.num_classes, seed=config.seed)
        self.weights = self.weights.to(self.device)

    def _teacher(self, config: TrainConfig, num_classes: int) -> ClipForward:
        """The frozen teacher, streaming each clip from frame 0 as the student does."""
        if not config.teacher:  # __init__ refused distillation without a teacher
            raise UserError("distillation (+kd, --kd-loss) needs a trained teacher: pass --teacher CHECKPOINT")
        if not Path(config.teacher).is_file():
            raise UserError("teacher checkpoint not found", config.teacher)
        teacher_classes = read_checkpoint(config.teacher)["config"]["num_classes"]
        if teacher_classes != num_classes:  # distillation matches the teacher's class scores to the student's
            raise UserError(
                f"teacher has {teacher_classes} classes, the data {num_classes}: distil from a teacher trained on "
                "this data",
                config.teacher,
            )
        teacher, _ = load_model(config.teacher, expect_classes=num_classes)
        teacher = teacher.to(self.device).eval().requires_grad_(False)
        if self.config.channels_last:  # Module.to works in place; torch's overloads omit its memory_format keyword
            teacher.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
        return ClipForward(teacher, first_frame=True)

    def _warm_up_module(self, step: int) -> None:
        """During the module warm-up only the module trains: the base's parameters get no gradient and its
        BatchNorm statistics stay as trained (the paper's frozen encoder and decoder)."""
        frozen = step < self.module_warmup_steps
        module = {id(p) for p in self.model.module_parameters()}
        for param in self.model.parameters():
            if id(param) not in module:
                param.requires_grad_(not frozen)
        if frozen:
            for layer in self.model.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.eval()

    def _autocast(self) -> torch.autocast:
        """The run's autocast (bf16 where resolved so, else a disabled context)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None)

    def initialise(self) -> None:
        """Pretrained encoder and/or the trained base (paper III-E), for a run that does not resume."""
        if isinstance(self.model, Accel):  # the update network from its base, the reference from its own
            if self.config.pretrained:
                raise UserError(
                    "--pretrained loads one ResNet encoder; a keyframe model starts from --init-from/--reference-from"
                )
            if self.config.init_from:
                init_from_checkpoint(self.model.update, self.config.init_from, classes=self.classes)
            if self.config.reference_from:
                init_from_checkpoint(self.model.reference, self.config.reference_from, classes=self.classes)
        else:
            if self.config.pretrained:
                load_pretrained_backbone(self.model, self.config.pretrained)
            if self.config.init_from:
                init_from_checkpoint(
                    self.model, self.config.init_from, reinit_after_in=self.config.reinit_after_in, classes=self.classes
                )

    def batch(self, step: int) -> ClipBatch:
        """The batch of step `step` on this process: a pure function of (seed, rank, step)."""
        config = self.config
        return sample_batch(
            self.sampler,
            seed=config.seed,
            rank=self.rank,
            step=step,
            batch_size=config.batch_size,
            clip_length=self.clip_length,
            crop=config.crop,
            grid_flow=self.grid_flow,
        )

    def loss(self, step: int) -> torch.Tensor:
        """The loss `step(step)` trains on: the batch of step `step` through the model in training mode, the
        module warm-up applied. Updates nothing but BatchNorm's running statistics: each term can be weighed on
        one fixed batch."""
        config = self.config
        self.model.train()
        batch = self.batch(step)
        images = torch.from_numpy(batch.images).to(self.device)
        labels = self.clip_forward.supervised_labels(torch.from_numpy(batch.labels).to(self.device))
        self._warm_up_module(step)
        keyframe = isinstance(self.model, Accel)
        with self._autocast():
            if keyframe:
                flows = None if batch.grid_flows is None else torch.from_numpy(batch.grid_flows).to(self.device)
                warming = step < self.module_warmup_steps
                offset = keyframe_offset(config.seed, step, self.clip_length, fusion_only=warming)
                logits = self.forward(images, flows, offset)
            else:
                logits = self.forward(images)
        scored = supervised(logits) if self.all_frames else logits  # frame 0 is scored by ETC's terms only
        loss = nn.functional.cross_entropy(
            scored.float().flatten(0, 1), labels.flatten(0, 1), weight=self.weights, ignore_index=255
        )
        if config.tc_loss:
            flows, valid = (torch.from_numpy(a).to(self.device) for a in (batch.flows, batch.flow_valid))
            loss = loss + config.tc_loss * temporal_loss(logits, flows, valid)
        if isinstance(self.model, Accel) and self.model.flow_net is not None:
            exact, valid = (torch.from_numpy(a).to(self.device) for a in (batch.flows, batch.flow_valid))
            with self._autocast():
                loss = loss + FLOW_EPE_WEIGHT * flow_epe(self.model, images, exact, valid)
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                target = self.teacher(images)
            loss = loss + config.kd_loss * (pixel_distillation(logits, target) + pairwise_frames(logits, target))
        return loss

    def step(self, step: int) -> float:
        """One optimizer step on the batch of step `step`; returns its loss."""
        loss = self.loss(step)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {step}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:  # not when a warm-up freezes all a keyframe every frame trains (interval 1)
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return loss.item()


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train `config.model`; returns the train.json record. Resumes from checkpoint.last.pt if asked."""
    out_dir = Path(out_dir)
    rank, world, device = _setup_process(config.device)
    run = TrainingRun(config, rank=rank, world=world, device=device)
    history: list[dict[str, Any]] = []
    start_step = 0
    if resume and (out_dir / LAST).is_file():
        start_step, history = _restore(out_dir / LAST, run, config)
        if rank == 0:
            log.info("resuming %s at step %d of %d", config.model, start_step, config.steps)
    else:
        run.initialise()
    trained_recipe = recipe_record(config, run.autocast)
    if rank == 0 and start_step == 0 and config.time_note:
        log.info(
            "training %s (%s, %d steps x %d clips x %d frames, %s%s)",
            config.model,
            config.time_note,
            config.steps,
            config.batch_size * world,
            run.clip_length,
            device,
            ", bf16 autocast" if run.autocast else "",
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
        losses.append(run.step(step))
        progress.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.1e}")
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            history.append(_validate(run, done, losses))
            losses = []
        if rank == 0 and (done % config.checkpoint_every == 0 or done == config.steps):
            _snapshot(out_dir / LAST, run, config, done, history)
    elapsed = time.perf_counter() - started
    record = {
        "rank": rank,
        "model": config.model,
        "recipe": trained_recipe,
        "config": _config_dict(config),
        "world_size": world,
        "device": str(device),
        "train_seconds": round(elapsed, 1),
        "epochs": history,
    }
    if rank == 0:
        save_checkpoint(
            out_dir / FINAL,
            run.model,
            config.model,
            classes=run.classes,
            train=_config_dict(config),
            recipe=trained_recipe,
            epochs=history,
            step=config.steps,
        )
        write_json(out_dir / "train.json", record)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record


def _validate(run: TrainingRun, step: int, losses: list[float]) -> dict[str, Any]:
    config, device = run.config, run.device
    loss = float(np.mean(losses)) if losses else math.nan
    if run.world > 1:
        reduced = torch.tensor([loss], device=device)
        dist.all_reduce(reduced)
        loss = reduced.item() / run.world
    entry: dict[str, Any] = {"epoch": step // config.eval_every, "step": step, "loss": round(loss, 5)}
    if run.rank == 0:
        entry.update(evaluate(run.model, config, device, final=step == config.steps, classes=run.classes))
        tqdm.write(f"step {step}: loss {loss:.4f}  {val_line(entry)}")
    return entry


def val_line(entry: dict[str, Any]) -> str:
    """The validation figures of one train.json record, as one line."""
    text = f"val mIoU {number(entry.get('val_miou'), 4)}"
    if "val_miou_clean" in entry:
        text += f" (clean {number(entry['val_miou_clean'], 4)}, degraded {number(entry['val_miou_degraded'], 4)})"
    text += f"  pixel acc {number(entry.get('val_pixel_acc'), 4)}"
    for subset, gain in entry.get("state_gain", {}).items():
        text += f"  state gain {subset} {gain['delta']:+.1f} [{gain['low']:+.1f}, {gain['high']:+.1f}] pts"
    return text


def _snapshot(path: Path, run: TrainingRun, config: TrainConfig, step: int, history: list) -> None:
    save_checkpoint(
        path,
        run.model,
        config.model,
        classes=run.classes,
        step=step,
        train=_config_dict(config),
        epochs=history,
        optimizer=run.optimizer.state_dict(),
        scheduler=run.scheduler.state_dict(),
    )


def _restore(path: Path, run: TrainingRun, config: TrainConfig) -> tuple[int, list]:
    payload = read_checkpoint(path)
    if payload["model"] != config.model:
        raise UserError(
            f"snapshot is for model {payload['model']!r}, not {config.model!r}; remove it to start over", path
        )
    saved, wanted = recipe(payload.get("train", {})), recipe(config)
    changed = [k for k in wanted if saved[k] != wanted[k]]
    if changed:
        raise UserError(
            f"snapshot was trained with other settings ({', '.join(changed)}); remove it to start over", path
        )
    run.model.load_state_dict(payload["state_dict"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    return int(payload["step"]), list(payload.get("epochs", []))


def recipe_record(config: TrainConfig, autocast: torch.dtype | None) -> dict[str, Any]:
    """How this model is trained (autocast as resolved here), with the model, hash and recipe of its base."""
    record = {**recipe(config), "amp": "bf16" if autocast is not None else "fp32"}
    if config.teacher:
        record["teacher"] = {"model": read_checkpoint(config.teacher)["model"], "sha256": sha256_file(config.teacher)}
    if config.init_from:
        record["init"] = _checkpoint_record(config.init_from)
    if config.reference_from:
        record["reference"] = _checkpoint_record(config.reference_from)
    return record


def _checkpoint_record(path: str) -> dict[str, Any]:
    """Model, sha256 and recipe of a checkpoint a run starts from (a base, an Accel reference)."""
    payload = read_checkpoint(path)
    return {"model": payload["model"], "sha256": sha256_file(path), "recipe": payload.get("recipe")}


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
