"""Model names as one grammar: a name parses into the architecture it means.

    fcresnet{18|34|50}[x{0.75|0.5|0.25}][_t{out}{in}[k{kernel}][_add] | _lma{S}r{R}[p{position}]
                                        | _accel{depth}[x{width}][_flownet]][+tc][+kd]

e.g. `fcresnet18`, `fcresnet18_t66` (connection 6-6, concat, 1x1 temporal conv), `fcresnet18_t55_add`,
`fcresnet18_t66k3` (3x3 temporal conv), `fcresnet18x0.5_t66`; `fcresnet18_lma3r4` (local memory attention,
LMANet: S = 3 past frames, window radius 4, at the stride-16 encoder output; `p5` moves it to stride 32);
`fcresnet18x0.5_accel34` (Accel: update network fcresnet18x0.5 on every frame, reference fcresnet34 on
keyframes, flow an input; `_flownet` computes the flow in the graph). `list_models()` enumerates the standard
zoo (every depth, width, connection and merge with the 1x1 conv, the memory lma3r4, and the Accel pairs of
fcresnet18x0.5 with fcresnet34) for listings and tests; the grammar takes any S and R.

A `+tag` names a training variant of the same architecture: `fcresnet18+tc` is fcresnet18 trained with
ETC's temporal-consistency loss, `+kd` with ETC's distillation from a teacher (train/config.py
TAG_OVERRIDES). Its graph is fcresnet18's; its runs, reports and compare rows carry the full name.
"""

from __future__ import annotations

import difflib
import fnmatch
import re

from tempseg.models.accel import Accel
from tempseg.models.fcresnet import FCResNet, FCResNetConfig
from tempseg.models.memory import MemoryAttention
from tempseg.models.temporal import POSITIONS, FeedbackConnectionError, KeyframeWarp, TemporalConnection

WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (18, 34, 50)
NAME_PATTERN = re.compile(
    r"^fcresnet(?P<depth>\d+)(?:x(?P<width>[0-9.]+))?"
    r"(?:_t(?P<out>\d)(?P<in>\d)(?:k(?P<kernel>\d+))?(?P<add>_add)?"
    r"|_lma(?P<frames>\d+)r(?P<radius>\d+)(?:p(?P<position>\d))?"
    r"|_accel(?P<ref_depth>\d+)(?:x(?P<ref_width>[0-9.]+))?(?P<flownet>_flownet)?)?$"
)


TRAINING_TAGS = ("tc", "kd")


class UnknownModelError(KeyError):
    """A name outside the grammar; the message says why and lists the closest names."""

    def __str__(self) -> str:
        return str(self.args[0])


def split_name(name: str) -> tuple[str, tuple[str, ...]]:
    """(architecture, training tags): `fcresnet18+tc` -> ("fcresnet18", ("tc",))."""
    architecture, *tags = name.split("+")
    for tag in tags:
        if tag not in TRAINING_TAGS:
            known = ", ".join("+" + t for t in TRAINING_TAGS)
            raise _unknown(name, f"+{tag} is not a training variant (known: {known})")
    if len(set(tags)) != len(tags):
        raise _unknown(name, "a training tag is repeated")
    return architecture, tuple(tags)


def base_model(name: str) -> str:
    """The frame-by-frame model of the same depth and width, trained without extras: the base a model is
    fine-tuned from and its control. fcresnet18x0.5_t66 -> fcresnet18x0.5, fcresnet18+tc -> fcresnet18."""
    return split_name(name)[0].split("_", 1)[0]


def reference_model(name: str) -> str | None:
    """The reference network of a keyframe model (Accel), fine-tuned from its own base beside the model's:
    fcresnet18x0.5_accel34 -> fcresnet34; None for every other model. UnknownModelError for a bad name."""
    accel = model_config(name).accel
    return None if accel is None else variant_name(accel.depth, accel.width)


def model_config(name: str, *, num_classes: int = 19) -> FCResNetConfig:
    """The architecture `name` means (training tags aside); UnknownModelError when it means none."""
    name = split_name(name)[0]
    match = NAME_PATTERN.match(name)
    if match is None:
        raise _unknown(
            name,
            "not of the form fcresnet{18|34|50}[x{width}][_t{out}{in}[k{kernel}][_add] | _lma{S}r{R}[p{pos}]"
            " | _accel{depth}[x{width}][_flownet]]",
        )
    depth, width = _backbone(name, match["depth"], match["width"])
    temporal = None
    if match["out"]:
        try:
            temporal = TemporalConnection(
                int(match["out"]),
                int(match["in"]),
                "add" if match["add"] else "concat",
                int(match["kernel"] or 1),
            )
        except ValueError as err:  # FeedbackConnectionError, positions outside 1..7, an even kernel
            raise _unknown(name, str(err)) from None
    memory = None
    if match["frames"]:
        try:
            memory = MemoryAttention(int(match["frames"]), int(match["radius"]), int(match["position"] or 4))
        except ValueError as err:  # S outside 1..8, a position that is not an encoder output
            raise _unknown(name, str(err)) from None
    accel = _keyframe_warp(name, match)
    config = FCResNetConfig(
        depth=depth, width=width, num_classes=num_classes, temporal=temporal, memory=memory, accel=accel
    )
    spelling = variant_name(depth, width, temporal, memory, accel)
    if spelling != name:  # one spelling per model: x0.50, _t66k1, _lma03r4, _lma3r4p4 are refused
        raise _unknown(name, f"write it {spelling}")
    return config


