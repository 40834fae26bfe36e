"""Registry of named model variants: one decorator, typed builders, `list_models()`.

Names: `fcresnet{18,34,50}[x{width}][_t{out}{in}[_add]]`, e.g. `fcresnet18_t66`,
`fcresnet18_t55_add`, `fcresnet18x0.5_t66`.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from functools import partial

from models.fcresnet import FCResNet, FCResNetConfig
from models.temporal import POSITIONS, FeedbackConnectionError, TemporalConnection

Builder = Callable[..., FCResNet]
_REGISTRY: dict[str, Builder] = {}
WIDTHS = (1.0, 0.75, 0.5, 0.25)
DEPTHS = (18, 34, 50)
NAME_PATTERN = re.compile(r"^fcresnet(?P<depth>\d+)(?:x(?P<width>[0-9.]+))?(?:_t(?P<out>\d)(?P<in>\d)(?P<add>_add)?)?$")


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the closest names."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register `builder` under `name`; registering a name twice is an error."""

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style `pattern`, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def build_model(name: str, *, num_classes: int = 19) -> FCResNet:
    """Build the registered variant `name` with fresh weights."""
    return _REGISTRY[resolve_name(name)](num_classes=num_classes)


def model_config(name: str, *, num_classes: int = 19) -> FCResNetConfig:
    """The architecture of `name` without building its weights."""
    return _REGISTRY[resolve_name(name)].keywords["config_factory"](num_classes)


def resolve_name(name: str) -> str:
    """Return `name` if registered; otherwise raise with the reason and the closest names."""
    if name in _REGISTRY:
        return name
    match = NAME_PATTERN.match(name)
    if match and match["out"] and int(match["out"]) > int(match["in"]):
        try:
            TemporalConnection(int(match["out"]), int(match["in"]))
        except FeedbackConnectionError as err:
            raise UnknownModelError(f"unknown model {name!r}: {err}") from None
    close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}{hint} (`python -m models --list` lists all)")


def variant_name(depth: int, width: float = 1.0, temporal: TemporalConnection | None = None) -> str:
    """The registry name of a variant: `fcresnet18x0.5_t66`."""
    name = f"fcresnet{depth}" + ("" if width == 1.0 else f"x{width:g}")
    return name if temporal is None else f"{name}_{temporal.tag}"


def _build(config_factory: Callable[[int], FCResNetConfig], *, num_classes: int = 19) -> FCResNet:
    return FCResNet(config_factory(num_classes))


def _config(depth: int, width: float, temporal: TemporalConnection | None, num_classes: int) -> FCResNetConfig:
    return FCResNetConfig(depth=depth, width=width, num_classes=num_classes, temporal=temporal)


def _connections() -> list[TemporalConnection | None]:
    pairs = [(o, i) for o in POSITIONS for i in POSITIONS if o <= i]
    return [None] + [TemporalConnection(o, i, merge) for o, i in pairs for merge in ("concat", "add")]


def _register_zoo() -> None:
    for depth in DEPTHS:
        for width in WIDTHS:
            for temporal in _connections():
                factory = partial(_config, depth, width, temporal)
                register_model(variant_name(depth, width, temporal))(partial(_build, config_factory=factory))


_register_zoo()
