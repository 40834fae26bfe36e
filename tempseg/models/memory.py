"""Local memory attention (LMANet, "Local Memory Attention for Fast Video Semantic Segmentation"): a memory of
the last S frames' keys and values, read with local attention and fused with the current frame through gates.

The memory is the model's state, two tensors a runtime carries between frames like any other:

    state 0, keys:   [N, S * (D_K + 1), h, w]  slot s = frame t-1-s: D_K key channels, then a validity plane
    state 1, values: [N, S * D_V, h, w]

A zeroed state is an empty memory: the validity plane of an empty slot is 0, its logits get -MASK and its
attention weights are multiplied by 0, so the first frames after a reset attend to a shorter memory (or,
with none filled, read zeros) instead of frames of zeros. Window positions outside the feature map are
masked the same way (the key state is zero-padded, validity included). Each frame writes its own
(key, value) pair into slot 0 and shifts the rest by one: `state_out` is the memory the next frame reads.

Differences from the paper, and why:
- 1x1 convolutions for keys, values and the four fusion branches (the paper's ERFNet code uses 3x3): at
  stride 16 of fcresnet18 eight 3x3 layers would add about 60 % to the per-frame compute, 1x1 about 6 %.
- D_V = the feature's width and an identity start: the query value and E_Q begin as identities, E_M at
  zero and the query gate near open, so the model begins as the trained single-frame base (as t66 does)
  and the CPU budget is spent learning to read the memory, not to relearn the decoder's input.
- No BatchNorm + ReLU after the fusion: the fused feature feeds the base's next block directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_FRAMES = 8
MEMORY_POSITIONS = (3, 4, 5)  # encoder outputs at stride 8, 16, 32 (models/temporal.py positions)
DEFAULT_POSITION = 4
MASK = 1.0e4  # added to the logits of empty slots and of window positions outside the map; fits FP16
QUERY_GATE_BIAS = 4.0  # sigmoid(4) = 0.982: the query branch starts nearly open
CORRELATIONS = ("slice", "onehot")


@dataclass(frozen=True)
class MemoryAttention:
    """The memory-attention module of one variant: `_lma{frames}r{radius}[p{position}]`.

    frames: S, past frames in the memory (1..MAX_FRAMES).
    radius: r, the local window is (2r+1)^2 positions of the feature map around each query position.
    position: the encoder output the module reads and replaces (3, 4 or 5: stride 8, 16 or 32).
    """

    frames: int
    radius: int
    position: int = DEFAULT_POSITION

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= MAX_FRAMES:
            raise ValueError(f"memory frames S={self.frames} is outside 1..{MAX_FRAMES}")
        if self.radius < 0:
            raise ValueError(f"memory radius r={self.radius} is negative (valid: 0 and up)")
        if self.position not in MEMORY_POSITIONS:
            raise ValueError(f"memory position {self.position} is not an encoder output (valid: 3, 4, 5)")

    @property
    def tag(self) -> str:
        """Name suffix: `lma3r4`, `lma3r2p5`."""
        place = "" if self.position == DEFAULT_POSITION else f"p{self.position}"
        return f"lma{self.frames}r{self.radius}{place}"


def key_channels(feature_channels: int) -> int:
    """D_K: much narrower than the values (the paper's ERFNet: 16 keys for 64 values)."""
    return max(8, feature_channels // 8)


def check_radius(config: MemoryAttention, height: int, width: int, stride: int) -> None:
    """A window wider than the feature map reads only padding: refuse it with the valid range."""
    h, w = height // stride, width // stride
    largest = min(h, w) - 1
    if config.radius > largest:
        raise ValueError(
            f"memory radius r={config.radius} exceeds the {h}x{w} feature map at stride {stride} of a "
            f"{height}x{width} input (valid: 0..{largest})"
        )


class LocalMemoryAttention(nn.Module):
    """Keys and values for memory and query, the local memory read (eqs. 3-5) and the gated fusion (eq. 6)."""

    def __init__(self, config: MemoryAttention, channels: int) -> None:
        super().__init__()
        self.config = config
        self.key_dim = key_channels(channels)
        self.value_dim = channels
        self.correlation = "slice"  # export form of the key matching; bench/memory_attention.py measures both
        self.key_memory = nn.Conv2d(channels, self.key_dim, 1)
        self.value_memory = nn.Conv2d(channels, channels, 1)
        self.key_query = nn.Conv2d(channels, self.key_dim, 1)
        self.value_query = nn.Conv2d(channels, channels, 1)
        self.embed_query = nn.Conv2d(channels, channels, 1)  # E_Q
        self.embed_memory = nn.Conv2d(channels, channels, 1)  # E_M
        self.gate_query = nn.Conv2d(2 * channels, channels, 1)  # A_Q
        self.gate_memory = nn.Conv2d(2 * channels, channels, 1)  # A_M
        self._identity_start()

    def _identity_start(self) -> None:
        # Every conv here is made with a bias; torch types it Optional.
        with torch.no_grad():
            for conv in (self.value_query, self.embed_query):
                nn.init.dirac_(conv.weight)
                nn.init.zeros_(cast(Tensor, conv.bias))
            for conv in (self.embed_memory, self.gate_query, self.gate_memory):
                nn.init.normal_(conv.weight, std=0.01 if conv is not self.embed_memory else 0.0)
                nn.init.zeros_(cast(Tensor, conv.bias))
            cast(Tensor, self.gate_query.bias).fill_(QUERY_GATE_BIAS)

    @property
    def state_channels(self) -> tuple[int, int]:
        """Channels of the key state (keys + validity plane per slot) and of the value state."""
        s = self.config.frames
        return s * (self.key_dim + 1), s * self.value_dim

    def memory_pair(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """This frame's slot: keys with their validity plane (ones), and values."""
        keys = self.key_memory(feature)
        return torch.cat([keys, torch.ones_like(keys[:, :1])], dim=1), self.value_memory(feature)

    def shift(self, keys: Tensor, values: Tensor, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The memory after this frame: its pair in slot 0, the oldest slot dropped."""
        new_keys, new_values = pair
        kept_keys = keys[:, : keys.shape[1] - new_keys.shape[1]]
        kept_values = values[:, : values.shape[1] - new_values.shape[1]]
        return torch.cat([new_keys, kept_keys], dim=1), torch.cat([new_values, kept_values], dim=1)

    def forward(self, feature: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(fused feature, next keys, next values) for one frame and the memory of the frames before it."""
        self.check_state(keys, values)
        fused = self.fuse(feature, self.read(feature, keys, values))
        next_keys, next_values = self.shift(keys, values, self.memory_pair(feature))
        return fused, next_keys, next_values

    def check_state(self, keys: Tensor, values: Tensor) -> None:
        want_keys, want_values = self.state_channels
        for name, tensor, want, per_slot in (
            ("keys", keys, want_keys, self.key_dim + 1),
            ("values", values, want_values, self.value_dim),
        ):
            if tensor.shape[1] != want:
                raise ValueError(
                    f"memory {name} state has {tensor.shape[1]} channels, not S x {per_slot} = {want} "
                    f"(S={self.config.frames} frames of {per_slot})"
                )

    def read(self, feature: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Eqs. 3-5: softmax over all S x window positions of the query-key products; the weighted values."""
        logits, valid = self.logits(self.key_query(feature), keys)  # [N, S, W2, h, w] each
        weights = logits.flatten(1, 2).softmax(dim=1).unflatten(1, logits.shape[1:3])
        # Times the validity: exactly 0 on empty slots, also when every slot is empty (the softmax of all -MASK
        # is uniform): an empty memory reads zeros, whatever its channels hold.
        return aggregate(weights * valid, values, self.config.radius)

    def logits(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled query-key products with empty slots and outside positions at -MASK, and the validity of each
        (slot, offset, position): both [N, S, W2, h, w]."""
        s, d = self.config.frames, self.key_dim
        slots = keys.unflatten(1, (s, d + 1))
        memory_keys = slots[:, :, :d].flatten(1, 2)
        r = self.config.radius
        valid = shifted(slots[:, :, d], r)  # [N, S, W2, h, w]: 0 on empty slots and outside the map
        corr = local_correlation(query, memory_keys, r, form=self.correlation) / math.sqrt(d)
        return corr + (valid - 1.0) * MASK, valid

    def fuse(self, feature: Tensor, memory: Tensor) -> Tensor:
        """Eq. 6: sigma(A_Q(V_Q, V_M)) * E_Q(V_Q) + sigma(A_M(V_Q, V_M)) * E_M(V_M)."""
        query_value = self.value_query(feature)
        both = torch.cat([query_value, memory], dim=1)
        return torch.sigmoid(self.gate_query(both)) * self.embed_query(query_value) + torch.sigmoid(
            self.gate_memory(both)
        ) * self.embed_memory(memory)


def displacements(radius: int) -> list[tuple[int, int]]:
    """Window offsets (dy, dx), row-major: the order of the W2 axis everywhere."""
    span = range(-radius, radius + 1)
    return [(dy, dx) for dy in span for dx in span]


def shifted(maps: Tensor, radius: int) -> Tensor:
    """[N, C, h, w] -> [N, C, W2, h, w]: out[..., k, i, j] = maps[..., i + dy_k, j + dx_k], zero outside.

    Static pads and slices: operators every TensorRT ONNX parser takes, no plugin."""
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (radius, radius, radius, radius))
    r = radius
    return torch.stack([padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in displacements(r)], dim=2)


def local_correlation(query: Tensor, memory_keys: Tensor, radius: int, *, form: str = "slice") -> Tensor:
    """C[n, s, k, i, j] = sum_c memory_keys[n, s*D + c, i + dy_k, j + dx_k] * query[n, c, i, j].

    query: [N, D, h, w]; memory_keys: [N, S*D, h, w]; returns [N, S, W2, h, w]. `form` picks how the shifted
    keys are made in the exported graph: "slice" (pad + static slices) or "onehot" (a grouped convolution
    with one-hot kernels, one output channel per channel and offset)."""
    d, h, w = query.shape[1:]
    s = memory_keys.shape[1] // d
    if form == "onehot":
        moved = onehot_shift(memory_keys, radius).unflatten(1, (s, d))  # [N, S, D, W2, h, w]
        return (moved * query[:, None, :, None]).sum(dim=2)
    if form != "slice":
        raise ValueError(f"correlation form {form!r} is not one of {', '.join(CORRELATIONS)}")
    padded = F.pad(memory_keys, (radius, radius, radius, radius))
    r = radius
    products = [
        (padded[..., r + dy : r + dy + h, r + dx : r + dx + w].unflatten(1, (s, d)) * query[:, None]).sum(dim=2)
        for dy, dx in displacements(r)
    ]
    return torch.stack(products, dim=2)


def onehot_shift(maps: Tensor, radius: int) -> Tensor:
    """`shifted` as one depthwise convolution with (2r+1)^2 one-hot kernels per channel."""
    c = maps.shape[1]
    size = 2 * radius + 1
    kernels = torch.zeros(size * size, 1, size, size, dtype=maps.dtype, device=maps.device)
    for k, (dy, dx) in enumerate(displacements(radius)):
        kernels[k, 0, radius + dy, radius + dx] = 1.0
    out = F.conv2d(maps, kernels.repeat(c, 1, 1, 1), padding=radius, groups=c)  # [N, C*W2, h, w]
    return out.unflatten(1, (c, size * size))


def aggregate(weights: Tensor, values: Tensor, radius: int) -> Tensor:
    """Eq. 5: V[n, :, i, j] = sum_{s,k} weights[n, s, k, i, j] * values_s[n, :, i + dy_k, j + dx_k].

    One window offset at a time (pad + slice, multiply, accumulate): the shifted values of all offsets at
    once would be S x W2 times the value state (127 MB for S=3, r=4 at stride 16 of a 256x512 frame)."""
    s, h, w = weights.shape[1], weights.shape[3], weights.shape[4]
    slots = values.unflatten(1, (s, values.shape[1] // s))  # [N, S, D_V, h, w]
    padded = F.pad(slots.flatten(1, 2), (radius, radius, radius, radius)).unflatten(1, (s, -1))
    r = radius
    out: Tensor | None = None
    for k, (dy, dx) in enumerate(displacements(r)):
        window = padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
        term = (window * weights[:, :, k, None]).sum(dim=1)
        out = term if out is None else out + term
    if out is None:  # no window offsets: a negative radius
        raise ValueError(f"memory radius r={radius} is negative (valid: 0 and up)")
    return out
