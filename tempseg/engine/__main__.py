"""`python -m tempseg.engine --onnx runs/M/model.fp16.onnx --out runs/M/fp16.engine [options]`.

Reads and checks the ONNX contract, builds a TensorRT (or TensorRT-RTX) engine, and writes it with its
build record `<out>.json`. An update graph of a keyframe pair (Accel) names its keyframe graph: both are
checked before anything is built, and the keyframe engine is written first, next to OUT as keyframe.<OUT name>
(its record names it: the runtime finds the pair from the update engine alone). Precision comes from the
graph (FP32, FP16 or INT8 Q/DQ ONNX). Bad input (a broken ONNX, no TensorRT, a parser error) is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.errors import UserError, run_cli
from tempseg.engine.build import DEFAULT_TIMING_CACHE, PROFILING, BuildOptions
from tempseg.engine.pipeline import build_engines, stage_lines
from tempseg.engine.trt import PREFERENCES


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.engine", description=__doc__)
    p.add_argument(
        "--onnx", type=Path, required=True, help="contract ONNX graph (model.onnx, model.fp16.onnx, model.int8.onnx)"
    )
    p.add_argument("--out", type=Path, required=True, help="engine file to write (the record goes to OUT.json)")
    p.add_argument(
        "--workspace", type=int, metavar="MiB", help="workspace memory-pool limit in MiB (default: TensorRT's)"
    )
    p.add_argument(
        "--opt-level", type=int, choices=range(6), metavar="0-5", help="builder optimization level (default 3)"
    )
    p.add_argument(
        "--timing-cache",
        type=Path,
        default=DEFAULT_TIMING_CACHE,
        help=f"shared timing cache (default {DEFAULT_TIMING_CACHE})",
    )
    p.add_argument("--no-timing-cache", action="store_true", help="neither load nor save a timing cache")
    p.add_argument(
        "--compute-capability",
        nargs="+",
        default=[],
        metavar="CC",
        help="TensorRT-RTX target GPUs, e.g. 8.9 12.0, or 'current' (default: this GPU, else 8.6 8.9 12.0)",
    )
    p.add_argument("--flavour", choices=PREFERENCES, default="auto", help="auto: tensorrt, else tensorrt_rtx")
    p.add_argument(
        "--profiling-verbosity", choices=PROFILING, default="detailed", help="layer detail kept in the engine"
    )
    p.add_argument("--no-inspect", action="store_true", help="skip deserializing the engine after the build (GPU only)")
    p.add_argument("--verbose", action="store_true", help="show TensorRT's INFO and VERBOSE messages")
    return p.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    if args.workspace is not None and args.workspace < 1:
        raise UserError(f"--workspace must be at least 1 MiB, not {args.workspace}")
    return BuildOptions(
        workspace_mib=args.workspace,
        opt_level=args.opt_level,
        timing_cache=None if args.no_timing_cache else args.timing_cache,
        profiling_verbosity=args.profiling_verbosity,
        compute_capabilities=tuple(args.compute_capability),
        verbose=args.verbose,
        inspect=not args.no_inspect,
    )


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    options = options_from_args(args)
    if args.verbose:
        logging.getLogger("tempseg.engine").setLevel(logging.DEBUG)
    results = build_engines(args.onnx, args.out, options, flavour=args.flavour)
    print("\n".join(stage_lines(results, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
