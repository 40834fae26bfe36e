"""A Triton Inference Server model repository for an exported graph: serving past one box.

`python -m tempseg.export.triton --model-dir runs/NAME --out DIR [--precision fp32|fp16|int8]
[--platform onnxruntime|tensorrt] [--max-batch K] [--instances N] [--gpus 0,1]` writes
DIR/<model>/config.pbtxt, DIR/<model>/1/model.onnx (or the TensorRT plan's place) and DIR/README.txt.

The graph's states become Triton's implicit state: Triton keeps state_out.k of a sequence's frame t and feeds it
as state_in.k at frame t+1 (zeros on the sequence's first frame), so a client sends only the image, one
sequence id per camera, with the start and end flags. The config is a ModelConfig message of Triton's own
schema (tritonclient's model_config_pb2, pip extra `serve`), written as text protobuf.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempseg.common.contract import Contract, StateSpec, TensorSpec, read_onnx_contract
from tempseg.common.errors import UserError, run_cli

PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
GRAPHS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "bool": "TYPE_BOOL",
}
IDLE_US = 5_000_000  # a camera silent this long loses its sequence slot (and its state)
PLAN_FILES = {".plan", ".engine"}


@dataclass(frozen=True)
class Serving:
    """How Triton runs the model: platform, batching across sequences, instances and their GPUs."""

    platform: str = "onnxruntime"
    max_batch: int = 0  # 0: the graph's own (static) batch, one sequence per instance
    instances: int = 1
    gpus: tuple[int, ...] = ()  # () = every GPU Triton sees
    idle_us: int = IDLE_US


def model_config_pb2() -> Any:
    """Triton's config schema; lazy so the module (and the exporter) import without tritonclient."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError:
        raise UserError("writing a Triton repository needs tritonclient: pip install 'tempseg[serve]'") from None
    return pb2


def check_servable(contract: Contract, serving: Serving, source: str) -> None:
    if contract.role != "frame":
        raise UserError(
            f"a {contract.role} graph is one of a keyframe pair (two graphs a frame): Triton needs an ensemble "
            "or a BLS model for it, not written yet; serve a one-graph model",
            source,
        )
    if serving.platform not in PLATFORMS:
        raise UserError(f"platform must be one of {', '.join(PLATFORMS)}, not {serving.platform!r}")
    if serving.instances < 1 or serving.max_batch < 0:
        raise UserError("--instances must be >= 1 and --max-batch >= 0")
    batch = contract.image.shape[0]
    if serving.max_batch > 0 and batch != -1:
        raise UserError(
            f"the graph's batch is fixed at {batch}: Triton batches sequences only along a dynamic batch dim; "
            "use --max-batch 0 (one sequence per instance) or re-export with a dynamic batch",
            source,
        )
    if serving.max_batch == 0 and batch != 1:
        raise UserError(f"a graph of batch {batch} would put {batch} cameras in one sequence; export batch 1", source)


def triton_dims(shape: tuple[int, ...], serving: Serving) -> list[int]:
    """With max_batch_size > 0 Triton adds the batch dim itself; with 0 the dims are the whole shape."""
    return list(shape[1:] if serving.max_batch > 0 else shape)


def dtype_of(spec: TensorSpec | StateSpec) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise UserError(f"{spec.dtype} tensors have no Triton type here")
    return TRITON_DTYPES[spec.dtype]


def add_tensor(repeated: Any, spec: TensorSpec, serving: Serving, pb2: Any) -> None:
    tensor = repeated.add()
    tensor.name = spec.name
    tensor.data_type = pb2.DataType.Value(dtype_of(spec))
    tensor.dims.extend(triton_dims(spec.shape, serving))


def add_state(batching: Any, state: StateSpec, serving: Serving, pb2: Any) -> None:
    entry = batching.state.add()
    entry.input_name, entry.output_name = state.input, state.output
    entry.data_type = pb2.DataType.Value(dtype_of(state))
    entry.dims.extend(triton_dims(state.shape, serving))
    # Triton feeds zeros at a sequence's start: what the runtime's first frame does, without a START input
    initial = entry.initial_state.add()
    initial.name, initial.data_type, initial.zero_data = "zeros", entry.data_type, True
    initial.dims.extend(triton_dims(state.shape, serving))


def set_batching(config: Any, contract: Contract, serving: Serving, pb2: Any) -> None:
    batching = config.sequence_batching
    batching.max_sequence_idle_microseconds = serving.idle_us
    if serving.max_batch > 0:  # frames of different cameras share one execution
        batching.oldest.max_candidate_sequences = serving.max_batch * serving.instances
        batching.oldest.preferred_batch_size.append(serving.max_batch)
        batching.oldest.max_queue_delay_microseconds = 0
    else:  # a static batch-1 graph: each instance holds one sequence at a time
        batching.direct.SetInParent()
    for state in contract.states:
        add_state(batching, state, serving, pb2)


