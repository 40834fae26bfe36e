"""Training configuration: one dataclass, presets for the usual budgets, filled from argparse.

The defaults are the recipe measured on 2 CPU cores (fcresnet18, 150 steps, synthetic val mIoU):
exponential decay from 1e-3: 0.120; poly from 2e-3: 0.172; poly from 4e-3 with warm-up: 0.175;
poly from 3e-3 with scale augmentation 0.5-1: 0.207 (crops of 160x320: 0.218 at 1.5x the cost;
batch 16 of 96x192: 0.160).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved into the checkpoint and train.json)."""

    model: str
    data: str = "synthetic"  # "synthetic" or "cityscapes:PATH"
    height: int = 256  # full frame size in pixels; crops are cut from it so objects keep their scale
    width: int = 512
    crop: tuple[int, int] | None = (128, 256)  # training crop (h, w); None trains on full frames
    min_scale: float = 0.5  # frames are rendered at a random scale in [min_scale, 1] before the crop
    batch_size: int = 8  # clips per optimizer step (per process under torchrun)
    steps: int = 220  # optimizer steps in total
    eval_every: int = 55  # steps between validation passes ("epochs" in train.json)
    lr: float = 3e-3  # Adam learning rate after warm-up
    schedule: str = "poly"  # "poly": lr * (1 - step/steps)^0.9 (short budgets); "exp": lr * lr_decay^(step/steps)
    lr_decay: float = 0.01  # "exp" only: the lr reaches lr * lr_decay at the last step (paper Table I)
    warmup_steps: int = 10  # linear lr warm-up from 0 over this many steps
    weight_decay: float = 0.0
    clip_length: int = 2  # frames per clip (temporal models): L-1 supervised frames, each with its predecessor's state
    target_offset: int = 0  # k > 0 trains for the latency-aware target: the label of frame t + k (FLAME paper)
    train_sequences: int = 64  # synthetic training sequences (seeds of the train split)
    sequence_length: int = 60  # frames per synthetic sequence
    val_sequences: int = 4  # synthetic val sequences, streamed with the state carried
    val_frames: int = 12  # frames per val sequence
    seed: int = 0
    pretrained: str | None = None  # torchvision-format ResNet state dict to load into the encoder
    init_from: str | None = None  # tempseg checkpoint (e.g. non-temporal) to initialise from
    reinit_after_in: int = 0  # blocks after the `in` position left at their fresh init (paper III-E; 0 loads all)
    checkpoint_every: int = 25  # steps between resumable snapshots (checkpoint.last.pt)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    time_note: str = ""  # what the preset promises, printed at start

    def with_overrides(self, **changes: object) -> TrainConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, TrainConfig] = {
    # seconds: for tests and CI
    "smoke": TrainConfig(
        model="",
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
        val_sequences=1,
        val_frames=3,
        checkpoint_every=2,
        time_note="smoke preset: a few seconds, for tests",
    ),
    # `make engine` on a fresh 2-core CPU machine: a usable model in about 5 minutes
    "default": TrainConfig(model="", time_note="default preset: about 5 minutes on 2 CPU cores for fcresnet18_t66"),
    # `make compare`: five models trained, exported, calibrated and measured within 20 minutes on 2 cores
    "compare": TrainConfig(
        model="",
        # `make compare` trains five models and must fit 20 minutes on 2 cores: 100 steps of 6 clips,
        # one validation at the end (the compare runs measure accuracy again on their own frames)
        steps=100,
        batch_size=6,
        eval_every=100,
        time_note="compare preset: 100 steps of 6 clips, 1-3 minutes per model on 2 CPU cores",
    ),
    # the paper's schedule (Table I) for a GPU: Adam 1e-4 decaying 100x, full quarter-size frames, 150 epochs
    "paper": TrainConfig(
        model="",
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
    ),
}
