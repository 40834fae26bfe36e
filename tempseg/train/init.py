"""Initialisation strategies of paper section III-E.

- `load_pretrained_backbone`: a torchvision-format ResNet state dict (ImageNet weights a user
  downloaded) into the encoder; tensors whose shape differs (a stage widened by a concat merge,
  a width-scaled variant) keep their fresh init, and the fc head is ignored.
- `init_from_checkpoint`: a tempseg checkpoint, typically the non-temporal model of the same
  backbone. With `reinit_after_in = N > 0`, the N blocks after the `in` position are left at
  their fresh init (the paper's "no weights for the blocks after in"); with N = 0 everything
  that fits is loaded, and an input widened by concat gets the old weights on the current
  frame's channels and zeros on the temporal ones, so training starts from the old model.
  A checkpoint trained on other classes (a synthetic base fine-tuned on a user's data) gives everything
  but the layers whose shape follows the class count: those (the FCN8s head) start fresh.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.data.classes import class_table
from tempseg.models import FCResNet
from tempseg.models.checkpoint import checkpoint_classes, read_checkpoint

log = logging.getLogger(__name__)

# Parameter-name prefixes of the blocks that produce positions 2..7 and the final upsampling (8).
BLOCK_PREFIXES = {
    2: ("backbone.layer1.",),
    3: ("backbone.layer2.",),
    4: ("backbone.layer3.",),
    5: ("backbone.layer4.",),
    6: ("score_fr.", "upscore2.", "score_pool4."),
    7: ("upscore_pool4.", "score_pool3."),
    8: ("upscore8.",),
}


def load_pretrained_backbone(model: FCResNet, path: str | Path) -> int:
    """Load a torchvision ResNet state dict into `model.backbone`; returns tensors loaded."""
    path = Path(path)
    if not path.is_file():
        raise UserError("pretrained weights not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign files
        raise UserError(f"not a readable torch state dict: {err}", path) from None
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise UserError("not a torchvision ResNet state dict (no 'conv1.weight')", path)
    loaded = _copy_matching(model.backbone, {k: v for k, v in state.items() if not k.startswith("fc.")})
    log.info("pretrained: %d of %d encoder tensors loaded from %s", loaded, len(model.backbone.state_dict()), path)
    return loaded


def init_from_checkpoint(
    model: FCResNet, path: str | Path, *, reinit_after_in: int = 0, classes: ClassTable | None = None
) -> int:
    """Initialise from a tempseg checkpoint; returns tensors loaded. `classes` (the data's): when the checkpoint
    was trained on other classes, its class-count-shaped layers are not loaded."""
    payload = read_checkpoint(path)
    if payload["config"]["depth"] != model.config.depth or payload["config"]["width"] != model.config.width:
        raise UserError(
            f"checkpoint is a {payload['model']}, another backbone than {model.config.depth}x{model.config.width:g}",
            path,
        )
    skipped = _reinit_prefixes(model, reinit_after_in)
    other = _other_classes(payload, path, model.config.num_classes, classes)
    head = class_dependent(model) if other else set()
    source = {k: v for k, v in payload["state_dict"].items() if not k.startswith(skipped) and k not in head}
    loaded = _copy_matching(model, source, widen=True)
    fresh = [", ".join(skipped)] if skipped else []
    if other:
        fresh.append(f"the classifier layers, as the {other}")
    log.info(
        "init: %d of %d tensors from %s (fresh: %s)", loaded, len(model.state_dict()), path, "; ".join(fresh) or "none"
    )
    return loaded


def _other_classes(payload: dict, path: str | Path, num_classes: int, classes: ClassTable | None) -> str:
    """Why the checkpoint's classifier does not fit this model's classes ("" when it does): another count, or
    the same count of other names (a checkpoint without its table had the default table of its count)."""
    count = payload["config"]["num_classes"]
    if count != num_classes:
        return f"checkpoint has {count} classes, the data {num_classes}"
    trained = checkpoint_classes(payload, path) or class_table(count)
    if classes is not None and trained is not None and trained.names != classes.names:
        return f"checkpoint's {count} classes are not the data's"
    return ""


def class_dependent(model: FCResNet) -> set[str]:
    """Names of the tensors whose shape follows the class count (the FCN8s head, a state or memory at
    positions 6-7): those of a meta-device twin with one class more that differ in shape."""
    with torch.device("meta"):
        twin = FCResNet(replace(model.config, num_classes=model.config.num_classes + 1))
    other = twin.state_dict()
    return {k for k, v in model.state_dict().items() if k not in other or other[k].shape != v.shape}


def _reinit_prefixes(model: FCResNet, blocks: int) -> tuple[str, ...]:
    conn = model.config.temporal
    if blocks <= 0 or conn is None:
        return ()
    after = range(conn.in_ + 1, min(conn.in_ + blocks, 8) + 1)
    return tuple(p for block in after for p in BLOCK_PREFIXES[block])


def _copy_matching(module: torch.nn.Module, source: dict[str, torch.Tensor], *, widen: bool = False) -> int:
    target = module.state_dict()
    loaded = 0
    with torch.no_grad():
        for name, tensor in source.items():
            if name not in target:
                continue
            dest = target[name]
            if dest.shape == tensor.shape:
                dest.copy_(tensor)
            elif widen and _is_widened_input(dest, tensor):
                dest.zero_()
                dim = _input_dim(name, module)
                dest.narrow(dim, 0, tensor.shape[dim]).copy_(tensor)
            else:
                continue
            loaded += 1
    return loaded


def _is_widened_input(dest: torch.Tensor, source: torch.Tensor) -> bool:
    """Same tensor with one dimension doubled: the consumer of a concat merge."""
    if dest.dim() != source.dim() or dest.dim() < 2:
        return False
    diffs = [i for i, (a, b) in enumerate(zip(dest.shape, source.shape, strict=True)) if a != b]
    return len(diffs) == 1 and diffs[0] in (0, 1) and dest.shape[diffs[0]] == 2 * source.shape[diffs[0]]


def _input_dim(name: str, module: torch.nn.Module) -> int:
    """Conv weights are [out, in, k, k]; ConvTranspose weights are [in, out, k, k]."""
    owner = module.get_submodule(name.rsplit(".", 1)[0])
    return 0 if isinstance(owner, torch.nn.ConvTranspose2d) else 1
