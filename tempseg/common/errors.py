"""One error type for bad user input, and the CLI wrapper that turns it into exit code 2."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input the user can fix: printed as one line that names the file, exit code 2."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main`, mapping UserError to one stderr line and exit 2 (traceback only with --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TEMPSEG_DEBUG") == "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(main([a for a in args if a != "--debug"]) or 0)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def require_torch(prog: str) -> None:
    """Stop `prog` with one stderr line and exit 2 where torch does not import: the training side's CLIs need it,
    a machine that only deploys (a Jetson running copied graphs) has none. Called before the imports that need it."""
    try:
        importlib.import_module("torch")
    except (ImportError, OSError) as err:  # OSError: a torch whose native libraries do not load
        hint = "pip install -e '.[train]' installs it; running exported graphs does not need it"
        print(f"{prog}: needs torch, which does not import here ({err}; {hint})", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


_T = TypeVar("_T")


def require(value: _T | None, misuse: str) -> _T:
    """`value`, which a lifecycle step (activate(), allocate(), load()) sets and its undo clears; a RuntimeError
    saying `misuse` ("TensorRTRunner used before activate()") where the object is used out of order."""
    if value is None:
        raise RuntimeError(misuse)
    return value