def _keyframe_warp(name: str, match: re.Match) -> KeyframeWarp | None:
    """The Accel reference branch a name asks for, or None."""
    if not match["ref_depth"]:
        return None
    depth, width = _backbone(name, match["ref_depth"], match["ref_width"], what="reference ")
    return KeyframeWarp(depth, width, "net" if match["flownet"] else "input")


def _backbone(name: str, depth_text: str, width_text: str | None, *, what: str = "") -> tuple[int, float]:
    """(depth, width) of a ResNet a name spells (`what` says which one), or UnknownModelError."""
    depth, width = int(depth_text), float(width_text or 1.0)
    if depth not in DEPTHS:
        raise _unknown(name, f"{what}depth {depth} is not one of {', '.join(map(str, DEPTHS))}")
    if width not in WIDTHS:
        raise _unknown(name, f"{what}width x{width_text} is not one of {', '.join(f'x{w:g}' for w in WIDTHS[1:])}")
    return depth, width


def build_model(name: str, *, num_classes: int = 19) -> FCResNet | Accel:
    """A fresh model of the architecture `name` means."""
    config = model_config(name, num_classes=num_classes)
    return Accel(config) if config.accel is not None else FCResNet(config)


def random_model(name: str, *, seed: int = 0) -> FCResNet | Accel:
    """A model with random weights whose BatchNorm statistics and upsamplings are not their fresh values, for
    tests and benchmarks: exported convs then have biases (a fresh model's fold to none), and the state reaches
    the labels (a fresh concat merge has zero weights on the state's channels)."""
    import torch

    torch.manual_seed(seed)
    model = build_model(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                mean, var = module.running_mean, module.running_var
                if mean is None or var is None:  # every BatchNorm of the models tracks running statistics
                    raise ValueError(f"{name}: a BatchNorm without running statistics")
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                mean.uniform_(-0.2, 0.2)
                var.uniform_(0.5, 1.5)
            if isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.add_(0.1 * torch.randn_like(module.weight))
        if isinstance(model, Accel) and model.flow_net is not None:  # a fresh flow net outputs zero flow
            model.flow_net.output_conv.weight.normal_(0.0, 0.05)
    return model


def resolve_name(name: str) -> str:
    """`name` if it is a model name; otherwise UnknownModelError with the reason and the closest names."""
    model_config(name)
    return name


def variant_name(
    depth: int,
    width: float = 1.0,
    temporal: TemporalConnection | None = None,
    memory: MemoryAttention | None = None,
    accel: KeyframeWarp | None = None,
) -> str:
    """The name of an architecture: `fcresnet18x0.5_t66`, `fcresnet18_lma3r4`, `fcresnet18x0.5_accel34`."""
    name = f"fcresnet{depth}" + ("" if width == 1.0 else f"x{width:g}")
    family = temporal or memory or accel
    return name if family is None else f"{name}_{family.tag}"


def list_models(pattern: str = "*") -> list[str]:
    """Names of the standard zoo matching a shell-style `pattern`, sorted."""
    return sorted(n for n in _zoo() if fnmatch.fnmatchcase(n, pattern))


def _zoo() -> list[str]:
    pairs = [(o, i) for o in POSITIONS for i in POSITIONS if o <= i]
    connections = [None] + [TemporalConnection(o, i, merge) for o, i in pairs for merge in ("concat", "add")]
    feedback = [variant_name(d, w, c) for d in DEPTHS for w in WIDTHS for c in connections]
    memories = [variant_name(d, w, memory=MemoryAttention(3, 4)) for d in DEPTHS for w in WIDTHS]
    accels = [variant_name(18, 0.5, accel=KeyframeWarp(34, 1.0, flow)) for flow in ("input", "net")]
    return feedback + memories + accels


def _unknown(name: str, reason: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, _zoo(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {name!r}: {reason}{hint} (`python -m tempseg.models --list` lists the zoo)"
    )


__all__ = [
    "TRAINING_TAGS",
    "FeedbackConnectionError",
    "UnknownModelError",
    "base_model",
    "build_model",
    "list_models",
    "model_config",
    "random_model",
    "reference_model",
    "resolve_name",
    "split_name",
    "variant_name",
]
