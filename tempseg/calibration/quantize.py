"""FP32 contract graph -> explicitly quantized (Q/DQ) INT8 graph with ONNX Runtime's quantizer.

TensorRT 11 / TensorRT-RTX are strongly typed, so INT8 has to be in the graph: QuantizeLinear /
DequantizeLinear pairs, int8 symmetric (zero point 0), weights per output channel, activations
per tensor, biases left in float (TensorRT's parser refuses int32 DequantizeLinear). The ranges
go through quantize_static's calibration cache: a run whose key matches an earlier one loads
the cached ranges instead of streaming frames again (like TensorRT's calibration cache).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    load_tensors_data,
    quant_pre_process,
    quantize_static,
)
from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX

from tempseg.calibration.config import KEEP_FLOAT_GROUPS, CalibConfig
from tempseg.common.contract import Contract, contract_of_model, graph_io, set_metadata
from tempseg.common.errors import UserError

log = logging.getLogger(__name__)
ORT_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class CalibrationError(RuntimeError):
    """The quantizer produced a graph that breaks the state contract (a bug, not bad input)."""


def preprocess(fp32_path: Path, out_path: Path) -> None:
    """ONNX Runtime's pre-quantization pass: shape inference and graph optimisation."""
    with _quiet_ort():
        quant_pre_process(str(fp32_path), str(out_path))


def quantize_qdq(
    pre_path: Path,
    out_path: Path,
    config: CalibConfig,
    *,
    cache_path: Path,
    reader: CalibrationDataReader | None,
    nodes_to_exclude: Sequence[str] = (),
) -> None:
    """quantize_static to QDQ int8; `reader` None means the ranges come from `cache_path` (must exist)."""
    extra = config.extra_options()
    if reader is not None:
        # Passes of chunk_frames frames bound the calibrators' memory; the count must divide evenly.
        extra["CalibStridedMinMax"] = _largest_divisor(len(reader), config.chunk_frames)
    with _quiet_ort():
        quantize_static(
            str(pre_path),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=ORT_METHODS[config.method],
            extra_options=extra,
            calibration_cache_path=str(cache_path),
        )


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantization prints progress on stdout and logs INFO lines: keep them in the debug log."""
    ort_log = logging.getLogger("onnxruntime.quantization")
    level = ort_log.level
    ort_log.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            yield
    finally:
        ort_log.setLevel(level)
        log.debug("%s", chatter.getvalue().strip())


def keep_float_nodes(graph: onnx.ModelProto, contract: Contract, names: Sequence[str]) -> list[str]:
    """Node names for nodes_to_exclude: groups of KEEP_FLOAT_GROUPS, or node names taken as they are.

    Groups are found from the graph structure, so they hold for any contract graph:
    first-conv: the nodes reading the image; temporal: the processing conv chain that writes each
    state_out, the merge node reading each state_in and the weighted layers reading the merge;
    last-upsample: the weighted layer chain that writes the logits;
    memory-read: a memory-attention model's read and shift (every node the state inputs reach before a
    weighted layer: the masked correlation, the softmax, the weighted sum of values, the shifted memory).
    """
    nodes = {n.name: n for n in graph.graph.node}
    found: list[str] = []
    for name in names:
        if name == "first-conv":
            found += [n.name for n in _consumers(graph, contract.image.name)]
        elif name == "temporal":
            for state in contract.states:
                found += _producer_chain(graph, state.output)
                for merge in _consumers(graph, state.input):
                    found.append(merge.name)
                    found += [n.name for n in _consumers(graph, merge.output[0]) if n.op_type in WEIGHTED_OPS]
        elif name == "memory-read":
            found += _reached_before_weighted(graph, [s.input for s in contract.states])
        elif name == "last-upsample":
            output = contract.logits if contract.logits is not None else contract.labels
            if output is None:
                raise UserError("--keep-float last-upsample: the graph has neither a logits nor a labels output")
            found += _producer_chain(graph, output.name)
        elif name in nodes:
            found.append(name)
        else:
            groups = ", ".join(KEEP_FLOAT_GROUPS)
            raise UserError(f"--keep-float: '{name}' is neither a group ({groups}) nor a node of the graph")
    return list(dict.fromkeys(found))


def default_keep_float(contract: Contract) -> tuple[str, ...]:
    """Groups every graph of this contract keeps in float. A memory's read: TensorRT refuses the quantized
    scalar of its empty-slot mask (tensorrt_rtx 1.7: "Quantized constant ... is only allowed before DQ"),
    and the -1e4 mask would take the whole int8 range of the logits the softmax reads."""
    return ("memory-read",) if contract.extra.get("memory") else ()


def _reached_before_weighted(graph: onnx.ModelProto, tensors: Sequence[str]) -> list[str]:
    """Nodes reachable from `tensors` without passing through a weighted layer (those are not included)."""
    found: list[str] = []
    frontier = list(tensors)
    seen: set[str] = set()
    while frontier:
        for node in _consumers(graph, frontier.pop()):
            if node.name in seen or node.op_type in WEIGHTED_OPS:
                continue
            seen.add(node.name)
            found.append(node.name)
            frontier.extend(node.output)
    return found


def _consumers(graph: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.graph.node if tensor in n.input]


def _producer_chain(graph: onnx.ModelProto, tensor: str) -> list[str]:
    """The node writing `tensor`, and the nodes before it (Resize, Cast, ArgMax) up to the first weighted layer."""
    producers = {out: n for n in graph.graph.node for out in n.output}
    chain: list[str] = []
    node = producers.get(tensor)
    while node is not None:
        chain.append(node.name)
        if node.op_type in WEIGHTED_OPS:
            break
        node = producers.get(node.input[0]) if node.input else None
    return chain


def finish_int8(int8: onnx.ModelProto, fp32: onnx.ModelProto, contract: Contract, source: str) -> onnx.ModelProto:
    """Check the quantized graph kept the state contract's I/O, write the int8 contract into it."""
    check_same_io(fp32, int8, source)
    set_metadata(int8, contract)
    onnx.checker.check_model(int8)
    contract_of_model(int8, source)  # the metadata must agree with the graph
    return int8


