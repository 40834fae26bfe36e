"""calibration/: Q/DQ INT8 graphs from frames streamed with the state carried, the range cache, the report.

The FP32 graph is a small random-init variant (fcresnet18x0.25_t66 at 64x128) exported by export/.
Its accuracy means nothing; the checks are on structure, state handling, caching and agreement.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tempseg.calibration import CalibConfig, StreamingCalibrationReader, calibrate, keep_float_nodes
from tempseg.calibration.__main__ import default_eval_sequences, main
from tempseg.calibration.config import DEFAULT_PERCENTILE
from tempseg.calibration.frames import calibration_frames, take_frames
from tempseg.common.contract import graph_io, read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import sha256_file
from tempseg.data.frames import Frame
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.export.parity import ort_session
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.stream import compare_runners

MODEL = "fcresnet18x0.25_t66"
HEIGHT, WIDTH = 64, 128
# Small enough for 2 CPU cores: 16 frames in 2 sequences, 2 passes of 8 frames, one 6-frame eval sequence.
SMALL = CalibConfig(frames=16, sequence_length=8, chunk_frames=8, eval_sequences=1, eval_frames=6)
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
STAGE_LINE = re.compile(r"^stage calibrate: \d+\.\d s -> (\S+) \((\d+\.\d) MiB, mIoU drop (-?\d+\.\d\d) points\)$")


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory) -> Path:
    """The FP32 contract graph of the test model, exported by export/."""
    torch = pytest.importorskip("torch", reason="the test graph is exported from torch")
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.models import build_model

    torch.manual_seed(0)
    model = build_model(MODEL).eval()
    _trained_like(model, torch)
    contract = build_contract(model, MODEL, height=HEIGHT, width=WIDTH, batch=1, checkpoint_sha256=None)
    return save_onnx(export_fp32(model, contract), tmp_path_factory.mktemp("fp32") / "model.onnx")


def _trained_like(model, torch) -> None:
    """Random BatchNorm statistics and shifts, as a trained model has: folded into the convs, they give the
    graph the conv biases whose (absent) quantization is checked; fresh BatchNorms fold to no bias at all."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


@pytest.fixture(scope="module")
def run(fp32_path, tmp_path_factory) -> tuple[Path, dict]:
    """One calibration through the library API (a cache miss): the run directory and the report."""
    run_dir = tmp_path_factory.mktemp("run")
    report = calibrate(fp32_path, run_dir / "model.int8.onnx", SMALL, calib_json=run_dir / "calib.json")
    return run_dir, report


def _initializers(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}


def _sequence(index: int, length: int) -> list[Frame]:
    name = f"synthetic/val/{index}"
    return list(SyntheticVideo(split_seed("val", index), HEIGHT, WIDTH, length=length, sequence=name))


# ---- the INT8 graph ----------------------------------------------------------------------------------


