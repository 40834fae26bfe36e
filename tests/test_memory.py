"""Local memory attention (LMANet, models/memory.py): the memory is the state, read with local attention.

The correlation and the weighted sum are checked against plain loops over every position; the memory
against its contract: empty slots get no weight, each frame shifts it by one, streaming equals the clip.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import run_cli
from tempseg.models import build_model, model_config, random_model
from tempseg.models.memory import CORRELATIONS, aggregate, displacements, local_correlation
from tempseg.models.registry import UnknownModelError

MODEL = "fcresnet18x0.25_lma2r1"  # 64x128 frames: a 4x8 memory at stride 16
HW = (64, 128)
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def trained_like(name: str, seed: int = 0):
    """random_model with a memory module that is not at its identity start, so every read reaches the labels."""
    model = random_model(name, seed=seed)
    with torch.no_grad():
        for param in model.memory.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def loop_correlation(query: torch.Tensor, keys: torch.Tensor, radius: int) -> torch.Tensor:
    n, d, h, w = query.shape
    s = keys.shape[1] // d
    out = torch.zeros(n, s, (2 * radius + 1) ** 2, h, w)
    for slot in range(s):
        for k, (dy, dx) in enumerate(displacements(radius)):
            for i in range(h):
                for j in range(w):
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        memory = keys[:, slot * d : (slot + 1) * d, i + dy, j + dx]
                        out[:, slot, k, i, j] = (memory * query[:, :, i, j]).sum(1)
    return out


@pytest.mark.parametrize("form", CORRELATIONS)
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_local_correlation_is_the_loop_over_every_position_and_offset(form, radius):
    torch.manual_seed(radius)
    query, keys = torch.randn(2, 4, 5, 6), torch.randn(2, 3 * 4, 5, 6)
    got = local_correlation(query, keys, radius, form=form)
    torch.testing.assert_close(got, loop_correlation(query, keys, radius), atol=1e-5, rtol=1e-5)


def test_aggregate_is_the_weighted_sum_over_slots_and_window():
    torch.manual_seed(0)
    radius, s, c, h, w = 1, 2, 3, 4, 5
    weights, values = torch.rand(1, s, 9, h, w), torch.randn(1, s * c, h, w)
    want = torch.zeros(1, c, h, w)
    for slot in range(s):
        for k, (dy, dx) in enumerate(displacements(radius)):
            for i in range(h):
                for j in range(w):
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        value = values[0, slot * c : (slot + 1) * c, i + dy, j + dx]
                        want[0, :, i, j] += weights[0, slot, k, i, j] * value
    torch.testing.assert_close(aggregate(weights, values, radius), want, atol=1e-5, rtol=1e-5)


def test_attention_weights_are_zero_on_empty_slots_and_outside_the_map():
    model = trained_like(MODEL)
    image = torch.randn(1, 3, *HW)
    with torch.no_grad():
        feature = _feature(model, image)
        keys, _values = model.next_states(image, *model.initial_states(image))  # slot 0 filled, slot 1 empty
        logits, valid = model.memory.logits(model.memory.key_query(feature), keys)
    weights = logits.flatten(1, 2).softmax(1).unflatten(1, logits.shape[1:3]) * valid
    assert weights[:, 1].max() < 1e-30  # the empty slot
    corner = displacements(1).index((-1, -1))
    assert weights[0, 0, corner, 0, :].max() < 1e-30  # offsets above the top row read nothing
    torch.testing.assert_close(weights.sum((1, 2)), torch.ones(1, 4, 8))


def test_empty_memory_reads_zeros_and_garbage_in_empty_slots_changes_nothing():
    model = trained_like(MODEL)
    image = torch.randn(1, 3, *HW)
    with torch.no_grad():
        feature = _feature(model, image)
        keys, values = model.initial_states(image)
        assert model.memory.read(feature, keys, values).abs().max() == 0
        garbage_keys, garbage_values = torch.randn_like(keys), torch.randn_like(values)
        slots = garbage_keys.unflatten(1, (2, -1))
        slots[:, :, -1] = 0  # validity planes say empty: what the channels hold must not matter
        ref = model(image, keys, values)[0]
        got = model(image, slots.flatten(1, 2), garbage_values)[0]
    torch.testing.assert_close(got, ref)


def test_first_frames_after_a_reset_behave_as_a_shorter_memory():
    """S=3 with one frame in memory is exactly S=1 with the same weights (not 1 frame + 2 frames of zeros)."""
    long, short = trained_like("fcresnet18x0.25_lma3r1"), build_model("fcresnet18x0.25_lma1r1").eval()
    short.load_state_dict(long.state_dict())
    frames = torch.randn(2, 1, 3, *HW)
    with torch.no_grad():
        outputs = []
        for model in (long, short):
            states = model.initial_states(frames[0])
            _, *states = model(frames[0], *states)
            outputs.append(model(frames[1], *states)[0])
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


def test_each_frame_writes_slot_zero_and_shifts_the_memory_by_one():
    model = trained_like("fcresnet18x0.25_lma3r1")
    frames = torch.randn(4, 1, 3, *HW)
    d, c = model.memory.key_dim + 1, model.memory.value_dim
    with torch.no_grad():
        states = model.initial_states(frames[0])
        pairs = []
        for frame in frames:
            pairs.append(model.memory.memory_pair(_feature(model, frame)))
            _, *states = model(frame, *states)
    keys, values = states
    for slot, (pair_keys, pair_values) in enumerate(reversed(pairs[1:])):  # frames 3, 2, 1; frame 0 dropped
        torch.testing.assert_close(keys[:, slot * d : (slot + 1) * d], pair_keys)
        torch.testing.assert_close(values[:, slot * c : (slot + 1) * c], pair_values)
    assert (keys.unflatten(1, (3, d))[:, :, -1] == 1).all()  # every slot now filled


@pytest.mark.parametrize("length", [1, 2, 5])
def test_streaming_frame_by_frame_equals_the_clip_computation(length):
    model = trained_like("fcresnet18x0.25_lma3r1")
    clip = torch.randn(1, length + 1, 3, *HW)
    with torch.no_grad():
        states = model.initial_states(clip[:, 0])
        for t in range(length):
            _, *states = model(clip[:, t], *states)
        streamed = model(clip[:, -1], *states)[0]
        batched = model(clip[:, -1], *model.clip_states(clip[:, :-1]))[0]
    torch.testing.assert_close(batched, streamed, atol=1e-5, rtol=1e-5)


def test_memory_starts_as_its_single_frame_base():
    """The identity start: a fresh memory model with its base's weights predicts the base's labels."""
    base = random_model("fcresnet18x0.25")
    model = build_model("fcresnet18x0.25_lma2r1").eval()
    model.load_state_dict(base.state_dict(), strict=False)
    image = torch.randn(1, 3, *HW)
    with torch.no_grad():
        states = model.initial_states(image)
        _, *states = model(image, *states)
        agree = (model(image, *states)[0].argmax(1) == base(image)[0].argmax(1)).float().mean()
    assert agree > 0.98


def _feature(model, image: torch.Tensor) -> torch.Tensor:
    return model.encode(image, model.config.memory.position)


# ---- names, shapes and bad input --------------------------------------------------------------------


def test_names_parse_into_the_memory_they_mean():
    memory = model_config("fcresnet34x0.5_lma4r2p5").memory
    assert (memory.frames, memory.radius, memory.position) == (4, 2, 5)
    assert model_config("fcresnet18_lma3r4").memory.position == 4  # stride 16 by default


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fcresnet18_lma0r4", "memory frames S=0 is outside 1..8"),
        ("fcresnet18_lma3r4p2", "memory position 2 is not an encoder output (valid: 3, 4, 5)"),
        ("fcresnet18_lma3r4p4", "write it fcresnet18_lma3r4"),
        ("fcresnet18_t66_lma3r4", "not of the form"),
    ],
)
def test_bad_memory_names_say_the_value_and_the_valid_range(name, message):
    with pytest.raises(UnknownModelError) as err:
        model_config(name)
    assert message in str(err.value)


def test_state_shapes_are_keys_with_validity_and_values_at_the_module_stride():
    model = build_model("fcresnet18_lma3r4")
    assert model.state_shapes(256, 512) == [(1, 3 * (32 + 1), 16, 32), (1, 3 * 256, 16, 32)]
    p5 = build_model("fcresnet18_lma3r2p5")
    assert p5.state_shapes(256, 512) == [(1, 3 * (64 + 1), 8, 16), (1, 3 * 512, 8, 16)]


def test_a_radius_beyond_the_feature_map_is_refused_with_the_valid_range():
    with pytest.raises(ValueError, match=r"radius r=4 exceeds the 2x4 feature map at stride 32 .* \(valid: 0\.\.1\)"):
        build_model("fcresnet18_lma3r4p5").state_shapes(64, 128)


def test_a_memory_state_of_the_wrong_length_is_refused_with_the_valid_one():
    model = build_model(MODEL).eval()
    image = torch.zeros(1, 3, *HW)
    keys, values = model.initial_states(image)
    with pytest.raises(ValueError, match=r"memory keys state has 9 channels, not S x 9 = 18 \(S=2 frames of 9\)"):
        model(image, keys[:, :9], values)


def test_export_cli_refuses_a_radius_beyond_the_map_with_exit_2(tmp_path, capsys):
    from tempseg.export.__main__ import main

    argv = ["--model", "fcresnet18_lma3r4p5", "--checkpoint", str(tmp_path / "c.pt"), "--height", "64"]
    assert run_cli(main, [*argv, "--width", "128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "radius r=4 exceeds the 2x4 feature map" in err[0]
    assert "valid: 0..1" in err[0]
    assert not list(tmp_path.iterdir())


def test_train_cli_refuses_memory_frames_zero_with_exit_2(tmp_path, capsys):
    from tempseg.train.__main__ import main

    code = run_cli(main, ["--model", "fcresnet18_lma0r4", "--preset", "smoke", "--out-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "S=0 is outside 1..8" in err[0]
    assert not (tmp_path / "r").exists()


# ---- training: S+1 frames, loss on the last, module warm-up ----------------------------------------


def test_training_warms_up_the_module_alone_then_trains_everything(tmp_path):
    from tempseg.train.config import preset_config
    from tempseg.train.trainer import ClipForward, TrainingRun

    base = tmp_path / "base.pt"
    from tempseg.models.checkpoint import save_checkpoint

    save_checkpoint(base, random_model("fcresnet18x0.25"), "fcresnet18x0.25")
    config = preset_config(
        "smoke", "finetune", model="fcresnet18x0.25_lma2r1", init_from=str(base), steps=4, module_warmup=0.5
    )
    run = TrainingRun(config)
    run.initialise()
    assert run.clip_length == 3
    assert run.module_warmup_steps == 2
    module = {id(p) for p in run.model.module_parameters()}
    encoder = run.model.backbone.layer1[0].conv1.weight
    stats = run.model.backbone.bn1.running_mean.clone()
    before = encoder.detach().clone()
    memory = run.model.memory.key_memory.weight.detach().clone()
    run.step(0)
    assert torch.equal(encoder, before)
    assert torch.equal(run.model.backbone.bn1.running_mean, stats)
    assert not torch.equal(run.model.memory.key_memory.weight, memory)
    assert id(encoder) not in module
    run.step(2)  # past the warm-up: the base trains too
    assert not torch.equal(encoder, before)
    clip = torch.randn(2, 3, 3, *HW)
    assert ClipForward(run.model.eval())(clip).shape[:2] == (2, 1)  # one supervised frame: the last


# ---- export, INT8 and TensorRT-RTX ------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The memory model exported (fp32, fp16) with its 30-frame streaming parity, and calibrated to INT8."""
    from tempseg.calibration import CalibConfig, calibrate
    from tempseg.data.synthetic import SyntheticVideo, split_seed
    from tempseg.export.onnx_graph import build_contract
    from tempseg.export.pipeline import check_parity, export_graphs, save_graphs

    model = trained_like(MODEL)
    contract = build_contract(model, MODEL, height=HW[0], width=HW[1], checkpoint_sha256=None)
    graphs = export_graphs(model, contract)
    frames = [f.image for f in SyntheticVideo(split_seed("val", 0), *HW, length=30)]
    parity = check_parity(model, graphs, frames)
    run = tmp_path_factory.mktemp("lma")
    paths = save_graphs(graphs, run)
    config = CalibConfig(frames=8, sequence_length=8, chunk_frames=8, eval_sequences=0, use_cache=False)
    report = calibrate(paths["fp32"], run / "model.int8.onnx", config)
    return run, parity, report