def check_same_io(fp32: onnx.ModelProto, int8: onnx.ModelProto, source: str) -> None:
    """CalibrationError unless inputs and outputs have the same names, order, shapes and dtypes."""
    before, after = graph_io(fp32), graph_io(int8)
    for kind, old, new in (("inputs", before[0], after[0]), ("outputs", before[1], after[1])):
        if list(old.values()) != list(new.values()):
            changed = f"{list(old.values())} -> {list(new.values())}"
            raise CalibrationError(f"{source}: quantization changed the graph {kind}: {changed}")


def activation_table(cache_path: Path, int8: onnx.ModelProto) -> dict[str, dict]:
    """tensor -> {min, max, scale}: the calibrated range and the int8 scale the graph uses (None: left float)."""
    ranges = load_tensors_data(cache_path)
    scales = activation_scales(int8)
    table = {}
    for name in sorted(ranges.keys()):
        low, high = ranges[name].range_value
        table[name] = {"min": _round(low), "max": _round(high), "scale": scales.get(name)}
    return table


def activation_scales(int8: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor scales of the QuantizeLinear nodes on activations (weights are stored already quantized)."""
    initializers = {i.name: i for i in int8.graph.initializer}
    scales = {}
    for node in int8.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        scale = numpy_helper.to_array(initializers[node.input[1]])
        # A graph output is quantized under a renamed producer tensor: report it under the output's name.
        tensor = node.input[0].removesuffix(QUANT_INPUT_SUFFIX)
        scales[tensor] = _round(scale)
    return scales


def _round(value: np.ndarray | float) -> float:
    """The float32 value as the shortest decimal that reads back to it (JSON stays readable)."""
    (number,) = np.asarray(value, np.float32).reshape(-1)  # MinMax ranges come as 1-element arrays
    return float(str(number))


def _largest_divisor(total: int, limit: int) -> int:
    """Largest divisor of `total` not above `limit` (at least 1)."""
    return max(d for d in range(1, max(1, min(total, limit)) + 1) if total % d == 0)
