"""`python -m tempseg.models NAME [--height H --width W]`: parameters, state shapes and bytes, GFLOPs.

`python -m tempseg.models --list [PATTERN]` lists the standard zoo (names are a grammar: see models/registry.py).
`python -m tempseg.models --base NAME` prints the base NAME is fine-tuned from, `--reference NAME` the reference
network of a keyframe model (an empty line for any other): the Makefile asks these (a bad NAME: one line, exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tempseg.common.errors import UserError, run_cli
from tempseg.models.registry import UnknownModelError, base_model, list_models, reference_model, resolve_name
from tempseg.models.summary import format_summary, summarize


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tempseg.models", description=__doc__)
    parser.add_argument("name", nargs="?", help="model name, e.g. fcresnet18_t66")
    query = parser.add_mutually_exclusive_group()
    query.add_argument("--list", nargs="?", const="*", metavar="PATTERN", help="list names matching PATTERN")
    query.add_argument(
        "--base", metavar="NAME", help="the base NAME is fine-tuned from: fcresnet18x0.5_t66 -> fcresnet18x0.5"
    )
    query.add_argument(
        "--reference",
        metavar="NAME",
        help="the reference network of a keyframe model: fcresnet18x0.5_accel34 -> fcresnet34 (empty for others)",
    )
    parser.add_argument("--height", type=int, default=256, help="input height in pixels (default 256)")
    parser.add_argument("--width", type=int, default=512, help="input width in pixels (default 512)")
    parser.add_argument("--classes", type=int, default=19, help="number of classes (default 19)")
    args = parser.parse_args(argv)
    if args.list is not None:
        print("\n".join(list_models(args.list)))
        return 0
    try:
        if args.base is not None:
            print(base_model(resolve_name(args.base)))
        elif args.reference is not None:
            print(reference_model(args.reference) or "")
        elif not args.name:
            parser.error("give a model name, --list, --base NAME or --reference NAME")
        else:
            print(format_summary(summarize(args.name, height=args.height, width=args.width, num_classes=args.classes)))
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