def build_config(contract: Contract, name: str, serving: Serving) -> Any:
    """The ModelConfig message. No control inputs: our graphs have no START/READY tensors, and a backend
    refuses a control the model does not take; zero initial states do what START would."""
    pb2 = model_config_pb2()
    config = pb2.ModelConfig()
    config.name = name
    config.platform = PLATFORMS[serving.platform]
    config.max_batch_size = serving.max_batch
    add_tensor(config.input, contract.image, serving, pb2)
    if contract.flow is not None:
        add_tensor(config.input, contract.flow, serving, pb2)
    for out in (contract.labels, contract.logits):
        if out is not None:
            add_tensor(config.output, out, serving, pb2)
    set_batching(config, contract, serving, pb2)
    group = config.instance_group.add()
    group.kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    group.count = serving.instances
    group.gpus.extend(serving.gpus)
    if serving.platform == "tensorrt":  # machine-readable, since config.pbtxt is written without comments
        config.parameters["plan_built_on"].string_value = "the serving GPU and TensorRT version only"
    return config


def config_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def model_name(contract: Contract) -> str:
    """Triton names a model by its folder: keep it to letters, digits, '_' and '-'."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in contract.model)


def readme(contract: Contract, name: str, serving: Serving, graph: str) -> str:
    lines = [
        f"Triton model repository for {contract.model} ({contract.precision}), written by tempseg.export.triton.",
        f"Serve it: tritonserver --model-repository <this folder>; the model is '{name}'.",
        "A client sends `image` (and nothing else of the graph's state) per frame, one sequence id per camera,",
        "sequence_start on its first frame and sequence_end on its last: see examples/triton_client.py.",
        f"States: {len(contract.states)} pair(s) kept by Triton (implicit state), zeros at a sequence's start.",
    ]
    if serving.max_batch == 0:
        lines.append(
            f"Batch: the graph's batch is fixed at 1, so max_batch_size is 0 and each of the {serving.instances} "
            f"instance(s) serves one sequence at a time: {serving.instances} camera(s) at once, others queue."
        )
    else:
        lines.append(f"Batch: up to {serving.max_batch} sequences a step per instance (oldest strategy).")
    if serving.platform == "tensorrt":
        lines.append(
            f"TensorRT: {name}/1/model.plan must be built on the serving GPU with the server's TensorRT version "
            f"(python -m tempseg.engine --onnx {graph} --out {name}/1/model.plan); a plan from another GPU or "
            "TensorRT version does not load."
        )
    lines.append(
        "Unverified until a Triton server runs it: the server accepting this config and the graph's tensors, "
        "implicit state on this backend, the outputs matching tempseg's runtime frame for frame."
    )
    return "\n".join(lines) + "\n"


def place_graph(graph_path: Path, version_dir: Path, serving: Serving) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    if serving.platform == "onnxruntime":
        shutil.copyfile(graph_path, version_dir / "model.onnx")
    elif graph_path.suffix in PLAN_FILES:  # a plan already built (on the serving GPU, the README says)
        shutil.copyfile(graph_path, version_dir / "model.plan")


def write_repository(
    contract: Contract,
    graph_path: str | Path,
    out_dir: str | Path,
    *,
    platform: str = "onnxruntime",
    max_batch: int = 0,
    instances: int = 1,
    gpus: Sequence[int] = (),
    idle_us: int = IDLE_US,
) -> Path:
    """Write OUT/<model>/config.pbtxt, OUT/<model>/1/ and OUT/README.txt; return the model's folder."""
    serving = Serving(platform, max_batch, instances, tuple(gpus), idle_us)
    graph_path, out_dir = Path(graph_path), Path(out_dir)
    check_servable(contract, serving, str(graph_path))
    name = model_name(contract)
    config = build_config(contract, name, serving)
    model_dir = out_dir / name
    place_graph(graph_path, model_dir / "1", serving)
    (model_dir / "config.pbtxt").write_text(config_text(config))
    (out_dir / "README.txt").write_text(readme(contract, name, serving, str(graph_path)))
    return model_dir


def parse_gpus(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus takes indices like 0,1, not {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.export.triton", description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True, help="an exported run (runs/NAME)")
    p.add_argument("--out", type=Path, required=True, help="the model repository to write")
    p.add_argument("--precision", choices=sorted(GRAPHS), default="fp32", help="which exported graph (default fp32)")
    p.add_argument("--platform", choices=sorted(PLATFORMS), default="onnxruntime")
    p.add_argument("--max-batch", type=int, default=0, help="sequences batched a step (needs a dynamic batch)")
    p.add_argument("--instances", type=int, default=1, help="model instances per GPU (default 1)")
    p.add_argument("--gpus", type=parse_gpus, default=(), help="GPU indices, e.g. 0,1 (default: all)")
    p.add_argument("--idle-us", type=int, default=IDLE_US, help="max_sequence_idle_microseconds")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    graph = args.model_dir / GRAPHS[args.precision]
    contract = read_onnx_contract(graph)
    model_dir = write_repository(
        contract,
        graph,
        args.out,
        platform=args.platform,
        max_batch=args.max_batch,
        instances=args.instances,
        gpus=args.gpus,
        idle_us=args.idle_us,
    )
    print(f"wrote {model_dir / 'config.pbtxt'} (see {args.out / 'README.txt'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
