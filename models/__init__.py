"""FCResNet{18,34,50} with temporal connections; model names are one grammar (models/registry.py)."""

from tempseg.models.fcresnet import NETWORK_STRIDE, FCResNet, FCResNetConfig, check_input_size
from tempseg.models.registry import (
    UnknownModelError,
    build_model,
    list_models,
    model_config,
    random_model,
    resolve_name,
    variant_name,
)
from tempseg.models.temporal import FeedbackConnectionError, TemporalConnection

__all__ = [
    "NETWORK_STRIDE",
    "FCResNet",
    "FCResNetConfig",
    "FeedbackConnectionError",
    "TemporalConnection",
    "UnknownModelError",
    "build_model",
    "check_input_size",
    "list_models",
    "model_config",
    "random_model",
    "resolve_name",
    "variant_name",
]
