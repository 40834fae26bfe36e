"""`python -m tempseg.models NAME [--height H --width W]`: parameters, state shapes and bytes, GFLOPs.

`python -m tempseg.models --list [PATTERN]` lists the standard zoo (names are a grammar: see models/registry.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tempseg.common.errors import UserError, run_cli
from tempseg.models.registry import UnknownModelError, list_models
from tempseg.models.summary import format_summary, summarize


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tempseg.models", description=__doc__)
    parser.add_argument("name", nargs="?", help="model name, e.g. fcresnet18_t66")
    parser.add_argument("--list", nargs="?", const="*", metavar="PATTERN", help="list names matching PATTERN")
    parser.add_argument("--height", type=int, default=256, help="input height in pixels (default 256)")
    parser.add_argument("--width", type=int, default=512, help="input width in pixels (default 512)")
    parser.add_argument("--classes", type=int, default=19, help="number of classes (default 19)")
    args = parser.parse_args(argv)
    if args.list is not None:
        print("\n".join(list_models(args.list)))
        return 0
    if not args.name:
        parser.error("give a model name or --list")
    try:
        info = summarize(args.name, height=args.height, width=args.width, num_classes=args.classes)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None
    print(format_summary(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
