"""Accel (Jain, Wang and Gonzalez, "Accel: A Corrective Fusion Network for Efficient Semantic Segmentation on
Video", CVPR 2019): a deep reference network on keyframes, its features warped forward by optical flow, and a
cheap update network on every frame, their score maps merged by a 1x1 convolution (score fusion).

Two graphs under one state contract (models/contract.py, export/):
- keyframe graph: `image` -> `labels` of the reference network alone, and `state_out.0`, the reference feature:
  FCN8s's fused scores at stride 8 (position 7, before the last x8 upsampling), Accel's f_k = N_feat^R(I_k);
- update graph: `image`, `flow`, `state_in.0` -> `labels`, `state_out.0`: the state warped by the flow
  (bilinear, `grid_sample`: ONNX GridSample), the reference task head (its x8 upsampling, N_task^R) on it, the
  update network on the image (N^U), both score maps stacked and fused (eqs. 1-2 and SF); the warped feature
  is the next state, so frame t warps frame t-1's warped feature by the flow from t to t-1, as the paper does.

`flow` is [N, 2, H/8, W/8], (dx, dy) in pixels of that grid, backward: the feature at p of frame t is the
previous state's at p + flow(p) (data/flow.py `grid_flow` computes it with OpenCV DIS). With a flow net
(`_flownet`) the update graph computes it from the previous and the current frame at stride 4; the previous
frame is then a second state (`state_out.1`, written by both graphs) and `flow` no input.

Differences from the paper, and why:
- The reference feature is FCN8s's position 7 (19 channels at stride 8), the point where all its skips are
  fused: warping it is cheap (the paper warps ResNet-101's 2048-channel conv5) and the task head left is the
  x8 upsampling. Both task heads are linear, so the deployed update graph folds the fusion into one x8
  upsampling of the two stacked score maps (export/reparam.py): the same function, no full-size logits.
- The flow net is a 4-layer CNN at stride 4 (the paper fine-tunes FlowNet-Simple); it starts at zero flow
  and learns from the generator's exact flow (an end-point-error term) and the task loss through the warp,
  in the one joint training, in place of FlowNet's Flying Chairs pretraining.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempseg.models.fcresnet import FCResNet, FCResNetConfig, check_model_input
from tempseg.models.temporal import POSITION_STRIDES

FEATURE_POSITION = 7  # FCN8s's fused scores, before the last upsampling
FEATURE_STRIDE = POSITION_STRIDES[FEATURE_POSITION]  # 8: the state's and the flow's grid
FLOW_NET_STRIDE = 4  # the flow net reads both frames average-pooled to stride 4


def warp(features: Tensor, flow: Tensor) -> Tensor:
    """`features` [N, C, h, w] of the previous frame moved to the current one by the backward `flow`
    [N, 2, h, w] (dx, dy in grid pixels): out(p) = features(p + flow(p)), bilinear, the border extended."""
    h, w = features.shape[-2:]
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    # grid_sample's coordinates with align_corners=True: -1 and +1 are the centres of the edge pixels
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(features, grid.to(features.dtype), mode="bilinear", padding_mode="border", align_corners=True)


class FlowNet(nn.Module):
    """Backward flow at stride 8 from two frames at stride 4: [N, 6, H/4, W/4] -> [N, 2, H/8, W/8]."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(6, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=4, dilation=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2, 3, padding=1),
        )
        nn.init.zeros_(self.output_conv.weight)  # zero flow at first: the warp starts as the identity
        nn.init.zeros_(cast(Tensor, self.output_conv.bias))  # made with a bias; torch types it Optional

    @property
    def output_conv(self) -> nn.Conv2d:
        """The last layer, which writes the flow."""
        return cast(nn.Conv2d, self.layers[-1])  # Sequential indexing is typed as returning any Module

    def forward(self, previous: Tensor, current: Tensor) -> Tensor:
        return self.layers(torch.cat([current, previous], dim=1))


