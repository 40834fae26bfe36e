"""The keyframe family (Accel, models/accel.py): warping, the schedule, two graphs under one contract.

A small pair (`fcresnet18x0.25_accel18x0.25`: update and reference both fcresnet18 at width 0.25) is exported
once per session at 64x128, so the checks of the pair run on real graphs in seconds.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tempseg.common.contract import read_onnx_contract, set_metadata
from tempseg.common.errors import UserError, run_cli
from tempseg.data.flow import GridFlow
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.models import model_config
from tempseg.models.accel import Accel, warp
from tempseg.models.registry import UnknownModelError, base_model, random_model
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.policy import StatePolicy
from tempseg.runtime.schedule import KeyframeSchedule
from tempseg.runtime.stream import compare_runners, stream

PAIR = "fcresnet18x0.25_accel18x0.25"
HW = (64, 128)
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def _frames(count: int, sequence: str = "s", seed: int = 0) -> list[Frame]:
    video = SyntheticVideo(split_seed("val", seed), *HW, length=count)
    return [Frame(image=f.image, label=None, index=i, sequence=sequence) for i, f in enumerate(video)]


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory) -> Path:
    """runs/PAIR: checkpoint.pt and the exported pair (model*.onnx, keyframe*.onnx) of a random model."""
    from tempseg.export.__main__ import main as export_main
    from tempseg.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("runs") / PAIR
    save_checkpoint(run / "checkpoint.pt", random_model(PAIR), PAIR)
    argv = ["--model", PAIR, "--checkpoint", str(run / "checkpoint.pt"), "--height", str(HW[0])]
    assert export_main([*argv, "--width", str(HW[1]), "--parity-frames", "8", "--keyframe-every", "3"]) == 0
    return run


# ---- the model ---------------------------------------------------------------------------------------


def test_names_parse_and_the_base_is_the_update_network():
    config = model_config("fcresnet18x0.5_accel34_flownet")
    assert (config.depth, config.width, config.accel.depth, config.accel.flow) == (18, 0.5, 34, "net")
    assert base_model("fcresnet18x0.5_accel34") == "fcresnet18x0.5"
    with pytest.raises(UnknownModelError, match="reference depth 20"):
        model_config("fcresnet18_accel20")


def test_warp_moves_features_by_a_known_shift():
    features = torch.randn(1, 4, 8, 16)
    flow = torch.zeros(1, 2, 8, 16)
    flow[:, 0], flow[:, 1] = 2.0, 1.0  # backward: out(y, x) = in(y + 1, x + 2)
    out = warp(features, flow)
    torch.testing.assert_close(out[..., :7, :14], features[..., 1:, 2:])
    flow[:, 0], flow[:, 1] = 0.5, 0.0  # half a pixel: the mean of the two neighbours
    out = warp(features, flow)
    torch.testing.assert_close(out[..., :15], (features[..., :15] + features[..., 1:]) / 2)
    torch.testing.assert_close(warp(features, torch.zeros_like(flow)), features)


def test_grid_flow_measures_a_known_image_shift():
    """DIS on the host, as the runtime and training compute it (half size, FAST): a 256x512 frame shifted 16 px
    right reads -2 grid pixels (backward flow: each pixel came from 16 px to its left)."""
    image = next(iter(SyntheticVideo(split_seed("val", 0), 256, 512, length=1))).image
    grid = GridFlow((32, 64))
    flow = grid(grid.grey(np.roll(image, 16, axis=1)), grid.grey(image))
    centre = flow[:, 4:-4, 8:-8]  # away from the wrapped border
    assert np.mean(np.abs(centre[0] + 2.0) < 0.25) > 0.95
    assert np.mean(np.abs(centre[1]) < 0.25) > 0.95


@pytest.mark.parametrize("name", [PAIR, PAIR + "_flownet"])
def test_streamed_frames_equal_the_clip_computation(name):
    """What training computes for a labelled frame d frames after its keyframe equals streaming the frames."""
    model = random_model(name).eval()
    frames = torch.randn(1, 5, 3, *HW)
    flows = torch.randn(1, 4, 2, HW[0] // 8, HW[1] // 8) if model.takes_flow else None
    with torch.no_grad():
        for offset in (0, 1, 3):
            key = 4 - offset
            logits, *states = model.keyframe(frames[:, key])
            for t in range(key + 1, 5):
                logits, *states = model(frames[:, t], *states, flow=None if flows is None else flows[:, t - 1])
            torch.testing.assert_close(model.clip_logits(frames, flows, offset), logits)


def test_fusion_starts_as_the_mean_of_the_two_score_maps():
    model = Accel(model_config(PAIR)).eval()
    a, b = torch.randn(1, 19, 4, 4), torch.randn(1, 19, 4, 4)
    torch.testing.assert_close(model.fuse(a, b), (a + b) / 2)


# ---- the schedule -----------------------------------------------------------------------------------------


def test_schedule_runs_keyframes_every_n_and_after_a_reset():
    schedule = KeyframeSchedule(3)
    kinds = []
    for t in range(8):
        if t == 5:
            schedule.force()
        kinds.append(schedule.next_kind())
        schedule.ran(kinds[-1])
    assert kinds == ["keyframe", "update", "update", "keyframe", "update", "keyframe", "update", "update"]
    assert [KeyframeSchedule(1).next_kind()] == ["keyframe"]
    for bad in (0, -2):
        with pytest.raises(UserError, match="below 1"):
            KeyframeSchedule(bad)


def test_the_runner_runs_the_graph_the_schedule_names_and_a_new_sequence_forces_a_keyframe(pair_run):
    contract = read_onnx_contract(pair_run / "model.onnx")
    frames = _frames(5, "a") + _frames(4, "b", seed=1)
    with OnnxRuntimeRunner(contract, pair_run / "model.onnx") as runner:
        steps = list(stream(runner, frames))
    kinds = [s.kind for s in steps]
    first, second = ["keyframe", "update", "update", "keyframe", "update"], ["keyframe", "update", "update", "keyframe"]
    assert kinds == [*first, *second]
    assert all(s.flow_ms > 0 for s in steps)  # every frame's grey image is kept for the next flow
    assert [s.reset for s in steps].count("sequence") == 1


# ---- the exported pair --------------------------------------------------------------------------------------


def test_export_writes_both_graphs_under_one_contract(pair_run):
    update, keyframe = (read_onnx_contract(pair_run / n) for n in ("model.onnx", "keyframe.onnx"))
    assert (update.role, keyframe.role) == ("update", "keyframe")
    assert update.schedule["keyframe_graph"] == "keyframe.onnx"
    assert update.schedule["keyframe_every"] == 3
    assert update.flow.shape == (1, 2, 8, 16)
    assert update.schedule["flow"]["direction"].startswith("backward")
    assert read_onnx_contract(pair_run / "model.fp16.onnx").schedule["keyframe_graph"] == "keyframe.fp16.onnx"
    inputs = [i.name for i in onnx.load(pair_run / "keyframe.onnx", load_external_data=False).graph.input]
    assert inputs == ["image"]
    ops = {n.op_type for n in onnx.load(pair_run / "model.onnx", load_external_data=False).graph.node}
    assert "GridSample" in ops
    parity = json.loads((pair_run / "export.json").read_text())["parity"]
    assert parity["fp32"]["max_abs_logit_error"] < 1e-4
    assert parity["fp32"]["min_label_agreement"] > 0.999


def test_onnxruntime_pair_matches_torch_frame_by_frame(pair_run):
    from tempseg.models.checkpoint import load_model

    model, _ = load_model(pair_run / "checkpoint.pt")
    contract = read_onnx_contract(pair_run / "model.onnx")
    runners = {
        "torch": TorchRunner(contract, model=model, device="cpu"),
        "ort": OnnxRuntimeRunner(contract, pair_run / "model.onnx"),
    }
    for runner in runners.values():
        runner.__enter__()
    try:
        steps = list(compare_runners(runners, _frames(7), StatePolicy()))
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    assert [s["ort"].kind for s in steps] == [s["torch"].kind for s in steps]
    for s in steps:
        assert (s["ort"].labels == s["torch"].labels).mean() > 0.999


def test_runtime_keyframe_every_and_the_report_split_by_frame_kind(pair_run, tmp_path):
    from tempseg.runtime.__main__ import main as runtime_main

    report_path = tmp_path / "report.json"
    argv = ["--model-dir", str(pair_run), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "12"]
    argv += ["--warmup", "2", "--quiet", "--no-tc", "--keyframe-every", "4", "--report", str(report_path)]
    assert runtime_main(argv) == 0
    report = json.loads(report_path.read_text())
    kinds = report["latency_by_kind_ms"]
    assert report["keyframe_every"] == 4
    # frames 2..11 after the warm-up: keyframes at 4 and 8
    assert (kinds["keyframe"]["frames"], kinds["update"]["frames"]) == (2, 8)
    assert kinds["update"]["flow"]["mean"] > 0
    assert report["worst_frame"]["kind"] in ("keyframe", "update")
    assert report["memory"]["io_bytes"] >= 2 * 8 * 16 * 4  # the flow buffer is counted


# ---- bad input ------------------------------------------------------------------------------------------


def test_a_keyframe_interval_below_one_is_refused(pair_run, capsys):
    from tempseg.runtime.__main__ import main as runtime_main

    argv = ["--model-dir", str(pair_run), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "2"]
    assert run_cli(runtime_main, [*argv, "--keyframe-every", "0"]) == 2
    assert "keyframe interval 0 is below 1" in capsys.readouterr().err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_int8_calibration_of_either_graph_of_a_pair_is_refused_writing_nothing(pair_run, tmp_path, capsys):
    """Calibrating a pair is not written: one line naming the graph, exit 2, before any file is touched."""
    from tempseg.calibration.__main__ import main as calibration_main

    for name in ("model.onnx", "keyframe.onnx"):
        (tmp_path / name).write_bytes((pair_run / name).read_bytes())
    (tmp_path / "model.int8.onnx").write_bytes(b"an earlier INT8 graph")
    (tmp_path / "calib.json").write_text("{}")
    before = _files(tmp_path)
    for name in ("model.onnx", "keyframe.onnx"):
        graph = tmp_path / name
        assert run_cli(calibration_main, ["--onnx", str(graph), "--frames", "4", "--eval-sequences", "0"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        assert str(graph) in lines[0]
        assert "INT8 calibration of a keyframe pair" in lines[0]
    assert _files(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no calib_cache/ either


def test_a_keyframe_graph_that_disagrees_is_refused_naming_it(pair_run, tmp_path, capsys):
    """Both the runtime and the engine build refuse the pair before running or writing anything."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.onnx", "keyframe.onnx"):
        (bad / name).write_bytes((pair_run / name).read_bytes())
    other = onnx.load(bad / "keyframe.onnx")
    contract = read_onnx_contract(bad / "keyframe.onnx")
    set_metadata(other, contract.with_changes(num_classes=7))
    onnx.save(other, bad / "keyframe.onnx")
    update = read_onnx_contract(bad / "model.onnx")
    runner = OnnxRuntimeRunner(update, bad / "model.onnx")
    with pytest.raises(UserError, match="disagrees with the update graph on classes") as err:
        runner.activate()
    assert "keyframe.onnx" in str(err.value)
    from tempseg.engine.__main__ import main as engine_main

    assert run_cli(engine_main, ["--onnx", str(bad / "model.onnx"), "--out", str(bad / "fp32.engine")]) == 2
    assert "keyframe.onnx" in capsys.readouterr().err
    assert not list(bad.glob("*.engine*"))


