"""Checkpoints: one dict of plain types and tensors, written atomically, read with weights_only=True."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from tempseg.common.classes import ClassTable
from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write
from tempseg.models.accel import Accel
from tempseg.models.fcresnet import FCResNet, FCResNetConfig
from tempseg.models.registry import build_model, model_config

FORMAT = "tempseg-checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    model: FCResNet | Accel,
    name: str,
    *,
    classes: ClassTable | None = None,
    **extra: Any,
) -> None:
    """Write model weights plus `extra` (optimizer state, epoch, metrics...) atomically; `classes`, the class
    table the model was trained on, travels with it to export (the graph's names and palette)."""
    if classes is not None and len(classes) != model.config.num_classes:
        raise ValueError(f"{name} has {model.config.num_classes} classes but the class table lists {len(classes)}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **({"classes": classes_record(classes)} if classes is not None else {}),
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a checkpoint file; UserError for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise UserError(f"not a readable checkpoint (truncated or corrupt?): {_first_line(err)}", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"not a tempseg checkpoint (no '{FORMAT}' header; a bare state dict?)", path)
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint format version {payload.get('version')} is not {VERSION}", path)
    return payload


def load_model(
    path: str | os.PathLike[str], *, expect_model: str | None = None, expect_classes: int | None = None
) -> tuple[FCResNet | Accel, dict[str, Any]]:
    """Rebuild the model of a checkpoint and load its weights (eval mode).

    `expect_model` / `expect_classes` make a checkpoint of another variant an error naming both.
    """
    payload = read_checkpoint(path)
    name = payload["model"]
    config = FCResNetConfig.from_dict(payload["config"])
    if expect_model is not None and name != expect_model:
        raise UserError(f"checkpoint is for model {name!r}, not {expect_model!r}", path)
    if expect_classes is not None and config.num_classes != expect_classes:
        raise UserError(f"checkpoint has {config.num_classes} classes, not {expect_classes}", path)
    if model_config(name, num_classes=config.num_classes) != config:
        raise UserError(f"checkpoint architecture differs from the registered {name!r}", path)
    model = build_model(name, num_classes=config.num_classes)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"checkpoint weights do not fit {name!r}: missing {missing[:3]}, unexpected {unexpected[:3]}", path
        )
    return model.eval(), payload


def classes_record(classes: ClassTable) -> dict[str, Any]:
    """A class table as plain types (a weights_only load reads nothing else)."""
    return {"names": list(classes.names), "palette": [list(rgb) for rgb in classes.palette], "ignore": classes.ignore}


def checkpoint_classes(payload: dict[str, Any], path: str | os.PathLike[str] | None = None) -> ClassTable | None:
    """The class table a checkpoint was trained on; None for one written before checkpoints kept it."""
    record = payload.get("classes")
    if record is None:
        return None
    try:
        names = tuple(str(n) for n in record["names"])
        palette = tuple((int(r), int(g), int(b)) for r, g, b in record["palette"])
        table = ClassTable(names, palette, int(record.get("ignore", 255)))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"checkpoint's class table does not read: {_first_line(err)}", path) from None
    head = payload["config"]["num_classes"]
    if len(table) != head:
        raise UserError(f"checkpoint lists {len(table)} classes for a {head}-class head", path)
    return table


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
