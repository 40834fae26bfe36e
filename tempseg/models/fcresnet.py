"""FCResNet: an FCN8s decoder on a ResNet encoder, with an optional temporal connection.

The models of Yawei Liu, "Towards Efficient Temporal Neural Nets for Video Semantic Segmentation" (Eindhoven
University of Technology): "the paper" in this package.

Forward contract shared by every variant: `model(image, *states) -> (logits, *next_states)`.
Two temporal families share it (the design note's "one contract"):
- feature feedback (`_t66`): the state is the processed feature of the previous frame (already at the
  shape of the `in` position). Because out <= in, the next state is taken before the merge, so it never
  depends on the state itself: streaming frame by frame is exactly the paper's (previous frame, current
  frame) scheme.
- memory attention (`_lma3r4`, models/memory.py): two states, the keys and values of the last S frames;
  the module replaces the encoder output at its position, and each frame shifts the memory by one.
A frame-by-frame model has no state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import Tensor, nn

from tempseg.models.memory import LocalMemoryAttention, MemoryAttention, check_radius
from tempseg.models.resnet import ResNet
from tempseg.models.temporal import POSITION_STRIDES, KeyframeWarp, TemporalConnection, TemporalProcessor

NETWORK_STRIDE = 32


@dataclass(frozen=True)
class FCResNetConfig:
    """Architecture of one variant.

    depth: ResNet depth, 18, 34 or 50.
    width: channel multiplier of the encoder (0.5 halves every ResNet width).
    num_classes: output classes (19 Cityscapes train ids).
    temporal: the temporal connection (feature feedback), or None.
    memory: the memory-attention module, or None.
    accel: Accel's reference branch (models/accel.py), or None; this config is then the update network's.
    A model has at most one temporal family.
    """

    depth: int
    width: float = 1.0
    num_classes: int = 19
    temporal: TemporalConnection | None = None
    memory: MemoryAttention | None = None
    accel: KeyframeWarp | None = None

    def __post_init__(self) -> None:
        if sum(f is not None for f in (self.temporal, self.memory, self.accel)) > 1:
            raise ValueError("a model has one temporal family: a connection, a memory or keyframes")

    @property
    def stateful(self) -> bool:
        """True for a temporal model: it carries a state from frame to frame."""
        return self.temporal is not None or self.memory is not None or self.accel is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FCResNetConfig:
        temporal, memory, accel = data.get("temporal"), data.get("memory"), data.get("accel")
        return cls(
            depth=int(data["depth"]),
            width=float(data["width"]),
            num_classes=int(data["num_classes"]),
            temporal=None if temporal is None else TemporalConnection(**temporal),
            memory=None if memory is None else MemoryAttention(**memory),
            accel=None if accel is None else KeyframeWarp(**accel),
        )


def bilinear_kernel(channels: int, kernel: int) -> Tensor:
    """Per-channel bilinear upsampling weights for a ConvTranspose2d (FCN's initialisation)."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    grid = torch.arange(kernel, dtype=torch.float32)
    filt1d = 1 - (grid - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt1d[:, None] * filt1d[None, :]
    return weight


def upsampler(in_channels: int, out_channels: int, factor: int) -> nn.ConvTranspose2d:
    """Learned x`factor` upsampling (kernel 2*factor, exact output size, bilinear start)."""
    layer = nn.ConvTranspose2d(in_channels, out_channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        shared = min(in_channels, out_channels)
        layer.weight[:shared, :shared] = bilinear_kernel(shared, 2 * factor)
    return layer


class FCResNet(nn.Module):
    """FCN8s on ResNet18/34/50. Positions 1-7 as in the paper; see models/temporal.py."""

    def __init__(self, config: FCResNetConfig) -> None:
        super().__init__()
        self.config = config
        conn = config.temporal
        probe = ResNet(config.depth, width=config.width)
        channels = {pos: c for pos, c in zip(range(1, 6), probe.out_channels, strict=True)}
        channels[6] = channels[7] = config.num_classes
        self.position_channels = channels
        merged = dict(channels)
        if conn is not None and conn.merge == "concat":
            merged[conn.in_] = 2 * channels[conn.in_]
        stage_inputs = {i: merged[i + 1] for i in range(4) if merged[i + 1] != channels[i + 1]}
        self.backbone = ResNet(config.depth, width=config.width, stage_inputs=stage_inputs)
        c = config.num_classes
        self.score_fr = nn.Conv2d(merged[5], c, 1)
        self.score_pool4 = nn.Conv2d(merged[4], c, 1)
        self.score_pool3 = nn.Conv2d(merged[3], c, 1)
        self.upscore2 = upsampler(c, c, 2)
        self.upscore_pool4 = upsampler(merged[6], c, 2)
        self.upscore8 = upsampler(merged[7], c, 8)
        for score in (self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.normal_(score.weight, std=0.01)
            nn.init.zeros_(cast(Tensor, score.bias))  # made with a bias; torch types it Optional
        self.temporal: TemporalProcessor | None = None
        if conn is not None:
            scale = POSITION_STRIDES[conn.out] / POSITION_STRIDES[conn.in_]
            self.temporal = TemporalProcessor(channels[conn.out], channels[conn.in_], kernel=conn.kernel, scale=scale)
            if conn.merge == "add":
                # Start as the frame-by-frame model: the added temporal term is zero at first.
                nn.init.zeros_(self.temporal.conv.weight)
            nn.init.zeros_(cast(Tensor, self.temporal.conv.bias))  # made with a bias; torch types it Optional
        self.memory: LocalMemoryAttention | None = None
        if config.memory is not None:
            self.memory = LocalMemoryAttention(config.memory, channels[config.memory.position])

    @property
    def num_states(self) -> int:
        if self.config.memory is not None:
            return 2
        return 0 if self.config.temporal is None else 1

    def state_shapes(self, height: int, width: int, batch: int = 1) -> list[tuple[int, ...]]:
        """Shapes of the state tensors for an input of `height` x `width` pixels."""
        check_model_input(self.config, height, width)
        if self.memory is not None:
            stride = POSITION_STRIDES[self.memory.config.position]
            keys, values = self.memory.state_channels
            return [(batch, c, height // stride, width // stride) for c in (keys, values)]
        conn = self.config.temporal
        if conn is None:
            return []
        stride = POSITION_STRIDES[conn.in_]
        return [(batch, self.position_channels[conn.in_], height // stride, width // stride)]

    def initial_states(self, image: Tensor) -> list[Tensor]:
        """Zero states for the first frame of a stream, matching `image`'s batch, device, dtype."""
        shapes = self.state_shapes(image.shape[-2], image.shape[-1], batch=image.shape[0])
        return [image.new_zeros(shape) for shape in shapes]

    def forward(self, image: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        features, next_states = self.forward_features(image, *states)
        return (self.upscore8(features), *next_states)

    def forward_features(self, image: Tensor, *states: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The feature at position 7 (stride 8, before the last upsampling) and the next states."""
        conn = self.config.temporal
        if len(states) != self.num_states:
            raise ValueError(f"{type(self).__name__} takes {self.num_states} state tensor(s), got {len(states)}")
        features: dict[int, Tensor] = {}
        next_states: list[Tensor] = []
        x = image
        for pos in range(1, 8):
            x = self.stage(pos, x, features)
            if conn is not None and pos == conn.out:
                next_states.append(self._feedback_state(x))
            if conn is not None and pos == conn.in_:
                x = self.merge(x, states[0])
            if self.memory is not None and pos == self.memory.config.position:
                x, *next_states = self.memory(x, *states)
            features[pos] = x
        return x, next_states

    def next_states(self, image: Tensor, *states: Tensor) -> list[Tensor]:
        """Only the states that `image` hands to the next frame, given the states it received (runs up to the
        position where the next state is taken; a memory only adds this frame's pair and shifts)."""
        conn, memory = self.config.temporal, self.memory
        if memory is not None:
            x = self.encode(image, memory.config.position)
            memory.check_state(*states)
            keys, values = states
            return list(memory.shift(keys, values, memory.memory_pair(x)))
        if conn is None:
            return []
        return [self._feedback_state(self.encode(image, conn.out))]

    def _feedback_state(self, feature: Tensor) -> Tensor:
        """The next state of a feedback connection, from the feature at its `out` position."""
        if self.temporal is None:
            raise ValueError(f"{type(self).__name__} has no feedback connection")
        return self.temporal(feature)

    def clip_states(self, frames: Tensor, *, encoder_grad: bool = True) -> list[Tensor]:
        """The states after streaming `frames` [N, L, 3, H, W] from the zero state, in one batched pass: a
        feedback state depends on the last frame only; a memory holds the pairs of the last S frames, built
        here by concatenation (the stream builds it by shifting; tests hold that both agree).

        `encoder_grad=False` runs a memory's encoder without autograd (its key and value convs keep theirs):
        training then backpropagates through one encoder pass per clip instead of S+1."""
        n, length = frames.shape[:2]
        empty = self.initial_states(frames[:, 0])
        if self.memory is None or length == 0:
            return self.next_states(frames[:, -1], *empty) if length else empty
        recent = frames[:, -self.memory.config.frames :].flip(1)  # slot 0 = the newest frame
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            x = self.encode(recent.flatten(0, 1), self.memory.config.position)
        keys, values = (t.unflatten(0, (n, recent.shape[1])).flatten(1, 2) for t in self.memory.memory_pair(x))
        return [torch.cat([new, old[:, new.shape[1] :]], dim=1) for new, old in zip((keys, values), empty, strict=True)]

    def encode(self, image: Tensor, position: int) -> Tensor:
        """The feature at `position` (1-7), computed without any state: the stages before a merge or a memory."""
        features: dict[int, Tensor] = {}
        x = image
        for pos in range(1, position + 1):
            x = self.stage(pos, x, features)
            features[pos] = x
        return x

    def module_parameters(self) -> list[nn.Parameter]:
        """Parameters of a temporal module that starts untrained and is warmed up alone first (paper of LMANet,
        III-E): the memory attention. A feedback connection starts as the base exactly and needs none."""
        return list(self.memory.parameters()) if self.memory is not None else []

    def stage(self, pos: int, x: Tensor, features: dict[int, Tensor]) -> Tensor:
        """Compute the feature at `pos` from the one before it (and the FCN skips)."""
        b = self.backbone
        if pos == 1:
            return b.stem(x)
        if pos == 2:
            return b.layer1(b.maxpool(x))
        if pos in (3, 4, 5):
            return (b.layer2, b.layer3, b.layer4)[pos - 3](x)
        if pos == 6:
            return self.upscore2(self.score_fr(x)) + self.score_pool4(features[4])
        return self.upscore_pool4(x) + self.score_pool3(features[3])

    def merge(self, current: Tensor, previous: Tensor) -> Tensor:
        conn = self.config.temporal
        if conn is None:
            raise ValueError(f"{type(self).__name__} has no feedback connection to merge")
        if conn.merge == "concat":
            return torch.cat([current, previous], dim=1)
        return current + previous


def check_model_input(config: FCResNetConfig, height: int, width: int) -> None:
    """ValueError unless `config` runs on `height` x `width` frames: the stride, and a memory's window."""
    check_input_size(height, width)
    if config.memory is not None:
        check_radius(config.memory, height, width, POSITION_STRIDES[config.memory.position])


def check_input_size(height: int, width: int) -> None:
    """Refuse sizes the FCN8s skips cannot align: both sides must divide by the stride 32."""
    bad = [(name, v) for name, v in (("height", height), ("width", width)) if v <= 0 or v % NETWORK_STRIDE]
    if bad:
        hints = ", ".join(f"{name} {v}: try {nearest_valid_sizes(v)}" for name, v in bad)
        raise ValueError(
            f"input size {height}x{width} is not divisible by the network stride {NETWORK_STRIDE} ({hints})"
        )


def nearest_valid_sizes(value: int) -> str:
    lower = max(NETWORK_STRIDE, value // NETWORK_STRIDE * NETWORK_STRIDE)
    upper = lower + NETWORK_STRIDE if lower < value else lower
    return str(lower) if lower == upper else f"{lower} or {upper}"