def test_exported_memory_streams_within_parity_over_30_frames(exported):
    _, parity, _ = exported
    assert parity["fp32"]["frames"] == 30
    assert parity["fp32"]["max_abs_logit_error"] <= 1e-4
    assert parity["fp16"]["mean_label_agreement"] > 0.99


def test_int8_keeps_the_memory_read_in_float_and_quantizes_its_convolutions(exported):
    import onnx

    run, _, report = exported
    graph = onnx.load(str(run / "model.int8.onnx"))
    assert "memory-read" in report["quantization"]["keep_float"]
    floats = set(report["quantization"]["float_nodes"])
    softmax = [n.name for n in graph.graph.node if n.op_type == "Softmax"]
    assert softmax
    assert set(softmax) <= floats
    dequantized = {o: n for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    constants = {i.name for i in graph.graph.initializer}
    for node in graph.graph.node:
        if node.name in floats:  # no quantized constant (TensorRT refuses the mask's) and a float softmax
            assert not [i for i in node.input if i in dequantized and dequantized[i].input[0] in constants]
            assert node.op_type != "Softmax" or node.input[0] not in dequantized
    quantized_inputs = set(dequantized)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert all(n.input[1] in quantized_inputs for n in convs)  # every weight, the memory's convs included
    contract = read_onnx_contract(run / "model.int8.onnx")
    assert contract.extra["memory"] == {"frames": 2, "radius": 1, "position": 4}


@pytest.mark.rtx
@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
@pytest.mark.parametrize("graph", ["model.onnx", "model.fp16.onnx", "model.int8.onnx"])
def test_tensorrt_rtx_builds_the_memory_graphs_with_both_states(exported, graph, tmp_path):
    from tempseg.engine.__main__ import main as engine_main
    from tempseg.engine.sidecar import read_sidecar

    run, _, _ = exported
    out = tmp_path / "model.engine"
    argv = ["--onnx", str(run / graph), "--out", str(out), "--flavour", "tensorrt_rtx", "--no-timing-cache"]
    assert run_cli(engine_main, argv) == 0
    record = read_sidecar(out)
    names = {t["name"] for t in record["io"]["inputs"] + record["io"]["outputs"]}
    assert {"state_in.0", "state_in.1", "state_out.0", "state_out.1"} <= names


def test_runtime_loop_carries_both_states_and_reports_their_bytes(exported, tmp_path, capsys):
    from tempseg.runtime.__main__ import main as runtime_main

    run, _, _ = exported
    report = tmp_path / "run.json"
    argv = ["--model-dir", str(run), "--precision", "fp32", "--backend", "onnxruntime", "--frames", "6"]
    assert run_cli(runtime_main, [*argv, "--warmup", "1", "--quiet", "--no-tc", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    state_bytes = 4 * (2 * 9 + 2 * 64) * 4 * 8  # keys with validity planes + values, 2 slots, 4x8 map, fp32
    assert data["memory"]["state_bytes"] == 2 * state_bytes  # ping-pong: read one pair, write the other
    assert data["frames"] == 6
