"""The state contract of a model in memory: what its ONNX graph will promise (common/contract.py).

Export writes it into the graph's metadata; training evaluates the model through the runtime's torch
runner with it, so both sides stream frames through one contract.
"""

from __future__ import annotations

from tempseg.common.classes import ClassTable
from tempseg.common.contract import FLOW, LABELS, LOGITS, Contract, StateSpec, TensorSpec
from tempseg.common.preprocess import COLOR_ORDER, MEAN_RGB, STD_RGB
from tempseg.models.accel import FEATURE_STRIDE, Accel
from tempseg.models.fcresnet import FCResNet
from tempseg.models.registry import variant_name

OPSET = 17  # the newest opset every TensorRT from 8.6 on parses
KEYFRAME_EVERY = 5  # Accel's default schedule: the interval it trains at (train/config.py) and the paper's
# What a host flow source must hand the update graph (data/flow.py GridFlow computes it with OpenCV DIS).
FLOW_MEANING = {
    "stride": FEATURE_STRIDE,
    "units": "pixels of the flow grid (H/8 x W/8)",
    "channels": ["dx", "dy"],
    "direction": "backward: the feature at p of frame t is the previous state's at p + flow(p)",
}


def build_contract(
    model: FCResNet | Accel,
    name: str,
    *,
    height: int,
    width: int,
    batch: int = 1,
    checkpoint_sha256: str | None = None,
    logits: bool = False,
    keyframe_every: int = KEYFRAME_EVERY,
    classes: ClassTable | None = None,
) -> Contract:
    """The FP32 contract of `model` at one input size; `logits` adds the C x H x W logits output. For Accel
    it is the update graph's, naming keyframe.onnx (keyframe_contract() gives the keyframe graph's).
    `classes`: the data's class table, recorded in the metadata (names and palette); None records none."""
    c = model.config.num_classes
    states = tuple(
        StateSpec(f"state_in.{i}", f"state_out.{i}", tuple(shape), "float32")
        for i, shape in enumerate(model.state_shapes(height, width, batch=batch))
    )
    if classes is not None and len(classes) != c:
        raise ValueError(f"{name} has {c} classes but the class table lists {len(classes)}")
    return Contract(
        model=name,
        num_classes=c,
        image=TensorSpec("image", (batch, 3, height, width), "float32"),
        states=states,
        logits=TensorSpec(LOGITS, (batch, c, height, width), "float32") if logits else None,
        labels=TensorSpec(LABELS, (batch, height, width), "int32"),
        precision="fp32",
        classes=classes.names if classes else (),
        palette=classes.palette if classes else (),
        mean=MEAN_RGB,
        std=STD_RGB,
        color_order=COLOR_ORDER,
        checkpoint_sha256=checkpoint_sha256,
        extra={
            "temporal": model.config.to_dict()["temporal"],
            "memory": model.config.to_dict()["memory"],
            "accel": model.config.to_dict()["accel"],
            "params": sum(p.numel() for p in model.parameters()),
            "opset": OPSET,
        },
        **(_accel_fields(model, height, width, batch, keyframe_every) if isinstance(model, Accel) else {}),
    )


def _accel_fields(model: Accel, height: int, width: int, batch: int, keyframe_every: int) -> dict:
    """The update graph's role, flow input and schedule."""
    shape = model.flow_shape(height, width, batch)
    spec = model.config.accel
    if spec is None:  # Accel refuses a config without it
        raise ValueError("an Accel model's config has no `accel`")
    schedule = {
        "keyframe_graph": "keyframe.onnx",
        "keyframe_every": keyframe_every,
        "reference": variant_name(spec.depth, spec.width),
        "flow_source": "input" if shape else "flow net in the update graph",
        "flow": FLOW_MEANING if shape else None,
    }
    return {"role": "update", "flow": TensorSpec(FLOW, shape, "float32") if shape else None, "schedule": schedule}


def keyframe_contract(update: Contract) -> Contract:
    """The keyframe graph's contract: the update graph's image, outputs and states, no flow, no schedule; it
    writes the states without reading them. `params` counts the whole model (both graphs share it)."""
    return update.with_changes(role="keyframe", flow=None, schedule={})
