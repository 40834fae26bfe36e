"""Training stage: schedules, initialisation strategies, clip variants, Cityscapes data, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tempseg.data.synthetic import write_cityscapes_tree
from tempseg.models import build_model
from tempseg.models.checkpoint import save_checkpoint
from tempseg.train.__main__ import main as train_main
from tempseg.train.config import preset_config, recipe
from tempseg.train.init import init_from_checkpoint, load_pretrained_backbone
from tempseg.train.trainer import ClipForward, TrainingRun, lr_factor, supervised
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def test_poly_schedule_with_warmup_and_paper_exponential_decay():
    poly = lr_factor(preset_config("default", "base", model="m", steps=100, warmup_steps=10))
    assert poly(0) == pytest.approx(0.1 * 1.0)  # first warm-up step
    assert poly(9) == pytest.approx((1 - 0.09) ** 0.9)
    assert poly(50) == pytest.approx(0.5**0.9)
    assert poly(100) == 0.0
    exp = lr_factor(preset_config("paper", "base", model="m", steps=100))
    assert exp(0) == 1.0
    assert exp(100) == pytest.approx(0.01)  # paper Table I: decay rate 0.01
    assert exp(50) == pytest.approx(0.1)


def test_pretrained_torchvision_state_dict_fills_the_encoder(tmp_path):
    source = build_model("fcresnet18")
    state = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # torchvision's classifier
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    target = build_model("fcresnet18_t44")  # concat at 4 widens layer4's first block: those keep their init
    loaded = load_pretrained_backbone(target, path)
    assert loaded == len(state) - 2 - 2  # minus fc, minus layer4.0.conv1 and layer4.0.downsample.0 (widened)
    torch.testing.assert_close(target.backbone.layer1[0].conv1.weight, source.backbone.layer1[0].conv1.weight)


def test_init_from_the_non_temporal_model_starts_as_that_model(tmp_path):
    torch.manual_seed(0)
    base = build_model("fcresnet18x0.25").eval()
    with torch.no_grad():  # as if trained: no weight equals its fresh init, BN statistics are non-trivial
        for param in base.parameters():
            param.add_(0.05 * torch.randn_like(param))
        for module in base.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "base.pt", base, "fcresnet18x0.25")
    temporal = build_model("fcresnet18x0.25_t55").eval()  # concat: score_fr takes twice the channels
    init_from_checkpoint(temporal, tmp_path / "base.pt")
    image = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        state = temporal.next_states(torch.randn(1, 3, 64, 128))
        torch.testing.assert_close(temporal(image, *state)[0], base(image)[0])
    fresh = build_model("fcresnet18x0.25_t55")
    init_from_checkpoint(fresh, tmp_path / "base.pt", reinit_after_in=2)  # paper III-E: blocks 6 and 7 fresh
    assert not torch.equal(fresh.upscore_pool4.weight, base.upscore_pool4.weight)
    torch.testing.assert_close(fresh.backbone.layer4[0].conv1.weight, base.backbone.layer4[0].conv1.weight)


@pytest.mark.parametrize(
    "extra", [["--clip-length", "3"], ["--target-offset", "2"]], ids=["unrolled clip of 3", "latency-aware target"]
)
def test_clip_variants_train(tmp_path, extra):
    assert train_main(["--model", TINY, "--preset", "smoke", "--out-dir", str(tmp_path), *extra]) == 0
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["epochs"][-1]["loss"] > 0
    assert record["config"]["clip_length" if "--clip-length" in extra else "target_offset"] == int(extra[1])


def test_training_on_a_cityscapes_tree(tmp_path):
    root = tmp_path / "cityscapes"
    for split in ("train", "val"):
        write_cityscapes_tree(root, split=split, snippets=1, height=64, width=128)
    out = tmp_path / "run"
    argv = ["--model", TINY, "--preset", "smoke", "--data", f"cityscapes:{root}", "--out-dir", str(out)]
    assert train_main(argv) == 0
    last = json.loads((out / "train.json").read_text())["epochs"][-1]
    assert 0.0 <= last["val_miou"] <= 1.0  # scored on the annotated val frames (paper section IV-A)


@pytest.mark.slow
def test_torchrun_trains_with_two_processes_on_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", "-m"]
    cmd += ["tempseg.train", "--model", TINY, "--preset", "smoke", "--out-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["world_size"] == 2  # gloo on CPU
    assert result.stdout.count("stage train") == 1  # rank 0 alone reports and writes
    assert (tmp_path / "checkpoint.pt").is_file()


def _smoke_base(tmp_path: Path, model: str = "fcresnet18x0.25") -> Path:
    out = tmp_path / "base"
    assert train_main(["--model", model, "--preset", "smoke", "--out-dir", str(out)]) == 0
    return out / "checkpoint.pt"


def test_finetune_needs_a_base_and_records_its_recipe(tmp_path, capsys):
    from tempseg.common.errors import run_cli

    argv = ["--model", TINY, "--preset", "smoke", "--stage", "finetune", "--out-dir", str(tmp_path / "t")]
    assert run_cli(train_main, argv) == 2
    assert "--init-from" in capsys.readouterr().err
    base = _smoke_base(tmp_path)
    assert train_main([*argv, "--init-from", str(base)]) == 0
    record = json.loads((tmp_path / "t" / "train.json").read_text())
    assert record["recipe"]["stage"] == "finetune"
    assert record["recipe"]["clip_length"] == 2
    assert record["recipe"]["amp"] in ("bf16", "fp32")  # autocast as resolved on this machine, not "auto"
    base_record = json.loads((tmp_path / "base" / "train.json").read_text())
    assert record["recipe"]["init"]["recipe"] == base_record["recipe"]  # the base's own recipe, carried along
    from tempseg.common.io import sha256_file

    assert record["recipe"]["init"]["sha256"] == sha256_file(base)
    expected = recipe(preset_config("smoke", "finetune"))
    assert {k for k, v in expected.items() if record["recipe"][k] != v} <= {"amp"}


def test_control_and_temporal_model_see_the_same_clips_and_score_the_same_frames(tmp_path):
    """The paired protocol: same base, same batches, loss on frames 1..L-1 for both."""
    base = _smoke_base(tmp_path)
    configs = {m: preset_config("smoke", "finetune", model=m, init_from=str(base)) for m in ("fcresnet18x0.25", TINY)}
    runs = {m: TrainingRun(c) for m, c in configs.items()}
    assert {r.clip_length for r in runs.values()} == {2}
    from tempseg.train.clips import sample_batch

    batches = [
        sample_batch(r.sampler, seed=0, rank=0, step=3, batch_size=2, clip_length=r.clip_length, crop=None)
        for r in runs.values()
    ]
    assert np.array_equal(batches[0].images, batches[1].images)
    assert np.array_equal(batches[0].labels, batches[1].labels)
    clip = torch.from_numpy(batches[0].images)
    for run in runs.values():
        run.initialise()
        logits = ClipForward(run.model.eval())(clip)
        assert logits.shape[1] == 1  # frame 1 only: frame 0 feeds the state
        assert supervised(torch.from_numpy(batches[0].labels)).shape[1] == 1
    with torch.no_grad():  # the temporal model starts as the control (zero weights on the state channels)
        control, temporal = (ClipForward(r.model.eval())(clip) for r in runs.values())
    torch.testing.assert_close(control, temporal)
