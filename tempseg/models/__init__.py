"""FCResNet{18,34,50} with a temporal connection or a memory attention; names are one grammar (models/registry.py)."""

from tempseg.models.fcresnet import NETWORK_STRIDE, FCResNet, FCResNetConfig, check_input_size, check_model_input
from tempseg.models.memory import MemoryAttention
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
    "MemoryAttention",
    "TemporalConnection",
    "UnknownModelError",
    "build_model",
    "check_input_size",
    "check_model_input",
    "list_models",
    "model_config",
    "random_model",
    "resolve_name",
    "variant_name",
]
