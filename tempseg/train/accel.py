"""Training pieces of the keyframe family (Accel, models/accel.py; the paper's section 3.4).

Each step picks one keyframe offset d in 0..N-1 (N = keyframe_interval) for its whole batch: the reference
branch runs on the frame d before the labelled one, the state is warped forward by each flow, and the update
branch and fusion run on the labelled frame (ClipForward). Offsets are drawn uniformly per step, so the
labelled frame falls at every distance from its keyframe equally often, as the paper's evaluation rotates it.

A flow net (`_flownet`) also learns from the synthetic generator's exact flow: an end-point error on the
stride-8 grid, in grid pixels, over cells whose pixels are mostly visible in the previous frame.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tempseg.models.accel import FEATURE_STRIDE, Accel

FLOW_EPE_WEIGHT = 0.1  # EPE in grid pixels next to the cross-entropy; the weight of ETC's extra terms here


def keyframe_offset(seed: int, step: int, interval: int, *, fusion_only: bool = False) -> int:
    """Frames between the keyframe and the labelled frame at `step` (a pure function, as batches are).
    `fusion_only` (the warm-up, when only the fusion and flow net learn): 1..N-1, the frames they act on."""
    low = 1 if fusion_only and interval > 1 else 0
    return int(np.random.default_rng((seed, 1 << 21, step)).integers(low, interval))


def grid_flow_target(flows: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact backward flows [M, H, W, 2] (pixels) and validity [M, H, W] -> the grid's [M, 2, h, w] flow in grid
    pixels (mean over each cell's valid pixels) and a mask [M, 1, h, w] of cells more than half valid."""
    v = valid[:, None].float()
    pixels = flows.permute(0, 3, 1, 2) / FEATURE_STRIDE
    share = F.avg_pool2d(v, FEATURE_STRIDE)
    mean = F.avg_pool2d(pixels * v, FEATURE_STRIDE) / share.clamp_min(1e-6)
    return mean, share > 0.5


def flow_epe(model: Accel, images: torch.Tensor, flows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error of the flow net on every consecutive pair of the clips `images` [B, L, 3, H, W]."""
    previous, current = images[:, :-1].flatten(0, 1), images[:, 1:].flatten(0, 1)
    predicted = model.flow_of(previous, current).float()
    target, mask = grid_flow_target(flows.flatten(0, 1), valid.flatten(0, 1))
    error = (predicted - target).norm(dim=1, keepdim=True)
    return (error * mask).sum() / mask.sum().clamp_min(1)
