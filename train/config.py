"""Training configuration: one dataclass, presets for the usual budgets, filled from argparse."""

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
    batch_size: int = 8  # clips per optimizer step (per process under torchrun)
    steps: int = 200  # optimizer steps in total
    eval_every: int = 50  # steps between validation passes ("epochs" in train.json)
    lr: float = 1e-3  # Adam learning rate at step 0
    lr_decay: float = 0.01  # the lr decays exponentially to lr * lr_decay at the last step (paper Table I)
    weight_decay: float = 0.0
    clip_length: int = (
        2  # frames per clip for temporal models: L-1 labelled frames, each with the state of the one before
    )
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
        batch_size=2,
        steps=3,
        eval_every=3,
        train_sequences=2,
        sequence_length=8,
        val_sequences=1,
        val_frames=3,
        checkpoint_every=2,
        time_note="smoke preset: a few seconds, for tests",
    ),
    # `make engine` on a fresh 2-core CPU machine: a usable model in about 5 minutes
    "default": TrainConfig(model="", time_note="default preset: about 5 minutes on 2 CPU cores (fcresnet18_t66)"),
    # the paper's schedule (Table I) for a GPU: Adam 1e-4, decay 0.01, full quarter-size frames
    "paper": TrainConfig(
        model="",
        crop=None,
        lr=1e-4,
        steps=150 * 372,
        eval_every=372,
        train_sequences=2975,
        val_sequences=50,
        val_frames=30,
        checkpoint_every=372,
        time_note="paper preset: 150 epochs of 2975 clips; meant for a GPU",
    ),
}

PRESET_NAMES = tuple(PRESETS)
