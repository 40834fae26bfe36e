"""Training under torchrun: two CPU processes (gloo) train one model on twice the clips of one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs torch")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
# Written into tmp_path and run as a script (by torchrun, or alone): the trainer's own process setup,
# a few steps of the smoke preset, then every rank saves its model's state_dict to weights.<world>.<rank>.pt.
DRIVER = """
import sys
from pathlib import Path

import torch

from tempseg.train.config import preset_config
from tempseg.train.trainer import TrainingRun, _setup_process

out, steps = Path(sys.argv[1]), int(sys.argv[2])
config = preset_config("smoke", "base", model="fcresnet18x0.25", device="cpu")
rank, world, device = _setup_process(config.device)
run = TrainingRun(config, rank=rank, world=world, device=device)
for step in range(steps):
    run.step(step)
torch.save(run.model.state_dict(), out / f"weights.{world}.{rank}.pt")
if world > 1:
    torch.distributed.destroy_process_group()
"""


def _train(tmp_path: Path, *launcher: str) -> None:
    """Run the driver under `launcher` (python arguments before the script); it writes into tmp_path."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))  # one thread per process: 2 cores, 2 ranks
    command = [sys.executable, *launcher, str(driver), str(tmp_path), str(STEPS)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    """The trained weights of a saved state_dict (BatchNorm running statistics are per rank: left out)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_ranks_train_one_model_on_all_their_clips(tmp_path):
    _train(tmp_path, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    _train(tmp_path)  # one process alone: rank 0's clips only, half of what the two ranks saw
    rank0, rank1 = _parameters(tmp_path / "weights.2.0.pt"), _parameters(tmp_path / "weights.2.1.pt")
    alone = _parameters(tmp_path / "weights.1.0.pt")
    assert rank0.keys() == rank1.keys() == alone.keys()
    # DDP averages the gradients of both ranks every step: the two copies of the model stay identical
    unequal = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not unequal, f"ranks differ in {unequal[:5]}"
    # and those gradients include rank 1's clips: the weights are not those of rank 0's clips alone
    assert any(not torch.allclose(rank0[k], alone[k]) for k in rank0)
