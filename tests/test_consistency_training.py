"""ETC's temporal-consistency training (`+tc`, `--tc-loss`): the loss, flows through augmentation, the paired recipe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tempseg.data.augment import augment_clip
from tempseg.data.frames import resize_flow, resize_label
from tempseg.data.synthetic import SyntheticVideo
from tempseg.metrics.consistency import warp_with_flow
from tempseg.models.checkpoint import save_checkpoint
from tempseg.models.registry import UnknownModelError, model_config, random_model, split_name
from tempseg.train.__main__ import main as train_main
from tempseg.train.clips import ClipBatch, sample_batch
from tempseg.train.config import TC_WEIGHT, preset_config, recipe
from tempseg.train.consistency import pairwise_frames, pixel_distillation, temporal_loss, warp_backward
from tempseg.train.trainer import TrainingRun


def _shifted_clip(shift: int, classes: int = 5, size: tuple[int, int] = (24, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [1, 2, C, H, W] whose frame 1 is frame 0 moved `shift` pixels right, and the backward flow."""
    torch.manual_seed(0)
    first = 4 * torch.randn(1, classes, *size)
    second = torch.roll(first, shifts=shift, dims=-1)
    flow = torch.zeros(1, 1, *size, 2)
    flow[..., 0] = -shift  # pixel x of frame 1 showed at x - shift in frame 0
    return torch.stack([first, second], dim=1), flow


def test_the_loss_is_zero_for_predictions_that_follow_the_flow_and_grows_when_they_flicker():
    logits, flow = _shifted_clip(3)
    valid = torch.ones(flow.shape[:-1], dtype=torch.bool)
    valid[..., :3] = False  # where frame 1's pixels came from outside frame 0 (rolled around)
    assert temporal_loss(logits, flow, valid).item() == pytest.approx(0.0, abs=1e-6)
    flicker = logits.clone()
    flicker[:, 1] = 4 * torch.randn_like(flicker[:, 1])
    assert temporal_loss(flicker, flow, valid).item() > 0.1
    # without the flow, the same moving (but consistent) predictions look inconsistent
    assert temporal_loss(logits, torch.zeros_like(flow), valid).item() > 0.1
    # the mask decides: nothing counts where the motion is not trusted
    assert temporal_loss(flicker, flow, torch.zeros_like(valid)).item() == 0.0


def test_the_loss_supervises_the_current_frame_only():
    logits, flow = _shifted_clip(2)
    logits[:, 1] += torch.randn_like(logits[:, 1])
    logits.requires_grad_(True)
    temporal_loss(logits, flow, torch.ones(flow.shape[:-1], dtype=torch.bool)).backward()
    assert logits.grad[:, 0].abs().max().item() == 0.0  # the warped previous prediction is a target
    assert logits.grad[:, 1].abs().max().item() > 0.0


def test_warp_backward_moves_values_by_the_flow():
    values = torch.arange(40.0).reshape(1, 1, 1, 40).repeat(1, 1, 8, 1)
    flow = torch.zeros(1, 8, 40, 2)
    flow[..., 0] = -2.0
    warped = warp_backward(values, flow)
    torch.testing.assert_close(warped[0, 0, 0, 2:], values[0, 0, 0, :-2])


def _label_agreement(labels: list[np.ndarray], flow: np.ndarray, valid: np.ndarray) -> float:
    warped, inside = warp_with_flow(labels[0], flow)
    keep = valid & inside
    return float((warped[keep] == labels[1][keep]).mean())


def test_flows_follow_scaling_cropping_and_flipping():
    """The augmented flow still carries frame t-1's labels onto frame t's, as the exact one does before."""
    video = SyntheticVideo(11, 128, 256, with_flow=True)
    frames = [video.render(t) for t in (8, 9)]
    flow = (frames[1].flow_prev, frames[1].flow_valid)
    labels = [f.label for f in frames]
    assert np.abs(flow[0]).mean() > 1.0  # the scene moves: a zero flow would not pass the checks below
    before = _label_agreement(labels, *flow)
    assert before > 0.95
    small = resize_flow(*flow, 96, 192)
    assert _label_agreement([resize_label(x, 96, 192) for x in labels], *small) > 0.9
    flipped = 0
    for seed in range(6):
        stacked = np.stack(labels, axis=-1)
        _images, out, flows = augment_clip(
            [f.image for f in frames], stacked, np.random.default_rng(seed), crop=(64, 128), colour=False, flows=[flow]
        )
        assert flows[0][0].shape == (64, 128, 2)
        assert flows[0][1].shape == (64, 128)
        assert _label_agreement([out[..., 0], out[..., 1]], *flows[0]) > 0.95
        draws = np.random.default_rng(seed)
        draws.integers(128 - 64 + 1), draws.integers(256 - 128 + 1)  # the crop's draws come first
        flipped += int(draws.random() < 0.5)
    # a flip that kept dx's sign would carry labels the wrong way: the agreement above would drop
    assert 0 < flipped < 6