def test_a_flow_input_of_the_wrong_size_is_refused(pair_run, tmp_path):
    graph = onnx.load(pair_run / "model.onnx")
    contract = read_onnx_contract(pair_run / "model.onnx")
    flow = next(i for i in graph.graph.input if i.name == "flow")
    flow.type.tensor_type.shape.dim[3].dim_value = 8
    set_metadata(graph, contract.with_changes(flow=contract.flow.__class__("flow", (1, 2, 8, 8), "float32")))
    path = tmp_path / "model.onnx"
    onnx.save(graph, path)
    with pytest.raises(UserError, match=r"flow input is \[1, 2, 8, 8\], not \[1, 2, 8, 16\]"):
        read_onnx_contract(path)


@pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX (pip extra `rtx`) builds engines without a GPU")
def test_both_graphs_build_with_tensorrt_rtx(pair_run, tmp_path):
    from tempseg.engine.__main__ import main as engine_main
    from tempseg.engine.sidecar import read_sidecar

    folder = tmp_path / "engines"
    folder.mkdir()
    for name in ("model.fp16.onnx", "keyframe.fp16.onnx"):
        (folder / name).write_bytes((pair_run / name).read_bytes())
    out = folder / "fp16.engine"
    assert engine_main(["--onnx", str(folder / "model.fp16.onnx"), "--out", str(out), "--no-timing-cache"]) == 0
    assert out.is_file()
    assert (folder / "keyframe.fp16.engine").is_file()
    record = read_sidecar(out)
    assert record["contract"]["schedule"]["keyframe_graph"] == "keyframe.fp16.engine"
    assert read_sidecar(folder / "keyframe.fp16.engine")["contract"]["role"] == "keyframe"


