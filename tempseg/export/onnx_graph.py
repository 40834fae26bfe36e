"""Torch model -> ONNX graph with explicit state I/O, in FP32 and FP16.

The graph is the contract between training and deployment (common/contract.py): `image` and
`state_in.k` in; `labels` (argmax in the graph, int32, so the runtime copies one small tensor
back), optionally `logits`, and `state_out.k` out. Opset 17, the newest every TensorRT from 8.6
on parses; static shapes (batch fixed by --batch), BatchNorm folded.

Without `logits` (the default) the argmax runs before the last upsampling's pixel shuffle, so the
C x H x W logits are never written: 10 MB per frame at 256x512 that an edge GPU neither stores
nor moves (measured on fcresnet18_t66, ONNX Runtime CPU: see bench/results/runtime_ratios-*).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import cast

import onnx
import torch
from torch import Tensor, nn

from tempseg.common.contract import LABELS, LOGITS, Contract, contract_of_model, set_metadata
from tempseg.common.io import atomic_path
from tempseg.export.reparam import SubPixelUpsample, deploy_model, fold_score_fusion
from tempseg.models import FCResNet
from tempseg.models.accel import Accel
from tempseg.models.contract import OPSET, build_contract

__all__ = ["build_contract", "export_fp32", "save_onnx", "simplify"]

log = logging.getLogger(__name__)


class ContractWrapper(nn.Module):
    """`model(image, *states) -> ([logits,] labels, *next_states)`, labels = int32 argmax.

    `model` is the deployed model (export/reparam.py: its last upsampling is a SubPixelUpsample).
    """

    def __init__(self, model: FCResNet, *, logits: bool) -> None:
        super().__init__()
        self.model = model
        self.logits = logits

    def forward(self, image: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        features, next_states = self.model.forward_features(image, *states)
        head = cast(SubPixelUpsample, self.model.upscore8)  # deploy_model replaced the ConvTranspose2d
        if not self.logits:
            return (head.labels(features), *next_states)
        logits = head(features)
        return (logits, logits.argmax(1).to(torch.int32), *next_states)


class KeyframeWrapper(nn.Module):
    """Accel's keyframe graph: `image -> ([logits,] labels, *states)` of the reference network."""

    def __init__(self, model: Accel, *, logits: bool) -> None:
        super().__init__()
        self.model = model
        self.logits = logits

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        features = self.model.reference_features(image)
        states = self.model.keyframe_states(features, image)
        head = cast(SubPixelUpsample, self.model.reference.upscore8)  # deploy_model replaced the ConvTranspose2d
        return (*_head_outputs(head, features, self.logits), *states)


class UpdateWrapper(nn.Module):
    """Accel's update graph: `(image, [flow,] *states) -> ([logits,] labels, *next_states)`, the two task heads
    and the score fusion folded into one upsampling of the stacked score maps (export/reparam.py)."""

    def __init__(self, model: Accel, head: SubPixelUpsample, *, logits: bool) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.logits = logits

    def forward(self, image: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
        flow, states = (inputs[0], inputs[1:]) if self.model.takes_flow else (None, inputs)
        warped, next_states = self.model.warp_state(image, states, flow)
        stacked = torch.cat([warped, self.model.update.forward_features(image)[0]], dim=1)
        return (*_head_outputs(self.head, stacked, self.logits), *next_states)


def _head_outputs(head: SubPixelUpsample, features: Tensor, logits: bool) -> tuple[Tensor, ...]:
    if not logits:
        return (head.labels(features),)
    full = head(features)
    return (full, full.argmax(1).to(torch.int32))


def _wrapper(model: FCResNet | Accel, contract: Contract) -> tuple[nn.Module, list[str]]:
    """The module to export for `contract`'s role and its input names."""
    logits = contract.logits is not None
    states = [s.input for s in contract.states]
    # Exported as deployed: the learned upsamplings become sub-pixel convolutions (export/reparam.py).
    if isinstance(model, Accel) and contract.role in ("keyframe", "update"):
        deployed = deploy_model(model.eval())
        if contract.role == "keyframe":
            return KeyframeWrapper(deployed, logits=logits), ["image"]
        head = SubPixelUpsample(fold_score_fusion(model.reference.upscore8, model.update.upscore8, model.fusion))
        flow = [contract.flow.name] if contract.flow is not None else []
        return UpdateWrapper(deployed, head, logits=logits), ["image", *flow, *states]
    if isinstance(model, Accel) or contract.role in ("keyframe", "update"):
        raise ValueError(f"a {contract.role!r} graph cannot be exported from a {type(model).__name__}")
    return ContractWrapper(deploy_model(model.eval()), logits=logits), ["image", *states]


def export_fp32(model: FCResNet | Accel, contract: Contract) -> onnx.ModelProto:
    """Export with torch's exporter (torch.export based), check, simplify with onnxsim."""
    wrapper, inputs = _wrapper(model, contract)
    wrapper.eval()
    shapes = {contract.image.name: contract.image.shape, **{s.input: s.shape for s in contract.states}}
    if contract.flow is not None:
        shapes[contract.flow.name] = contract.flow.shape
    args = tuple(torch.zeros(shapes[name]) for name in inputs)
    outputs = [*([LOGITS] if contract.logits else []), LABELS, *(s.output for s in contract.states)]
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=inputs,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
        )
    if program is None:  # torch types the result Optional: the TorchScript exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    graph = program.model_proto
    onnx.checker.check_model(graph, full_check=True)
    graph = simplify(graph)
    set_metadata(graph, contract)
    contract_of_model(graph, contract.model)  # the written metadata must agree with the graph
    return graph


def simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim's simplification; the unsimplified graph (with a warning) if it fails."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(graph)
    except Exception as err:  # onnxsim raises RuntimeError / onnx errors on exotic graphs
        log.warning("onnxsim failed (%s); keeping the unsimplified graph", str(err).splitlines()[0][:160])
        return graph
    if not ok:
        log.warning("onnxsim could not validate its result; keeping the unsimplified graph")
        return graph
    onnx.checker.check_model(simplified, full_check=True)
    return simplified


def save_onnx(graph: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
    return Path(path)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress and torchvision notices; keep them out of the stage's output."""
    names = ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
