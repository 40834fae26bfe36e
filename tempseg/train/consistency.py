"""ETC's training terms (Liu, Shen, Yu, Wang, "Efficient Semantic Video Segmentation with Per-frame
Inference", ECCV 2020): the motion-guided temporal loss and the distillation from a trained teacher.

The temporal loss (section 2.1, eq. 1):

    l_tl = 1/N sum_i V_i || q_t+1^i - q̂_t->t+1^i ||^2

q are class probabilities, q̂ frame t's probabilities warped onto frame t+1 by the motion, V the mask of
pixels the motion can be trusted on (here the exact visibility mask of the synthetic generator, or ETC's
photometric mask with DIS flow elsewhere; data/flow.py), N all pixels. The warped previous prediction
supervises the current one, so it is a target: no gradient flows through it. Inference is unchanged:
the loss only shapes the weights of a per-frame model.

Distillation (section 2.2): the pixel-wise term (KL from the teacher's class probabilities) and the
pair-wise-frame term (PF, eq. 2) that matches the similarity between consecutive frames' predictions.
ETC's multi-frame term (MF: a ConvLSTM over self-similarity maps) is not implemented.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def warp_backward(values: Tensor, flow: Tensor) -> Tensor:
    """Sample `values` [N, C, H, W] of the previous frame at the pixels a backward flow [N, H, W, 2]
    (current -> previous, pixels) points to: the previous frame seen from the current one. Bilinear;
    outside the frame is 0 (the mask excludes those pixels anyway)."""
    h, w = values.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = (xs + flow[..., 0]) * (2.0 / max(w - 1, 1)) - 1.0  # grid_sample's [-1, 1], corners aligned
    y = (ys + flow[..., 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return nn.functional.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def temporal_loss(logits: Tensor, flows: Tensor, valid: Tensor) -> Tensor:
    """Eq. 1 over consecutive frames of clips: logits [B, L, C, H, W], flows [B, L-1, H, W, 2] from frame
    j+1 to frame j, valid [B, L-1, H, W]; the mean over the L-1 frame pairs."""
    probs = logits.float().softmax(dim=2)
    current = probs[:, 1:].flatten(0, 1)
    previous = probs[:, :-1].flatten(0, 1).detach()  # the target: the previous frame's own prediction
    warped = warp_backward(previous, flows.flatten(0, 1).float())
    per_pixel = (current - warped).pow(2).sum(dim=1)
    return (per_pixel * valid.flatten(0, 1).float()).mean()


# ---- distillation from a trained teacher (ETC section 2.2) ------------------------------------------------

PF_SIZE = (16, 32)  # locations of the pair-wise maps: A is N x N, N = 512 here (full resolution would be 32k^2)


def pixel_distillation(student: Tensor, teacher: Tensor) -> Tensor:
    """ETC's pixel-wise term (its SF, after Liu et al.'s structured distillation): KL(q_T || q_S) per pixel,
    averaged; logits [..., C, H, W] with the classes on dim -3."""
    log_student = student.float().log_softmax(dim=-3)
    target = teacher.float().softmax(dim=-3)
    return (target * (target.clamp_min(1e-8).log() - log_student)).sum(dim=-3).mean()


def pairwise_frames(student: Tensor, teacher: Tensor, size: tuple[int, int] = PF_SIZE) -> Tensor:
    """ETC's pair-wise-frame dependency (eq. 2): a_ij, the similarity of the class probabilities at location i
    of frame t and j of frame t+1, for student and teacher; their mean squared difference over the clip's
    consecutive frames. Logits [B, L, C, H, W]; probabilities average-pooled to `size` first."""
    return (_frame_similarity(student, size) - _frame_similarity(teacher, size)).pow(2).mean()


def _frame_similarity(logits: Tensor, size: tuple[int, int]) -> Tensor:
    b, length = logits.shape[:2]
    probs = logits.float().softmax(dim=2).flatten(0, 1)
    pooled = nn.functional.adaptive_avg_pool2d(probs, size).unflatten(0, (b, length)).flatten(3)  # [B, L, C, N]
    unit = nn.functional.normalize(pooled, dim=2)  # cosine similarity of the class distributions
    return torch.einsum("blcn,blcm->blnm", unit[:, :-1], unit[:, 1:])