# ---- training ---------------------------------------------------------------------------------------------


def test_training_starts_from_both_bases_and_records_the_reference(tmp_path, capsys):
    """The update network from its base, the reference from its own (here one smoke base serves both), the
    fusion as the mean; a fine-tune without --reference-from is refused; the flow net's variant trains too."""
    from tempseg.common.io import sha256_file
    from tempseg.models.checkpoint import read_checkpoint
    from tempseg.train.__main__ import main as train_main
    from tempseg.train.config import preset_config
    from tempseg.train.trainer import TrainingRun

    base = tmp_path / "base"
    assert train_main(["--model", "fcresnet18x0.25", "--preset", "smoke", "--out-dir", str(base)]) == 0
    weights = read_checkpoint(base / "checkpoint.pt")["state_dict"]
    config = preset_config("smoke", "finetune", model=PAIR, init_from=str(base / "checkpoint.pt"))
    run = TrainingRun(config.with_overrides(reference_from=str(base / "checkpoint.pt")))
    run.initialise()
    for branch in (run.model.update, run.model.reference):
        for name, tensor in branch.state_dict().items():
            torch.testing.assert_close(tensor, weights[name])
    assert run.clip_length == 5  # the keyframe up to 4 frames before the labelled one
    argv = ["--model", PAIR + "_flownet", "--preset", "smoke", "--stage", "finetune"]
    argv += ["--init-from", str(base / "checkpoint.pt"), "--out-dir", str(tmp_path / "accel")]
    assert run_cli(train_main, argv) == 2
    assert "--reference-from" in capsys.readouterr().err
    assert train_main([*argv, "--reference-from", str(base / "checkpoint.pt")]) == 0
    record = json.loads((tmp_path / "accel" / "train.json").read_text())
    assert record["recipe"]["reference"]["sha256"] == sha256_file(base / "checkpoint.pt")
    assert record["recipe"]["keyframe_interval"] == 5


