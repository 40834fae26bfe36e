"""Temporal connections ("Towards Efficient Temporal Neural Nets for Video Semantic Segmentation", section
III-B..D): where a feature of frame t-1 enters frame t.

Positions 1-5 are the outputs of the five ResBlocks (stride 2, 4, 8, 16, 32); 6 and 7 the
outputs of the first and second FCN upsampling stages (stride 16 and 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

Merge = Literal["concat", "add"]
POSITIONS = range(1, 8)
POSITION_STRIDES = {1: 2, 2: 4, 3: 8, 4: 16, 5: 32, 6: 16, 7: 8}


class FeedbackConnectionError(ValueError):
    """A connection whose `in` lies before its `out`: it would need a second set of weights."""


@dataclass(frozen=True)
class TemporalConnection:
    """One temporal connection `out-in`.

    out: position whose feature of frame t-1 is kept (1-7).
    in_: position where it is merged into frame t (1-7, >= out: feed-forward or in place).
    merge: "concat" (paper's choice; widens the consumer's input) or "add" (no extra weights).
    kernel: kernel size of the temporal conv; 1x1 reproduces the parameter deltas of the
        paper's Table III (3x3 adds 0.5M at 4-4 and 2.1M at 5-5 that the paper does not count).
    """

    out: int
    in_: int
    merge: Merge = "concat"
    kernel: int = 1

    def __post_init__(self) -> None:
        for name, pos in (("out", self.out), ("in", self.in_)):
            if pos not in POSITIONS:
                raise ValueError(f"temporal connection {name} position {pos} is not in 1..7")
        if self.out > self.in_:
            raise FeedbackConnectionError(
                f"feedback connection {self.out}-{self.in_} (out {self.out} > in {self.in_}) is not "
                "supported: the blocks between in and out would need separate weights per frame "
                "(paper III-B); use out <= in"
            )
        if self.merge not in ("concat", "add"):
            raise ValueError(f"merge must be 'concat' or 'add', not {self.merge!r}")
        if self.kernel % 2 != 1:
            raise ValueError(f"temporal kernel must be odd, got {self.kernel}")

    @property
    def tag(self) -> str:
        """Name suffix: `t66`, `t55_add`, `t66k3` (3x3 temporal conv)."""
        kernel = "" if self.kernel == 1 else f"k{self.kernel}"
        return f"t{self.out}{self.in_}{kernel}" + ("_add" if self.merge == "add" else "")


class TemporalProcessor(nn.Module):
    """The temporal processing layer: one conv that maps the feature at `out` to the shape at `in`.

    Downsampling uses the conv's stride, upsampling a bilinear resize after the conv (the conv
    runs at the lower resolution, and ONNX Resize is supported by every TensorRT version).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, scale: float) -> None:
        super().__init__()
        stride = int(1 / scale) if scale < 1 else 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)
        self.upsample = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False) if scale > 1 else None

    def forward(self, feature: Tensor) -> Tensor:
        out = self.conv(feature)
        return out if self.upsample is None else self.upsample(out)


FLOW_SOURCES = ("input", "net")  # where the update graph's flow comes from: a graph input (host), or a flow net


@dataclass(frozen=True)
class KeyframeWarp:
    """Accel's reference branch of one variant: `_accel{depth}[x{width}][_flownet]` (models/accel.py).

    depth, width: the reference network run on keyframes (FCResNet{depth}, width multiplier).
    flow: "input" (the update graph takes the flow as an input: OpenCV DIS on the host, or a hardware
        optical-flow engine) or "net" (a small flow network inside the update graph; `_flownet`).
    """

    depth: int
    width: float = 1.0
    flow: str = "input"

    def __post_init__(self) -> None:
        if self.flow not in FLOW_SOURCES:
            raise ValueError(f"flow source {self.flow!r} is not one of {', '.join(FLOW_SOURCES)}")

    @property
    def tag(self) -> str:
        """Name suffix: `accel34`, `accel34_flownet`."""
        width = "" if self.width == 1.0 else f"x{self.width:g}"
        return f"accel{self.depth}{width}" + ("_flownet" if self.flow == "net" else "")
