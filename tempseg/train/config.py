"""Training configuration: one dataclass, named presets of two stages each, filled from argparse.

Every model is trained in two stages (paper section III-E, "load all"):
1. `base`: the frame-by-frame model of its backbone (fcresnet18 for fcresnet18_t66) from scratch;
2. `finetune`: the model itself, initialised from that base, on clips of `clip_length` frames.
   A temporal model starts as the base exactly (a concat merge gets zero weights on the state's
   channels); the frame-by-frame model fine-tuned by the same stage is its control: same base,
   same steps, same clips, loss on the same frames. Only bases train from scratch.

A preset is a recipe: every checkpoint records it, and compare refuses to put rows trained with
different recipes side by side. bench/train_speed.py measured the choices (bf16, channels_last,
class weights, data) against the previous recipe; its results are in bench/results/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tempseg.models.registry import split_name

TC_WEIGHT = 0.1  # ETC's weight of every regularisation term ("λ is set to 0.1", its section 3)

STAGES = ("base", "finetune")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved into the checkpoint and train.json)."""

    model: str
    preset: str = "default"  # the named recipe this configuration came from
    stage: str = "base"  # "base": from scratch; "finetune": from a trained base (init_from)
    data: str = "synthetic"  # "synthetic", "cityscapes:PATH", or labelled video: "folder:PATH", "camvid:PATH"
    height: int = 256  # full frame size in pixels; crops are cut from it so objects keep their scale
    width: int = 512
    crop: tuple[int, int] | None = (128, 256)  # training crop (h, w); None trains on full frames
    min_scale: float = 0.5  # frames are rendered at a random scale in [min_scale, 1] before the crop
    batch_size: int = 8  # clips per optimizer step (per process under torchrun)
    steps: int = 1800  # optimizer steps in total
    eval_every: int = 1800  # steps between validation passes ("epochs" in train.json)
    lr: float = 3e-3  # Adam learning rate after warm-up
    schedule: str = "poly"  # "poly": lr * (1 - step/steps)^0.9 (short budgets); "exp": lr * lr_decay^(step/steps)
    lr_decay: float = 0.01  # "exp" only: the lr reaches lr * lr_decay at the last step (paper Table I)
    warmup_steps: int = 10  # linear lr warm-up from 0 over this many steps
    weight_decay: float = 0.0
    class_weights: str = "erfnet"  # "erfnet": loss weight 1/ln(1.10 + p) per class frequency p (ERFNet); "none"
    clip_length: int = 1  # frames per clip: frames 1..L-1 are supervised when L > 1 (temporal models need 2+)
    target_offset: int = 0  # k > 0 trains for the latency-aware target: the label of frame t + k (FLAME paper)
    label_every: int = 1  # synthetic: supervise every K-th frame only, as labelled video (clips.labelled_frames)
    tc_loss: float = 0.0  # weight of ETC's temporal-consistency loss between consecutive frames (0: off; `+tc`)
    kd_loss: float = 0.0  # weight of ETC's distillation terms (pixel-wise and pair-wise-frame) from `teacher` (`+kd`)
    teacher: str | None = None  # trained tempseg checkpoint to distil from (recorded by its model and sha256)
    train_sequences: int = 192  # synthetic training sequences (train split seeds): scenes differ by seed
    sequence_length: int = 20  # frames per synthetic sequence: many short ones show more scenes per cached frame
    val_sequences: int = 16  # synthetic val sequences, streamed with the state carried
    val_frames: int = 20  # frames per val sequence
    seed: int = 0
    pretrained: str | None = None  # torchvision-format ResNet state dict to load into the encoder
    init_from: str | None = None  # tempseg checkpoint (the trained base) to initialise from
    reference_from: str | None = None  # keyframe models: trained checkpoint of the reference network (Accel)
    keyframe_interval: int = 5  # keyframe models: the labelled frame is 0..N-1 frames after its keyframe (Accel 3.4)
    module_warmup: float = 0.25  # fine-tune: first fraction of steps training only a new module (LMANet III-E)
    reinit_after_in: int = 0  # blocks after the `in` position left at their fresh init (paper III-E; 0 loads all)
    checkpoint_every: int = 100  # steps between resumable snapshots (checkpoint.last.pt)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    amp: str = "auto"  # autocast of forward and loss: "bf16", "fp32" (off), "auto" (bf16 where the hardware has it)
    channels_last: bool = True  # NHWC activations: oneDNN's and cuDNN's fast convolution layout
    frame_cache_mb: int = 2048  # rendered synthetic train frames kept in memory (rendered once, then resized)
    time_note: str = ""  # what the preset promises, printed at start

    def with_overrides(self, **changes: object) -> TrainConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# What makes two trainings comparable: everything but the model, paths, device and bookkeeping.
