"""`python -m tempseg.calibration --onnx runs/M/model.onnx [--out runs/M/model.int8.onnx] [--frames 128]
[--method percentile]`.

Writes the explicitly quantized (Q/DQ) INT8 graph and calib.json beside it: activation ranges and
scales, method, calibration key, timings, file size, and the accuracy of INT8 against FP32 on
held-out val sequences: of --data where it is labelled (folder:, camvid:, cityscapes:), else synthetic.
A second run with the same key reuses the cached ranges.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from tempseg.calibration.config import DEFAULT_PERCENTILE, KEEP_FLOAT_GROUPS, METHODS, CalibConfig, labelled_data
from tempseg.calibration.pipeline import calibrate
from tempseg.calibration.summary import format_stage
from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import run_cli
from tempseg.data.classes import CLASS_NAMES, NUM_CLASSES


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.calibration", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True, help="FP32 contract graph (runs/MODEL/model.onnx)")
    p.add_argument("--out", type=Path, help="INT8 graph (default: model.int8.onnx beside --onnx)")
    p.add_argument("--calib-json", type=Path, help="report (default: calib.json beside --out)")
    p.add_argument("--frames", type=int, default=128, help="calibration frames (default 128)")
    p.add_argument("--method", choices=METHODS, default="percentile", help="range calibration (default percentile)")
    p.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help=f"percentile method: %% of |x| kept (default {DEFAULT_PERCENTILE})",
    )
    p.add_argument(
        "--data",
        default="synthetic",
        help="synthetic (default), a video, an image folder, cityscapes:PATH, folder:PATH[:SPLIT], "
        "camvid:PATH[:SPLIT] (labelled data: its val split unless SPLIT says)",
    )
    p.add_argument("--seed", type=int, default=0, help="first calibration sequence / source seed (default 0)")
    p.add_argument("--sequence-length", type=int, default=32, help="synthetic: frames per calibration sequence")
    p.add_argument("--chunk-frames", type=int, default=16, help="frames per collection pass (bounds memory)")
    p.add_argument(
        "--eval-sequences",
        type=int,
        help="held-out val sequences for accuracy, of --data where it is labelled, else synthetic (0: none; "
        "default 4, or 0 where synthetic video would score a graph of other classes than its 19)",
    )
    p.add_argument("--eval-frames", type=int, default=20, help="frames per evaluation sequence (default 20)")
    p.add_argument(
        "--keep-float",
        default="",
        help=f"comma-separated groups ({', '.join(KEEP_FLOAT_GROUPS)}) or node names left in float",
    )
    p.add_argument("--no-cache", action="store_true", help="collect the ranges again even if cached")
    return p.parse_args(argv)


def default_eval_sequences(onnx: Path, data: str) -> int:
    """Labelled data's val split scores the graph trained on it. Otherwise the check streams synthetic val video,
    labelled with the 19 Cityscapes classes: it scores a graph of those classes, not one trained on other labels."""
    if labelled_data(data):
        return 4
    contract = read_onnx_contract(onnx)
    synthetic_classes = contract.num_classes == NUM_CLASSES and contract.classes in ((), CLASS_NAMES)
    return 4 if synthetic_classes else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = args.out or args.onnx.with_name("model.int8.onnx")
    config = CalibConfig(
        method=args.method,
        percentile=args.percentile,
        frames=args.frames,
        data=args.data,
        seed=args.seed,
        sequence_length=args.sequence_length,
        keep_float=tuple(name.strip() for name in args.keep_float.split(",") if name.strip()),
        chunk_frames=args.chunk_frames,
        eval_sequences=default_eval_sequences(args.onnx, args.data)
        if args.eval_sequences is None
        else args.eval_sequences,
        eval_frames=args.eval_frames,
        use_cache=not args.no_cache,
    )
    report = calibrate(args.onnx, out, config, calib_json=args.calib_json or out.with_name("calib.json"))
    print(format_stage(report, out, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
