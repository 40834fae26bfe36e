"""One training stage as one call, as `python -m tempseg.train` runs it: config -> checkpoint.pt + train.json."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempseg.train.config import TrainConfig
from tempseg.train.trainer import FINAL, train, val_line


@dataclass(frozen=True)
class TrainResult:
    """What a training stage wrote and how long it took."""

    checkpoint: Path  # OUT_DIR/checkpoint.pt, with train.json beside it (rank 0 only writes them)
    record: dict[str, Any]  # train.json's content; record["rank"] says which process of a torchrun this is
    seconds: float  # wall time of the stage: setup, steps and validation

    @property
    def line(self) -> str:
        """The stage line the CLI prints on rank 0: `stage train: 12.3 s -> OUT/checkpoint.pt (val mIoU ...)`."""
        last = self.record["epochs"][-1] if self.record["epochs"] else {}
        return f"stage train: {self.seconds:.1f} s -> {self.checkpoint} ({val_line(last)})"


def train_stage(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train `config` (a preset's stage: train.config.preset_config) into out_dir; `resume` continues from
    OUT_DIR/checkpoint.last.pt when present."""
    started = time.perf_counter()
    record = train(config, out_dir, resume=resume)
    return TrainResult(Path(out_dir) / FINAL, record, time.perf_counter() - started)