NOT_RECIPE = (
    "model",
    "init_from",
    "reference_from",
    "pretrained",
    "device",
    "checkpoint_every",
    "frame_cache_mb",
    "time_note",
)
NOT_RECIPE += ("teacher",)  # a path: the record holds the teacher's model and sha256 instead
NOT_RECIPE += ("eval_every", "val_sequences", "val_frames")  # evaluation, not training
RECIPE_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in NOT_RECIPE)
_FIELD_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}

# Training variants named by a `+tag` on the model name (models/registry.py): the same architecture,
# trained with these fields changed. `fcresnet18+tc` is fcresnet18 with ETC's temporal-consistency loss.
TAG_OVERRIDES: dict[str, dict[str, Any]] = {"tc": {"tc_loss": TC_WEIGHT}, "kd": {"kd_loss": TC_WEIGHT}}


def recipe(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The fields of a config (or of its saved dict) that define how a model was trained; a field a saved
    dict lacks (a run older than the field) had the field's default then."""
    data = asdict(config) if isinstance(config, TrainConfig) else config
    out = {k: data.get(k, _FIELD_DEFAULTS.get(k)) for k in RECIPE_FIELDS}
    if out["crop"] is not None:
        out["crop"] = list(out["crop"])
    return out


def _finetune(base: TrainConfig, **changes: Any) -> TrainConfig:
    """The fine-tune stage of a preset: clips of 2 frames from the trained base, a lower lr."""
    defaults = {"stage": "finetune", "clip_length": 2, "lr": 1e-3, "warmup_steps": 20}
    return replace(base, **{**defaults, **changes})


_DEFAULT = TrainConfig(
    model="", preset="default", time_note="default preset: base about 9 minutes on 2 CPU cores for fcresnet18"
)
_SMOKE = TrainConfig(
    model="",
    preset="smoke",
    height=64,
    width=128,
    crop=None,
    min_scale=1.0,
    batch_size=2,
    steps=3,
    eval_every=3,
    warmup_steps=0,
    train_sequences=2,
    sequence_length=8,
    val_sequences=2,
    val_frames=3,
    checkpoint_every=2,
    frame_cache_mb=64,
    time_note="smoke preset: a few seconds, for tests",
)
# `make compare`: two bases and four fine-tunes, exported, calibrated, built and measured in 25 minutes on 2 cores
_COMPARE = replace(
    _DEFAULT,
    preset="compare",
    steps=1400,
    eval_every=1400,
    val_sequences=8,
    time_note="compare preset: base 1400 steps (about 6.5 minutes for fcresnet18 on 2 CPU cores)",
)
# the paper's schedule (Table I) for a GPU: Adam 1e-4 decaying 100x, full quarter-size frames, 150 epochs
_PAPER = replace(
    _DEFAULT,
    preset="paper",
    crop=None,
    min_scale=1.0,
    lr=1e-4,
    schedule="exp",
    warmup_steps=0,
    steps=150 * 372,
    eval_every=372,
    train_sequences=2975,
    val_sequences=50,
    val_frames=30,
    checkpoint_every=372,
    time_note="paper preset: 150 epochs of 2975 clips (batch 8); meant for a GPU",
)

PRESETS: dict[str, dict[str, TrainConfig]] = {
    "smoke": {"base": _SMOKE, "finetune": _finetune(_SMOKE, steps=2, eval_every=2, warmup_steps=0)},
    "default": {
        "base": _DEFAULT,
        "finetune": _finetune(_DEFAULT, steps=400, eval_every=400, time_note="default preset: fine-tune 400 steps"),
    },
    "compare": {
        "base": _COMPARE,
        "finetune": _finetune(_COMPARE, steps=300, eval_every=300, time_note="compare preset: fine-tune 300 steps"),
    },
    "paper": {
        "base": _PAPER,
        "finetune": _finetune(_PAPER, lr=1e-4, warmup_steps=0, steps=50 * 372, time_note="paper: 50 epochs"),
    },
}


def preset_config(name: str, stage: str, /, **overrides: Any) -> TrainConfig:
    """The configuration of one stage of the preset `name`, with the changes the model's `+tags` make and
    then `overrides` (None values ignored; an override of `preset` renames the recipe, as the paper
    harness does for its own budget)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}: use {' or '.join(STAGES)}")
    tagged: dict[str, Any] = {}
    for tag in split_name(overrides["model"])[1] if overrides.get("model") else ():
        tagged.update(TAG_OVERRIDES[tag])
    return PRESETS[name][stage].with_overrides(**tagged).with_overrides(**overrides)