def _step_images(run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [B, L, 3, H, W], exact flows and their validity of step 0's batch of `run` (a TrainingRun)."""

    batch = run.batch(0)
    assert batch.flows is not None
    assert batch.flow_valid is not None
    return torch.from_numpy(batch.images), torch.from_numpy(batch.flows), torch.from_numpy(batch.flow_valid)


def test_the_flow_net_term_adds_its_weight_times_the_end_point_error(monkeypatch):
    import tempseg.train.trainer as trainer
    from tempseg.train.accel import FLOW_EPE_WEIGHT, flow_epe
    from tempseg.train.config import preset_config

    run = trainer.TrainingRun(preset_config("smoke", "base", model=PAIR + "_flownet", amp="fp32"))
    with_term = run.loss(0).item()
    monkeypatch.setattr(trainer, "FLOW_EPE_WEIGHT", 0.0)
    difference = with_term - run.loss(0).item()
    assert isinstance(run.model, Accel)
    with torch.no_grad():
        term = flow_epe(run.model, *_step_images(run)).item()
    assert FLOW_EPE_WEIGHT * term > 1e-3  # a zero flow against the generator's motion
    assert difference == pytest.approx(FLOW_EPE_WEIGHT * term, abs=1e-5)  # the loss's float32 rounding


@pytest.mark.parametrize("name", [PAIR, PAIR + "_flownet"])
def test_the_module_warmup_trains_the_fusion_and_flow_net_alone(name, tmp_path):
    """During the warm-up every other parameter and BatchNorm statistic stays bit-identical; after it the
    networks train too."""
    from tempseg.models.checkpoint import save_checkpoint
    from tempseg.train.config import preset_config
    from tempseg.train.trainer import TrainingRun

    base = tmp_path / "base.pt"  # one random base serves as both the update network's and the reference's
    save_checkpoint(base, random_model("fcresnet18x0.25"), "fcresnet18x0.25")
    paths = {"init_from": str(base), "reference_from": str(base)}
    config = preset_config("smoke", "finetune", model=name, amp="fp32", module_warmup=0.5, **paths)
    run = TrainingRun(config)
    run.initialise()
    assert run.module_warmup_steps == 1
    module = {id(p) for p in run.model.module_parameters()}
    trained = {key for key, p in run.model.named_parameters() if id(p) in module}
    flow_net = {f"flow_net.layers.{i}.{kind}" for i in (0, 2, 4, 6, 8) for kind in ("weight", "bias")}
    assert trained == {"fusion.weight", "fusion.bias", *(flow_net if name.endswith("_flownet") else ())}

    def changed_by(step: int) -> set[str]:
        before = {key: value.clone() for key, value in run.model.state_dict().items()}
        run.step(step)
        return {key for key, value in run.model.state_dict().items() if not torch.equal(before[key], value)}

    warmed = changed_by(0)
    assert warmed <= trained
    assert {"fusion.weight", "fusion.bias"} <= warmed
    if name.endswith("_flownet"):  # it starts at zero flow: its last layer moves first
        assert {"flow_net.layers.8.weight", "flow_net.layers.8.bias"} <= warmed
    parameters = {key for key, _ in run.model.named_parameters()}
    assert (changed_by(1) & parameters) - trained  # the warm-up is over (BatchNorm statistics move either way)
