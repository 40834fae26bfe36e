"""Atomic artefact writes and content hashes.

Every artefact (checkpoint, ONNX, calib.json, engine, report) goes through `atomic_write`,
so a stage killed half-way never leaves a half file that a later `make` would take as done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _publish(tmp: str, target: Path) -> None:
    """Rename the finished temp file over `target` with the permissions a plain open() would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside `path` for libraries that write files themselves; renamed on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temp name keeps the target's suffix: libraries (OpenCV, onnx) pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.tmp.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically: a report is whole or absent."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write JSON atomically, indented, keys in insertion order."""
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
