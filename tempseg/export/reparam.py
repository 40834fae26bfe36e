"""Deploy-time reparametrization: FCN8s's learned upsamplings as sub-pixel convolutions.

A ConvTranspose2d with kernel 2s, stride s and padding s/2 computes, for each of the s x s output
phases, a 2 x 2 window of the input: the same function as a 3 x 3 Conv2d to C*s*s channels (the
taps a phase does not use are zero) followed by PixelShuffle(s) (ONNX DepthToSpace). ONNX Runtime's
CPU ConvTranspose is slow next to its Conv: measured on fcresnet18_t66 at 256x512, 2 threads, the
transposed convolutions took 17 of 79 ms; the final x8 layer alone 13.5 ms as ConvTranspose and
7.6 ms as Conv + DepthToSpace. Training keeps ConvTranspose (the paper's model and parameter
count); only the exported graph changes, and the streaming parity check compares it with the
trained model.
"""

from __future__ import annotations

import copy
from typing import TypeVar, cast

import torch
from torch import Tensor, nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class SubPixelUpsample(nn.Module):
    """The function of ConvTranspose2d(k=2s, stride=s, padding=s/2) as Conv2d(3x3) + PixelShuffle(s)."""

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        s = deconv.stride[0]
        if deconv.kernel_size != (2 * s, 2 * s) or deconv.stride != (s, s) or deconv.padding != (s // 2, s // 2):
            raise ValueError(f"not a kernel-2s, stride-s, padding-s/2 transposed convolution: {deconv}")
        if s % 2 or deconv.groups != 1 or deconv.dilation != (1, 1) or deconv.output_padding != (0, 0):
            raise ValueError(f"unsupported transposed convolution: {deconv}")
        c_in, c_out = deconv.in_channels, deconv.out_channels
        self.conv = nn.Conv2d(c_in, c_out * s * s, 3, padding=1, bias=deconv.bias is not None)
        self.shuffle = nn.PixelShuffle(s)
        with torch.no_grad():
            self.conv.weight.copy_(_phase_weights(deconv.weight, s))
            if deconv.bias is not None:
                bias = cast(Tensor, self.conv.bias)  # made with a bias just above; torch types it Optional
                bias.copy_(deconv.bias.repeat_interleave(s * s))

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))

    def labels(self, x: Tensor) -> Tensor:
        """argmax over classes of forward(x), int32 [N, H*s, W*s], without the full-size logits.

        The argmax runs per phase at the low resolution; only the 1-channel label map is then
        rearranged (reshape + transpose), instead of shuffling C full-resolution channels.
        """
        s = self.shuffle.upscale_factor
        n, _, h, w = x.shape
        phases = self.conv(x).unflatten(1, (-1, s, s))  # [N, C, s, s, h, w]
        best = phases.argmax(1).to(torch.int32)  # [N, s(ry), s(rx), h, w]
        return best.permute(0, 3, 1, 4, 2).reshape(n, h * s, w * s)


def _phase_weights(weight: Tensor, s: int) -> Tensor:
    """[C_in, C_out, 2s, 2s] transposed-conv kernel -> [C_out*s*s, C_in, 3, 3] conv kernel.

    Output pixel s*q + r of the transposed conv reads input q + d (d in -1, 0, 1) through kernel
    tap k = r + s/2 - s*d when 0 <= k < 2s; conv tap t = d + 1; PixelShuffle puts channel
    c*s*s + ry*s + rx at phase (ry, rx) of channel c.
    """
    c_in, c_out = weight.shape[:2]
    out = weight.new_zeros(c_out, s, s, c_in, 3, 3)
    taps = [(r, t, r + s // 2 - s * (t - 1)) for r in range(s) for t in range(3)]
    taps = [(r, t, k) for r, t, k in taps if 0 <= k < 2 * s]
    for ry, ty, ky in taps:
        for rx, tx, kx in taps:
            out[:, ry, rx, :, ty, tx] = weight[:, :, ky, kx].t()
    return out.reshape(c_out * s * s, c_in, 3, 3)


def deploy_model(model: ModuleT) -> ModuleT:
    """A copy of `model` with every eligible ConvTranspose2d replaced by its SubPixelUpsample."""
    deployed = copy.deepcopy(model).eval()
    for name, module in list(deployed.named_modules()):
        if isinstance(module, nn.ConvTranspose2d):
            parent_name, _, attr = name.rpartition(".")
            parent = deployed.get_submodule(parent_name) if parent_name else deployed
            setattr(parent, attr, SubPixelUpsample(module))
    return deployed


def fold_score_fusion(
    reference_head: nn.ConvTranspose2d, update_head: nn.ConvTranspose2d, fusion: nn.Conv2d
) -> nn.ConvTranspose2d:
    """Accel's two task heads and its score fusion as one transposed convolution of the stacked stride-8 score
    maps: fusion(cat[up_R(a), up_U(b)]) = up_V(cat[a, b]) + bias, exactly, since both heads are linear.

    The deployed update graph then upsamples once (and takes the argmax per phase, SubPixelUpsample.labels)
    instead of writing two C x H x W score maps and a third fused one.
    """
    if fusion.bias is None:
        raise ValueError(f"the score fusion has no bias: {fusion}")
    c = fusion.out_channels
    mix = fusion.weight.detach()[:, :, 0, 0]  # [C, 2C]
    folded = nn.ConvTranspose2d(
        2 * c,
        c,
        _pair(reference_head.kernel_size, "kernel size"),
        stride=_pair(reference_head.stride, "stride"),
        padding=_pair(reference_head.padding, "padding"),
        bias=True,
    )
    with torch.no_grad():
        # weight[i, o] of a transposed conv maps input channel i to output channel o
        folded.weight.copy_(
            torch.cat(
                [
                    torch.einsum("iokl,co->ickl", reference_head.weight, mix[:, :c]),
                    torch.einsum("iokl,co->ickl", update_head.weight, mix[:, c:]),
                ]
            )
        )
        cast(Tensor, folded.bias).copy_(fusion.bias)  # made with bias=True; torch types it Optional
    return folded


def _pair(value: tuple[int, ...] | str, what: str) -> tuple[int, int]:
    """A 2-d convolution's (h, w) geometry, which torch stores as a pair but types as `tuple[int, ...] | str`."""
    if isinstance(value, str) or len(value) != 2:
        raise ValueError(f"not a 2-d {what}: {value!r}")
    return value[0], value[1]