class Accel(nn.Module):
    """Reference network (keyframes), update network (every frame), score fusion, optional flow net.

    `keyframe(image) -> (logits, *states)` is the keyframe graph; `forward(image, *states, flow=None)` the
    update graph (`flow` given unless the model has a flow net). `config` is the update network's
    FCResNetConfig with `accel` set, so names, checkpoints and the base (the update network's) work as for
    every other family.
    """

    def __init__(self, config: FCResNetConfig) -> None:
        super().__init__()
        if config.accel is None:
            raise ValueError("Accel needs a config with `accel` set")
        self.config = config
        spec = config.accel
        c = config.num_classes
        self.reference = FCResNet(FCResNetConfig(depth=spec.depth, width=spec.width, num_classes=c))
        self.update = FCResNet(replace(config, accel=None))
        self.fusion = nn.Conv2d(2 * c, c, 1)
        with torch.no_grad():  # start as the mean of the two score maps
            self.fusion.weight.zero_()
            self.fusion.weight[range(c), range(c)] = 0.5
            self.fusion.weight[range(c), range(c, 2 * c)] = 0.5
            cast(Tensor, self.fusion.bias).zero_()  # made with a bias; torch types it Optional
        self.flow_net = FlowNet() if spec.flow == "net" else None

    @property
    def num_states(self) -> int:
        return 1 if self.flow_net is None else 2

    @property
    def takes_flow(self) -> bool:
        """True when the update graph takes the flow as an input (host flow); False with a flow net."""
        return self.flow_net is None

    def state_shapes(self, height: int, width: int, batch: int = 1) -> list[tuple[int, ...]]:
        """The reference feature at stride 8 (and, with a flow net, the frame at stride 4)."""
        check_model_input(self.config, height, width)
        shapes = [(batch, self.config.num_classes, height // FEATURE_STRIDE, width // FEATURE_STRIDE)]
        if self.flow_net is not None:
            shapes.append((batch, 3, height // FLOW_NET_STRIDE, width // FLOW_NET_STRIDE))
        return shapes

    def flow_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, ...] | None:
        """Shape of the update graph's `flow` input, or None with a flow net."""
        if self.flow_net is not None:
            return None
        return (batch, 2, height // FEATURE_STRIDE, width // FEATURE_STRIDE)

    def initial_states(self, image: Tensor) -> list[Tensor]:
        shapes = self.state_shapes(image.shape[-2], image.shape[-1], batch=image.shape[0])
        return [image.new_zeros(shape) for shape in shapes]

    def module_parameters(self) -> list[nn.Parameter]:
        """Trained from scratch, and alone first (the paper's phase 1): the score fusion and the flow net."""
        flow = list(self.flow_net.parameters()) if self.flow_net is not None else []
        return [*self.fusion.parameters(), *flow]

    def keyframe(self, image: Tensor) -> tuple[Tensor, ...]:
        """The keyframe graph: the reference network's logits and the states it hands on."""
        features = self.reference_features(image)
        return (self.reference.upscore8(features), *self.keyframe_states(features, image))

    def reference_features(self, image: Tensor) -> Tensor:
        return self.reference.forward_features(image)[0]

    def keyframe_states(self, features: Tensor, image: Tensor) -> list[Tensor]:
        """The states a keyframe hands on: its reference feature (and, with a flow net, the pooled frame)."""
        return [features] if self.flow_net is None else [features, _pooled(image)]

    def forward(self, image: Tensor, *states: Tensor, flow: Tensor | None = None) -> tuple[Tensor, ...]:
        """The update graph: fused logits and the next states."""
        warped, next_states = self.warp_state(image, states, flow)
        return (self.fuse(self.reference.upscore8(warped), self.update(image)[0]), *next_states)

    def warp_state(self, image: Tensor, states: tuple[Tensor, ...], flow: Tensor | None) -> tuple[Tensor, list]:
        """The reference feature warped to this frame, and the states for the next one."""
        if len(states) != self.num_states:
            raise ValueError(f"Accel takes {self.num_states} state tensor(s), got {len(states)}")
        if self.flow_net is not None:
            if flow is not None:
                raise ValueError("give `flow` exactly when the model has no flow net")
            current = _pooled(image)
            warped = warp(states[0], self.flow_net(states[1], current))
            return warped, [warped, current]
        if flow is None:
            raise ValueError("give `flow` exactly when the model has no flow net")
        warped = warp(states[0], flow)
        return warped, [warped]

    def fuse(self, reference_logits: Tensor, update_logits: Tensor) -> Tensor:
        """Score fusion: a 1x1 conv over the stacked score maps."""
        return self.fusion(torch.cat([reference_logits, update_logits], dim=1))

    def flow_of(self, previous: Tensor, image: Tensor) -> Tensor:
        """The flow net's backward flow from `image` to `previous` (full frames), at stride 8."""
        if self.flow_net is None:
            raise ValueError("this Accel model has no flow net: its flow is an input")
        return self.flow_net(_pooled(previous), _pooled(image))

    def clip_logits(self, frames: Tensor, flows: Tensor | None, offset: int) -> Tensor:
        """Logits of the last of `frames` [N, L, 3, H, W] when the keyframe is `offset` frames before it (the
        paper's training forward, section 3.4): reference branch on frame L-1-offset, the state warped by
        each following flow (`flows` [N, L-1, 2, h, w], frame j+1 -> j), update branch and fusion on the last.
        The frames before the keyframe are not read. Equal to streaming those frames (tests hold it)."""
        last = frames.shape[1] - 1
        key = last - offset
        if offset == 0:
            return self.keyframe(frames[:, key])[0]
        features = self.reference_features(frames[:, key])
        if self.flow_net is not None:
            for j in range(key + 1, last):
                features = warp(features, self.flow_of(frames[:, j - 1], frames[:, j]))
            return self(frames[:, last], *self.keyframe_states(features, frames[:, last - 1]))[0]
        if flows is None:
            raise ValueError("give `flows` when the model has no flow net")
        for j in range(key + 1, last):
            features = warp(features, flows[:, j - 1])
        states = self.keyframe_states(features, frames[:, last - 1])
        return self(frames[:, last], *states, flow=flows[:, last - 1])[0]


def _pooled(image: Tensor) -> Tensor:
    return F.avg_pool2d(image, FLOW_NET_STRIDE)
