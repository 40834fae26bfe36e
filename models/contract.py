"""The state contract of a model in memory: what its ONNX graph will promise (common/contract.py).

Export writes it into the graph's metadata; training evaluates the model through the runtime's torch
runner with it, so both sides stream frames through one contract.
"""

from __future__ import annotations

from tempseg.common.contract import LABELS, LOGITS, Contract, StateSpec, TensorSpec
from tempseg.common.preprocess import COLOR_ORDER, MEAN_RGB, STD_RGB
from tempseg.data.classes import CLASS_NAMES, PALETTE
from tempseg.models.fcresnet import FCResNet

OPSET = 17  # the newest opset every TensorRT from 8.6 on parses


def build_contract(
    model: FCResNet,
    name: str,
    *,
    height: int,
    width: int,
    batch: int = 1,
    checkpoint_sha256: str | None = None,
    logits: bool = False,
) -> Contract:
    """The FP32 contract of `model` at one input size; `logits` adds the C x H x W logits output."""
    c = model.config.num_classes
    states = tuple(
        StateSpec(f"state_in.{i}", f"state_out.{i}", tuple(shape), "float32")
        for i, shape in enumerate(model.state_shapes(height, width, batch=batch))
    )
    is_cityscapes = c == len(CLASS_NAMES)
    return Contract(
        model=name,
        num_classes=c,
        image=TensorSpec("image", (batch, 3, height, width), "float32"),
        states=states,
        logits=TensorSpec(LOGITS, (batch, c, height, width), "float32") if logits else None,
        labels=TensorSpec(LABELS, (batch, height, width), "int32"),
        precision="fp32",
        classes=tuple(CLASS_NAMES) if is_cityscapes else (),
        palette=tuple(tuple(p) for p in PALETTE) if is_cityscapes else (),
        mean=MEAN_RGB,
        std=STD_RGB,
        color_order=COLOR_ORDER,
        checkpoint_sha256=checkpoint_sha256,
        extra={
            "temporal": model.config.to_dict()["temporal"],
            "memory": model.config.to_dict()["memory"],
            "params": sum(p.numel() for p in model.parameters()),
            "opset": OPSET,
        },
    )
