"""Size figures of a variant: parameters, weight bytes, state shapes and bytes, GFLOPs."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tempseg.models.accel import Accel
from tempseg.models.registry import build_model, resolve_name
from tempseg.models.temporal import POSITION_STRIDES

# Parameter counts, in millions, that Yawei Liu's "Towards Efficient Temporal Neural Nets for Video Semantic
# Segmentation" gives for its models (Tables II-IV), to check ours against.
PAPER_PARAMS_M = {
    "fcresnet18": 11.4,
    "fcresnet34": 21.6,
    "fcresnet50": 24.3,
    "fcresnet18_t66": 11.5,
    "fcresnet18_t33": 11.8,
    "fcresnet18_t34": 12.8,
    "fcresnet18_t44": 12.8,
    "fcresnet18_t47": 11.5,
    "fcresnet18_t55": 11.9,
    "fcresnet18_t56": 11.5,
    "fcresnet18_t57": 11.6,
    "fcresnet18_t67": 11.5,
    "fcresnet18_t77": 11.5,
    "fcresnet34_t33": 21.9,
    "fcresnet34_t34": 22.9,
    "fcresnet34_t44": 22.9,
    "fcresnet34_t47": 21.7,
    "fcresnet34_t55": 22.0,
    "fcresnet34_t56": 21.6,
    "fcresnet34_t57": 21.7,
    "fcresnet34_t66": 21.6,
    "fcresnet34_t67": 21.7,
    "fcresnet34_t77": 21.7,
}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summarize(name: str, *, height: int = 256, width: int = 512, num_classes: int = 19) -> dict:
    """Figures for `name` at an input of `height` x `width` (batch 1, float32)."""
    name = resolve_name(name)
    model = build_model(name, num_classes=num_classes).eval()
    shapes = model.state_shapes(height, width)
    image = torch.zeros(1, 3, height, width)
    # an update graph without a flow net (Accel) reads its flow from the host: a zero flow counts the same FLOPs
    flow_shape = model.flow_shape(height, width) if isinstance(model, Accel) else None
    extra = {} if flow_shape is None else {"flow": torch.zeros(flow_shape)}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, *model.initial_states(image), **extra)
    params = count_parameters(model)
    return {
        "model": name,
        "config": model.config.to_dict(),
        "input": [1, 3, height, width],
        "params": params,
        "weights_bytes_fp32": 4 * params,
        "states": [
            {"name": f"state_in.{i}", "shape": list(s), "bytes_fp32": 4 * _volume(s)} for i, s in enumerate(shapes)
        ],
        "state_bytes_fp32": sum(4 * _volume(s) for s in shapes),
        "gflops": counter.get_total_flops() / 1e9,
        "paper_params_m": PAPER_PARAMS_M.get(name),
    }


def format_summary(info: dict) -> str:
    cfg = info["config"]
    conn, memory = cfg["temporal"], cfg.get("memory")
    temporal = "none"
    if conn is not None:
        temporal = f"{conn['out']}-{conn['in_']} {conn['merge']}, {conn['kernel']}x{conn['kernel']} conv"
    if cfg.get("accel") is not None:
        accel = cfg["accel"]
        flow = "optical flow from the host" if accel["flow"] == "input" else "its flow net"
        temporal = f"keyframes (Accel): the ResNet{accel['depth']} reference's features warped by {flow}"
    if memory is not None:
        temporal = (
            f"local memory attention, S={memory['frames']} frames, radius {memory['radius']}, "
            f"at position {memory['position']} (stride {POSITION_STRIDES[memory['position']]})"
        )
    lines = [
        f"{info['model']}: ResNet{cfg['depth']} width {cfg['width']:g}, {cfg['num_classes']} classes, "
        f"temporal {temporal}",
        f"  input       {'x'.join(map(str, info['input']))} float32",
        f"  parameters  {info['params']:,} ({info['params'] / 1e6:.2f}M; {_mib(info['weights_bytes_fp32'])} fp32, "
        f"{_mib(info['weights_bytes_fp32'] / 2)} fp16)",
    ]
    if info["paper_params_m"] is not None:
        delta = 100 * (info["params"] / 1e6 / info["paper_params_m"] - 1)
        lines.append(f"  paper       {info['paper_params_m']}M ({delta:+.1f} %)")
    for state in info["states"]:
        lines.append(
            f"  {state['name']:<11} {'x'.join(map(str, state['shape']))} float32, {state['bytes_fp32'] / 1024:.1f} KiB"
        )
    if not info["states"]:
        lines.append("  state       none (frame-by-frame model)")
    lines.append(f"  compute     {info['gflops']:.2f} GFLOPs per frame")
    return "\n".join(lines)


def _volume(shape: tuple[int, ...] | list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"