def test_int8_graph_is_symmetric_per_channel_qdq_without_bias_quantization(run):
    run_dir, _ = run
    graph = onnx.load(str(run_dir / "model.int8.onnx"))
    inits = _initializers(graph)
    quant = [n for n in graph.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert sum(n.op_type == "QuantizeLinear" for n in quant) > 10
    for node in quant:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8, node.name
        assert not zero_point.any(), node.name  # symmetric
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8, node.name  # no int32 (bias) DequantizeLinear
    weighted = [n for n in graph.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert sum(len(n.input) > 2 for n in weighted) > 10  # the test graph has biases to (not) quantize
    producers = {n.output[0]: n for n in graph.graph.node}
    for node in weighted:
        weight_dq = producers[node.input[1]]
        scale = inits[weight_dq.input[1]]
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
        assert scale.ndim == 1, node.name
        assert scale.size == inits[weight_dq.input[0]].shape[axis] > 1, node.name  # one scale per output channel
        if len(node.input) > 2:  # the bias stays a float initializer
            assert inits[node.input[2]].dtype == np.float32, node.name


def test_int8_graph_keeps_the_state_contract(fp32_path, run):
    run_dir, report = run
    int8_path = run_dir / "model.int8.onnx"
    fp32_io = graph_io(onnx.load(str(fp32_path)))
    int8_io = graph_io(onnx.load(str(int8_path)))
    assert [list(d.values()) for d in int8_io] == [list(d.values()) for d in fp32_io]  # names, order, shapes, dtypes
    fp32, int8 = read_onnx_contract(fp32_path), read_onnx_contract(int8_path)
    assert int8.precision == "int8"
    assert fp32.precision == "fp32"
    assert int8.source_onnx_sha256 == sha256_file(fp32_path) == report["source_onnx"]["sha256"]
    assert int8.states == fp32.states
    assert int8.states[0].dtype == "float32"
    assert int8.extra["calibration"]["key"] == report["calibration_key"]


def test_int8_graph_agrees_with_fp32_in_onnx_runtime(fp32_path, run):
    run_dir, report = run
    contract = read_onnx_contract(fp32_path)
    frames = _sequence(0, SMALL.eval_frames)  # the report's held-out sequence
    runners = {
        "fp32": OnnxRuntimeRunner(contract, fp32_path),
        "int8": OnnxRuntimeRunner(read_onnx_contract(run_dir / "model.int8.onnx"), run_dir / "model.int8.onnx"),
    }
    fp32, int8 = [], []
    with runners["fp32"], runners["int8"]:
        for steps in compare_runners(runners, frames):
            fp32.append(steps["fp32"].labels.copy())
            int8.append(steps["int8"].labels.copy())
    assert len(np.unique(np.stack(fp32))) > 3  # not one class everywhere, which would agree trivially
    agreement = float(np.mean([(a == b).mean() for a, b in zip(fp32, int8, strict=True)]))
    assert agreement > 0.8  # loose: a random-init model has small logit margins
    assert report["accuracy"]["label_agreement"] == pytest.approx(agreement, abs=1e-5)
    assert report["accuracy"]["fp32"]["miou"] is not None
    assert report["accuracy"]["miou_drop_points"] is not None


def test_calib_json_holds_ranges_scales_key_and_timing(run):
    run_dir, report = run
    saved = json.loads((run_dir / "calib.json").read_text())
    assert saved["calibration_key"] == report["calibration_key"]
    assert saved["method"] == "percentile"
    assert saved["method_params"]["percentile"] == DEFAULT_PERCENTILE
    assert saved["int8_onnx"]["bytes"] == (run_dir / "model.int8.onnx").stat().st_size
    assert saved["int8_onnx"]["sha256"] == sha256_file(run_dir / "model.int8.onnx")
    assert saved["timing_s"]["collect_ranges"] > 0
    assert saved["timing_s"]["quantize"] > 0
    assert {"state_in.0", "state_out.0"} <= set(saved["tensors"])
    scaled = {k: v for k, v in saved["tensors"].items() if v["scale"] is not None}
    assert len(scaled) > 10
    # Symmetric int8: scale = max |range| / 127 of the tensor's own range, or of the range ONNX Runtime
    # shares with it (a Relu's input takes the Relu's output range, a MaxPool's output its input's);
    # an all-zero tensor (a zero-initialised residual branch here) gets scale 1.
    scale_of = {name: max(abs(e["min"]), abs(e["max"])) / 127 or 1.0 for name, e in saved["tensors"].items()}
    own = sum(entry["scale"] == pytest.approx(scale_of[name], rel=1e-4) for name, entry in scaled.items())
    assert own > 0.75 * len(scaled)
    for name, entry in scaled.items():
        assert any(entry["scale"] == pytest.approx(s, rel=1e-4) for s in scale_of.values()), name
    # state_in.k of frame t is state_out.k of frame t-1: with real states carried, their ranges match
    # (zero states, or states from another frame, would not).
    state_in, state_out = saved["tensors"]["state_in.0"], saved["tensors"]["state_out.0"]
    assert state_in["max"] > 0
    assert state_in["max"] == pytest.approx(state_out["max"], rel=0.2)


# ---- the streamed reader -----------------------------------------------------------------------------


def test_reader_feeds_each_frame_the_fp32_state_of_the_one_before(fp32_path):
    contract = read_onnx_contract(fp32_path)
    session = ort_session(str(fp32_path))
    frames = _sequence(7, 2) + _sequence(8, 1)  # a new sequence starts at the third frame
    with OnnxRuntimeRunner(contract, fp32_path) as runner:
        reader = StreamingCalibrationReader(runner, frames)
        reader.keep_fed = True
        while reader.get_next() is not None:
            pass
    fed = [f["state_in.0"] for f in reader.fed]
    assert len(fed) == 3
    assert not fed[0].any()
    assert not fed[2].any()
    zeros = np.zeros(contract.states[0].shape, np.float32)
    (expected,) = session.run(["state_out.0"], {"image": reader.fed[0]["image"], "state_in.0": zeros})
    np.testing.assert_array_equal(fed[1], expected)
    assert np.abs(fed[1]).max() > 0


def test_reader_ranges_move_on_in_order(fp32_path):
    contract = read_onnx_contract(fp32_path)
    with OnnxRuntimeRunner(contract, fp32_path) as runner:
        reader = StreamingCalibrationReader(runner, _sequence(9, 4))
        reader.set_range(0, 2)
        assert [reader.get_next() is not None for _ in range(3)] == [True, True, False]
        reader.set_range(2, 4)
        assert reader.get_next() is not None
        assert reader.states["state_in.0"].any()
        with pytest.raises(ValueError, match="in order"):
            reader.set_range(0, 2)


# ---- the range cache ---------------------------------------------------------------------------------


def _args(fp32_path: Path, run_dir: Path, *extra: str) -> list[str]:
    small = ["--frames", "16", "--sequence-length", "8", "--chunk-frames", "8", "--eval-sequences", "1"]
    return ["--onnx", str(fp32_path), "--out", str(run_dir / "model.int8.onnx"), *small, "--eval-frames", "6", *extra]


def test_same_key_hits_the_cache_and_another_method_misses(fp32_path, run, capsys):
    run_dir, first = run
    assert first["cache"]["hit"] is False
    assert main(_args(fp32_path, run_dir)) == 0
    out = capsys.readouterr().out
    assert "calibration cache hit" in out
    match = STAGE_LINE.match(out.strip().splitlines()[-1])
    assert match
    assert match[1] == str(run_dir / "model.int8.onnx")
    second = json.loads((run_dir / "calib.json").read_text())
    assert second["cache"]["hit"] is True
    assert second["calibration_key"] == first["calibration_key"]
    assert second["tensors"] == first["tensors"]  # the same ranges and scales
    # Faster by construction: no frame is loaded or streamed (total times are left out: too noisy on a busy CI box).
    assert second["timing_s"]["collect_ranges"] == 0 < first["timing_s"]["collect_ranges"]
    assert "load_frames" not in second["timing_s"]
    assert "load_frames" in first["timing_s"]

    assert main(_args(fp32_path, run_dir, "--method", "minmax", "--eval-sequences", "0")) == 0
    out = capsys.readouterr().out
    assert "calibration cache miss" in out
    assert out.strip().endswith("mIoU drop n/a points)")
    third = json.loads((run_dir / "calib.json").read_text())
    assert third["cache"]["hit"] is False
    assert third["calibration_key"] != first["calibration_key"]
    assert third["tensors"]["state_in.0"] != first["tensors"]["state_in.0"]  # minmax ranges differ from percentile


def test_keep_float_leaves_the_named_layers_unquantized(fp32_path, run):
    run_dir, _ = run
    graph = onnx.load(str(fp32_path))
    contract = read_onnx_contract(fp32_path)
    names = keep_float_nodes(graph, contract, ["first-conv", "temporal", "last-upsample"])
    ops = {n.name: n.op_type for n in graph.graph.node}
    kinds = [ops[n] for n in names]
    assert kinds[:3] == ["Conv", "Conv", "Concat"]  # the first conv; the temporal conv and its concat merge
    # the label head of the deployed graph: sub-pixel upsampling conv -> per-phase ArgMax -> pixel arrangement
    assert kinds[-1] == "Conv"
    assert "ArgMax" in kinds[3:]
    config = replace(SMALL, keep_float=("first-conv",), eval_sequences=0)
    report = calibrate(fp32_path, run_dir / "keep.int8.onnx", config)
    assert report["cache"]["hit"] is True  # keep_float is not part of the key: the ranges do not depend on it
    first_conv = next(n for n in onnx.load(str(run_dir / "keep.int8.onnx")).graph.node if n.name == names[0])
    assert first_conv.input[0] == "image"  # no Q/DQ in front of it
    assert first_conv.input[1] in _initializers(onnx.load(str(fp32_path)))  # its FP32 weight, not a DequantizeLinear
    with pytest.raises(UserError, match="neither a group"):
        keep_float_nodes(graph, contract, ["no-such-layer"])


# ---- the held-out check on labelled data ---------------------------------------------------------------


def test_held_out_check_scores_labelled_data_val_with_the_graphs_classes(tmp_path):
    """A graph of a 7-class folder tree is checked on the tree's val frames with its 7 classes: the report's FP32
    mIoU is the one the FP32 graph scores on exactly those frames and labels."""
    torch = pytest.importorskip("torch", reason="the test graph is exported from torch")
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.metrics import StreamScores
    from tempseg.models import build_model
    from tests.datasets import write_folder_tree

    tree = write_folder_tree(tmp_path / "street", classes=7)
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=7).eval()
    _trained_like(model, torch)
    contract = build_contract(model, MODEL, height=HEIGHT, width=WIDTH, batch=1, checkpoint_sha256=None)
    graph = save_onnx(export_fp32(model, contract), tmp_path / "model.onnx")
    assert default_eval_sequences(graph, tree.spec) == 4  # a labelled spec is checked by default
    config = replace(SMALL, frames=8, data=tree.spec, eval_sequences=2)
    report = calibrate(graph, tmp_path / "model.int8.onnx", config)["accuracy"]
    assert (report["sequences"], report["frames"], report["data"]) == (2, 12, f"{tree.spec} val")
    frames = [
        Frame(image, tree.labels[name].get(t), t, name)
        for name in ("val/seq0", "val/seq1")
        for t, image in enumerate(tree.frames[name])
    ]
    scores = StreamScores(7)
    with OnnxRuntimeRunner(read_onnx_contract(graph), graph, spinning=False) as runner:
        for steps in compare_runners({"fp32": runner}, frames):
            step = steps["fp32"]
            if step.frame.label is not None:
                scores.update(step.frame.sequence, step.frame.index, None, step.labels, step.frame.label)
    assert report["fp32"]["miou"] == scores.matrix().summary([f"class{k}" for k in range(7)])["miou"]


# ---- errors ------------------------------------------------------------------------------------------


def test_fewer_frames_than_asked_or_wrong_size_is_a_user_error(fp32_path, tmp_path):
    frames = _sequence(3, 2)
    with pytest.raises(UserError, match="2 frames available, 4 asked") as err:
        take_frames(frames, 4, height=HEIGHT, width=WIDTH, source="clip.mp4")
    assert err.value.path == "clip.mp4"
    with pytest.raises(UserError, match="is 64x128x3, the graph takes 32x64x3") as err:
        take_frames(frames, 2, height=32, width=64, source="frames/")
    assert err.value.path == "frames/"
    with pytest.raises(UserError, match="2 frames available, 16 asked"):
        calibrate(fp32_path, tmp_path / "model.int8.onnx", SMALL, frames=frames)
    assert not (tmp_path / "model.int8.onnx").exists()


def test_cli_errors_exit_2_naming_the_file(fp32_path, tmp_path, capsys):
    missing = tmp_path / "nothing" / "model.onnx"
    assert run_cli(main, ["--onnx", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "not found" in err
    assert len(err.strip().splitlines()) == 1
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_sequence(4, 3)):
        _write_png(folder / f"{i:03d}.png", frame.image)
    args = _args(fp32_path, tmp_path, "--data", str(folder), "--no-cache")
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err
    assert str(folder) in err
    assert "3 frames available, 16 asked" in err
    assert not (tmp_path / "model.int8.onnx").exists()
    assert not (tmp_path / "calib.json").exists()


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    assert cv2.imwrite(str(path), image)


# ---- TensorRT-RTX -----------------------------------------------------------------------------------


@pytest.mark.rtx
@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
def test_tensorrt_rtx_parses_and_builds_the_int8_graph(run):
    import tensorrt_rtx as trt

    run_dir, _ = run
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # strongly typed: the precision comes from the Q/DQ nodes
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse((run_dir / "model.int8.onnx").read_bytes())
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    assert inputs == {"image", "state_in.0"}
    assert builder.build_serialized_network(network, builder.create_builder_config()) is not None


def test_labelled_data_calibrates_on_its_train_split(tmp_path):
    """Its val split is what the held-out check scores: calibration must not see those frames."""
    from tests.datasets import write_folder_tree

    tree = write_folder_tree(tmp_path / "own", classes=7, sequences=1, length=6)
    frames = calibration_frames(tree.spec, count=4, height=64, width=128, seed=0, sequence_length=6)
    assert {frame.sequence.split("/")[-2] for frame in frames} == {"train"}, [f.sequence for f in frames]
    train = next(images for name, images in tree.frames.items() if name.startswith("train/"))
    assert all(np.array_equal(frame.image, image) for frame, image in zip(frames, train, strict=False))
