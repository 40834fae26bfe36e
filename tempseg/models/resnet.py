"""ResNet encoder with torchvision's module names, so torchvision state dicts load by key.

Differences from torchvision, all opt-in: a width multiplier (scaled-down variants) and a
widened input to the first block of a stage (a temporal connection merged by concat).
"""

from __future__ import annotations

from torch import Tensor, nn


def scaled_width(channels: int, width: float, divisor: int = 8) -> int:
    """Channels after width scaling, rounded to a multiple of `divisor` (tensor-core friendly)."""
    return max(divisor, round(channels * width / divisor) * divisor)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (ResNet18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, stride on the 3x3 (torchvision's ResNet v1.5; ResNet50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """The five ResBlocks of a ResNet (stem, layer1..layer4), without pooling head or fc.

    `stage_inputs` widens the input of a stage's first block (index 0 = layer1), which is how
    a concat merge at the end of the previous ResBlock enters the network.
    """

    def __init__(self, depth: int, *, width: float = 1.0, stage_inputs: dict[int, int] | None = None) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(BLOCKS)}")
        block, layers = BLOCKS[depth]
        stage_inputs = stage_inputs or {}
        self.stem_channels = scaled_width(64, width)
        self.planes = [scaled_width(c, width) for c in (64, 128, 256, 512)]
        self.out_channels = [self.stem_channels] + [p * block.expansion for p in self.planes]
        self.conv1 = nn.Conv2d(3, self.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for index, (planes, blocks) in enumerate(zip(self.planes, layers, strict=True)):
            in_planes = stage_inputs.get(index, self.out_channels[index])
            stride = 1 if index == 0 else 2
            stages.append(_make_layer(block, in_planes, planes, blocks, stride))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        _init_weights(self)

    def stem(self, image: Tensor) -> Tensor:
        """ResBlock 1 (paper position 1): stride 2."""
        return self.relu(self.bn1(self.conv1(image)))


def _make_layer(
    block: type[BasicBlock] | type[Bottleneck], in_planes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(in_planes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
        )
    layers = [block(in_planes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Zero the last BN of each residual branch: blocks start as identities (torchvision's
    # zero_init_residual), which trains from scratch faster on small budgets.
    for m in module.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