def test_a_tc_name_is_its_architecture_trained_with_the_consistency_loss():
    assert split_name("fcresnet18+tc") == ("fcresnet18", ("tc",))
    assert model_config("fcresnet18_t66+tc") == model_config("fcresnet18_t66")
    with pytest.raises(UnknownModelError, match=r"\+xy is not a training variant"):
        model_config("fcresnet18+xy")
    assert preset_config("default", "finetune", model="fcresnet18+tc").tc_loss == TC_WEIGHT
    assert preset_config("default", "finetune", model="fcresnet18+tc", tc_loss=0.5).tc_loss == 0.5
    assert preset_config("default", "finetune", model="fcresnet18").tc_loss == 0.0
    old = recipe(preset_config("default", "finetune"))
    del old["tc_loss"]  # a run recorded before the field existed
    assert recipe(old)["tc_loss"] == 0.0


def test_the_tc_model_and_its_control_see_the_same_clips_and_labels(tmp_path):
    base = tmp_path / "base"
    assert train_main(["--model", "fcresnet18x0.25", "--preset", "smoke", "--out-dir", str(base)]) == 0
    init = str(base / "checkpoint.pt")
    control, tc = (
        TrainingRun(preset_config("smoke", "finetune", model=m, init_from=init))
        for m in ("fcresnet18x0.25", "fcresnet18x0.25+tc")
    )
    a, b = (
        sample_batch(r.sampler, seed=0, rank=0, step=1, batch_size=2, clip_length=2, crop=None) for r in (control, tc)
    )
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.labels, b.labels)
    assert a.flows is None
    assert b.flows.shape == (2, 1, 64, 128, 2)
    assert b.flow_valid.mean() > 0.5
    out = tmp_path / "tc"
    argv = ["--model", "fcresnet18x0.25+tc", "--preset", "smoke", "--stage", "finetune", "--init-from", init]
    assert train_main([*argv, "--out-dir", str(out)]) == 0
    record = json.loads((out / "train.json").read_text())
    assert record["recipe"]["tc_loss"] == TC_WEIGHT
    assert record["model"] == "fcresnet18x0.25+tc"


def test_tc_with_the_exact_flow_and_its_paired_delta():
    """Predictions that follow the scene score TC near 1 with the exact flow (DIS says far less on this video),
    and a flickering model's paired ΔTC against them is negative with its interval below 0."""
    from tempseg.data.sources import open_source
    from tempseg.metrics import StreamScores, TemporalConsistency, paired_delta

    with open_source("synthetic", height=64, width=128, frames=24, sequence_length=6, with_flow=True) as source:
        frames = list(source)
    rng = np.random.default_rng(0)
    steady, flicker = StreamScores(19), StreamScores(19)
    metrics = {"steady": TemporalConsistency(19), "flicker": TemporalConsistency(19), "dis": TemporalConsistency(19)}
    for frame in frames:
        noisy = frame.label.copy()
        noisy[rng.random(noisy.shape) < 0.2] = 0  # 20 % of the pixels flip to road, differently every frame
        flow = (frame.flow_prev, frame.flow_valid) if frame.flow_prev is not None else None
        for name, scores, prediction in (("steady", steady, frame.label), ("flicker", flicker, noisy)):
            scores.update(frame.sequence, frame.index, frame.degraded, prediction, frame.label)
            reference = metrics[name].update(frame.image, prediction, frame.sequence, flow)
            if reference is not None:
                scores.update_consistency(frame.sequence, prediction, reference)
        metrics["dis"].update(frame.image, frame.label, frame.sequence)
    assert metrics["steady"].flow == "exact"
    assert metrics["dis"].flow == "dis"
    assert metrics["steady"].value() > 0.95
    assert steady.miou("tc") == pytest.approx(metrics["steady"].value(), abs=1e-4)  # one definition (ETC eq. 8)
    delta = paired_delta(flicker, steady, "tc")
    assert delta.high < 0
    assert delta.delta < -5
    restored = StreamScores.from_arrays(flicker.to_arrays())
    assert paired_delta(restored, steady, "tc") == delta


def test_tc_splits_by_the_frame_scored_clean_or_degraded():
    """A model that jumps only where its frame is damaged loses TC on degraded frames alone; the split's parts
    make up the whole, and survive the arrays compare saves."""
    from tempseg.data.sources import open_source
    from tempseg.metrics import StreamScores, TemporalConsistency, paired_delta

    with open_source("synthetic", height=64, width=128, frames=40, sequence_length=8, with_flow=True) as source:
        frames = list(source)
    assert any(f.degraded for f in frames)
    rng = np.random.default_rng(1)
    steady, jumpy = StreamScores(19), StreamScores(19)
    metrics = {"steady": TemporalConsistency(19), "jumpy": TemporalConsistency(19)}
    for frame in frames:
        noisy = frame.label.copy()
        if frame.degraded is not None:
            noisy[rng.random(noisy.shape) < 0.3] = 0
        flow = (frame.flow_prev, frame.flow_valid) if frame.flow_prev is not None else None
        for name, scores, prediction in (("steady", steady, frame.label), ("jumpy", jumpy, noisy)):
            scores.update(frame.sequence, frame.index, frame.degraded, prediction, frame.label)
            reference = metrics[name].update(frame.image, prediction, frame.sequence, flow)
            if reference is not None:
                degraded = frame.degraded is not None
                scores.update_consistency(frame.sequence, prediction, reference, degraded=degraded)
    assert paired_delta(jumpy, steady, "tc_degraded").high < 0
    # a clean frame right after a degraded one is compared with the damaged prediction: it loses a little too
    assert paired_delta(jumpy, steady, "tc_clean").delta > paired_delta(jumpy, steady, "tc_degraded").delta
    whole = jumpy.counts("tc")
    assert (whole == jumpy.counts("tc_clean") + jumpy.counts("tc_degraded")).all()
    restored = StreamScores.from_arrays(jumpy.to_arrays())
    assert paired_delta(restored, steady, "tc_degraded") == paired_delta(jumpy, steady, "tc_degraded")


