"""The Triton model repository: config.pbtxt parsed back with Triton's own schema, the client's requests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tempseg.common.contract import Contract, StateSpec, TensorSpec, read_onnx_contract, set_metadata
from tempseg.common.errors import UserError
from tempseg.export.triton import write_repository
from tests.trt_fakes import pair_contracts, tiny_state_graph

pytest.importorskip("tritonclient.grpc", reason="pip extra `serve`")
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

H, W, CLASSES = 8, 8, 3
ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def state_graph(path: Path, states: int, dtype: str, batch: int = 1) -> Contract:
    """logits = conv1x1(image) + sum_k float(state_in.k); state_out.k = dtype(relu(logits)); batch -1: dynamic."""
    dim: int | str = batch if batch > 0 else "N"
    shape = (batch, CLASSES, H, W)
    specs = tuple(StateSpec(f"state_in.{k}", f"state_out.{k}", shape, dtype) for k in range(states))
    contract = Contract(
        model="mem.att-2",
        num_classes=CLASSES,
        image=TensorSpec("image", (batch, 3, H, W), "float32"),
        states=specs,
        logits=None,
        labels=TensorSpec("labels", (batch, H, W), "int32"),
        precision="fp16" if dtype == "float16" else "fp32",
    )
    nodes, acc = [helper.make_node("Conv", ["image", "w"], ["acc0"])], "acc0"
    for k in range(states):
        nodes += [
            helper.make_node("Cast", [f"state_in.{k}"], [f"in{k}"], to=TensorProto.FLOAT),
            helper.make_node("Add", [acc, f"in{k}"], [f"acc{k + 1}"]),
        ]
        acc = f"acc{k + 1}"
    nodes += [
        helper.make_node("ArgMax", [acc], ["argmax"], axis=1, keepdims=0),
        helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.INT32),
        helper.make_node("Relu", [acc], ["relu"]),
    ]
    nodes += [helper.make_node("Cast", ["relu"], [s.output], to=ONNX_TYPES[dtype]) for s in specs]
    value = lambda name, kind, dims: helper.make_tensor_value_info(name, kind, list(dims))  # noqa: E731
    graph = helper.make_graph(
        nodes,
        "g",
        [value("image", TensorProto.FLOAT, (dim, 3, H, W))]
        + [value(s.input, ONNX_TYPES[dtype], (dim, CLASSES, H, W)) for s in specs],
        [value("labels", TensorProto.INT32, (dim, H, W))]
        + [value(s.output, ONNX_TYPES[dtype], (dim, CLASSES, H, W)) for s in specs],
        [numpy_helper.from_array(np.ones((CLASSES, 3, 1, 1), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_metadata(model, contract)
    onnx.save(model, str(path))
    return read_onnx_contract(path)


def parse(model_dir: Path):
    # Triton's schema: text_format.Parse fails on any field ModelConfig does not have
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def test_every_state_is_implicit_with_dtype_and_dims(tmp_path):
    contract = state_graph(tmp_path / "model.onnx", states=2, dtype="float32")
    model_dir = write_repository(contract, tmp_path / "model.onnx", tmp_path / "repo", instances=2, gpus=[0, 1])
    config = parse(model_dir)
    assert model_dir.name == config.name == "mem_att-2"
    assert (model_dir / "1" / "model.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
    assert config.platform == "onnxruntime_onnx"
    states = {s.input_name: s for s in config.sequence_batching.state}
    assert sorted(states) == ["state_in.0", "state_in.1"]
    for k in range(2):
        state = states[f"state_in.{k}"]
        assert state.output_name == f"state_out.{k}"
        assert type_name(state.data_type) == "TYPE_FP32"
        assert list(state.dims) == [1, CLASSES, H, W]  # max_batch_size 0: the whole shape
        (initial,) = state.initial_state
        assert initial.zero_data
        assert list(initial.dims) == list(state.dims)
    # Triton feeds the states: the graph's state tensors are not the model's inputs or outputs
    assert [i.name for i in config.input] == ["image"]
    assert [o.name for o in config.output] == ["labels"]
    assert [type_name(o.data_type) for o in config.output] == ["TYPE_INT32"]
    # a static batch-1 graph: no batching across sequences, one sequence per instance
    assert config.max_batch_size == 0
    assert config.sequence_batching.WhichOneof("strategy_choice") == "direct"
    assert config.sequence_batching.max_sequence_idle_microseconds > 0
    # no control inputs: the graph takes no START/READY tensor, and zero initial states replace START
    assert len(config.sequence_batching.control_input) == 0
    (group,) = config.instance_group
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"
    assert group.count == 2
    assert list(group.gpus) == [0, 1]
    assert "Unverified" in (tmp_path / "repo" / "README.txt").read_text()


def test_fp16_graph_gives_fp16_states(tmp_path):
    contract = state_graph(tmp_path / "model.fp16.onnx", states=1, dtype="float16")
    config = parse(write_repository(contract, tmp_path / "model.fp16.onnx", tmp_path / "repo"))
    assert [type_name(s.data_type) for s in config.sequence_batching.state] == ["TYPE_FP16"]
    assert type_name(config.sequence_batching.state[0].initial_state[0].data_type) == "TYPE_FP16"


def test_dynamic_batch_uses_oldest_strategy(tmp_path):
    contract = state_graph(tmp_path / "model.onnx", states=1, dtype="float32", batch=-1)
    config = parse(write_repository(contract, tmp_path / "model.onnx", tmp_path / "repo", max_batch=4))
    assert config.max_batch_size == 4
    oldest = config.sequence_batching.oldest
    assert oldest.max_candidate_sequences == 4
    assert list(oldest.preferred_batch_size) == [4]
    assert list(config.sequence_batching.state[0].dims) == [CLASSES, H, W]  # Triton adds the batch dim
    assert list(config.input[0].dims) == [3, H, W]


def test_static_batch_refuses_max_batch(tmp_path):
    contract = tiny_state_graph(tmp_path / "model.onnx")
    with pytest.raises(UserError, match="dynamic batch"):
        write_repository(contract, tmp_path / "model.onnx", tmp_path / "repo", max_batch=4)


def test_tensorrt_repository_says_where_the_plan_is_built(tmp_path):
    contract = tiny_state_graph(tmp_path / "model.onnx")
    config = parse(write_repository(contract, tmp_path / "model.onnx", tmp_path / "repo", platform="tensorrt"))
    assert config.platform == "tensorrt_plan"
    assert "serving GPU" in config.parameters["plan_built_on"].string_value
    assert "model.plan must be built on the serving GPU" in (tmp_path / "repo" / "README.txt").read_text()


def test_keyframe_pair_is_refused_in_one_line(tmp_path):
    update, _ = pair_contracts()
    with pytest.raises(UserError, match="ensemble or a BLS model") as err:
        write_repository(update, tmp_path / "model.onnx", tmp_path / "repo")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "repo").exists()


def load_client():
    path = Path(__file__).resolve().parents[1] / "examples" / "triton_client.py"
    spec = importlib.util.spec_from_file_location("triton_client", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch", [1, -1])
def test_client_requests_match_the_config(tmp_path, batch):
    contract = state_graph(tmp_path / "model.onnx", states=2, dtype="float32", batch=batch)
    max_batch = 2 if batch == -1 else 0
    model_dir = write_repository(contract, tmp_path / "model.onnx", tmp_path / "repo", max_batch=max_batch)
    client = load_client()
    config = client.read_config(model_dir)
    frames = [np.zeros((1, 3, H, W), np.float32) for _ in range(3)]
    for camera in (7, 8):
        requests = client.build_requests(config, frames, camera)
        assert [r["sequence_id"] for r in requests] == [camera] * 3
        assert [r["sequence_start"] for r in requests] == [True, False, False]
        assert [r["sequence_end"] for r in requests] == [False, False, True]
        for r in requests:
            assert r["model_name"] == config.name
            (image,) = r["inputs"]
            spec = config.input[0]
            assert image.name() == spec.name
            assert image.shape() == ([1] if max_batch else []) + list(spec.dims) == [1, 3, H, W]
            assert "TYPE_" + image.datatype() == type_name(spec.data_type)
            assert [o.name() for o in r["outputs"]] == [o.name for o in config.output]