def test_distillation_terms_vanish_when_the_student_matches_the_teacher():
    from tempseg.train.consistency import pairwise_frames, pixel_distillation

    torch.manual_seed(0)
    teacher = 3 * torch.randn(2, 2, 5, 32, 64)
    assert pixel_distillation(teacher, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert pairwise_frames(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    student = teacher.clone()
    student[:, 1] = 3 * torch.randn_like(student[:, 1])  # frame 1 no longer relates to frame 0 as the teacher's
    assert pixel_distillation(student, teacher).item() > 0.1
    assert pairwise_frames(student, teacher).item() > 1e-3


def test_kd_needs_a_teacher_and_records_it(tmp_path, capsys):
    from tempseg.common.errors import run_cli
    from tempseg.common.io import sha256_file

    base = tmp_path / "base"
    assert train_main(["--model", "fcresnet18x0.25", "--preset", "smoke", "--out-dir", str(base)]) == 0
    init = str(base / "checkpoint.pt")
    argv = ["--model", "fcresnet18x0.25+tc+kd", "--preset", "smoke", "--stage", "finetune", "--init-from", init]
    assert run_cli(train_main, [*argv, "--out-dir", str(tmp_path / "no-teacher")]) == 2
    assert "--teacher" in capsys.readouterr().err
    out = tmp_path / "kd"
    assert train_main([*argv, "--teacher", init, "--out-dir", str(out)]) == 0
    record = json.loads((out / "train.json").read_text())["recipe"]
    assert record["kd_loss"] == TC_WEIGHT
    assert record["tc_loss"] == TC_WEIGHT
    assert record["teacher"] == {"model": "fcresnet18x0.25", "sha256": sha256_file(init)}


# ---- each term's share of the training loss ---------------------------------------------------------------

# The loss of one batch is about 3 in float32 (rounding ~2e-7); a term weighed in it must come out this close.
LOSS_TOLERANCE = 1e-5


def _loss_with(run: TrainingRun, **weights: float) -> float:
    """The loss of step 0's batch, the same model and data, with the config's loss weights set to `weights`."""
    run.config = replace(run.config, **weights)
    return run.loss(0).item()


def _batch_and_logits(run: TrainingRun) -> tuple[ClipBatch, torch.Tensor, torch.Tensor]:
    """Step 0's batch, its images and the logits of every frame, as the run's loss sees them (training mode)."""
    batch = run.batch(0)
    images = torch.from_numpy(batch.images)
    with torch.no_grad():
        return batch, images, run.forward(images)


def test_the_tc_term_adds_its_weight_times_the_temporal_loss():
    run = TrainingRun(preset_config("smoke", "base", model="fcresnet18x0.25+tc", amp="fp32"))
    # A random model's predictions barely flicker (term ~6e-5): a weight far above the recipe's 0.1 lifts
    # the term well above the loss's float32 rounding.
    weight = 50.0
    difference = _loss_with(run, tc_loss=weight) - _loss_with(run, tc_loss=0.0)
    batch, _, logits = _batch_and_logits(run)
    assert batch.flows is not None
    assert batch.flow_valid is not None
    term = temporal_loss(logits, torch.from_numpy(batch.flows), torch.from_numpy(batch.flow_valid)).item()
    assert weight * term > 100 * LOSS_TOLERANCE
    assert difference == pytest.approx(weight * term, abs=LOSS_TOLERANCE)


def test_the_kd_term_adds_its_weight_times_both_distillation_terms(tmp_path: Path):
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, random_model("fcresnet18x0.25"), "fcresnet18x0.25")
    config = preset_config("smoke", "base", model="fcresnet18x0.25+kd", amp="fp32", teacher=str(teacher))
    run = TrainingRun(config)
    weight = 1.0
    difference = _loss_with(run, kd_loss=weight) - _loss_with(run, kd_loss=0.0)
    _, images, logits = _batch_and_logits(run)
    assert run.teacher is not None
    with torch.no_grad():
        target = run.teacher(images)
    pixel, pairwise = pixel_distillation(logits, target).item(), pairwise_frames(logits, target).item()
    assert min(pixel, pairwise) * weight > 10 * LOSS_TOLERANCE  # leaving out either would show
    assert difference == pytest.approx(weight * (pixel + pairwise), abs=LOSS_TOLERANCE)
