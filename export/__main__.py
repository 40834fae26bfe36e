"""`python -m export --model NAME --checkpoint PATH [--height 256 --width 512 --batch 1]`.

Writes OUT_DIR/model.onnx (FP32), model.fp16.onnx and export.json (streaming parity against
torch, sizes, times). Fails (exit 1) when the FP32 graph drifts beyond 1e-4 max |logit error| or
99.99 % label agreement; nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError, run_cli
from common.io import sha256_file, write_json
from data import SyntheticVideo, split_seed
from export.fp16 import convert_fp16
from export.onnx_graph import build_contract, export_fp32, save_onnx
from export.parity import FP16_TARGET_AGREEMENT, ParityError, check_fp32, ort_session, streaming_parity
from models import UnknownModelError, check_input_size, resolve_name
from models.checkpoint import load_model

log = logging.getLogger("export")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", type=Path, required=True, help="tempseg checkpoint (runs/MODEL/checkpoint.pt)")
    p.add_argument("--height", type=int, default=256, help="input height in pixels (default 256)")
    p.add_argument("--width", type=int, default=512, help="input width in pixels (default 512)")
    p.add_argument("--batch", type=int, default=1, help="batch size baked into the graph (default 1, the edge case)")
    p.add_argument("--out-dir", type=Path, help="output directory (default: the checkpoint's)")
    p.add_argument("--parity-frames", type=int, default=30, help="frames of the streamed parity check (default 30)")
    p.add_argument("--parity-seed", type=int, default=0, help="synthetic val sequence used for parity")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        name = resolve_name(args.model)
        check_input_size(args.height, args.width)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.batch < 1 or args.parity_frames < 1:
        raise UserError("--batch and --parity-frames must be at least 1")
    out_dir = args.out_dir or args.checkpoint.parent
    model, _ = load_model(args.checkpoint, expect_model=name)
    contract = build_contract(
        model,
        name,
        height=args.height,
        width=args.width,
        batch=args.batch,
        checkpoint_sha256=sha256_file(args.checkpoint),
    )
    frames = [
        f.image
        for f in SyntheticVideo(split_seed("val", args.parity_seed), args.height, args.width, length=args.parity_frames)
    ]

    t0 = time.perf_counter()
    fp32 = export_fp32(model, contract)
    export_s = time.perf_counter() - t0
    fp32_report = streaming_parity(model, ort_session(fp32), contract, frames)
    try:
        check_fp32(fp32_report, str(out_dir / "model.onnx"))
    except ParityError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    fp32_path = save_onnx(fp32, out_dir / "model.onnx")
    fp32_sha = sha256_file(fp32_path)

    fp16, fp16_contract = convert_fp16(fp32, contract)
    fp16_contract = fp16_contract.with_changes(source_onnx_sha256=fp32_sha)
    from common.contract import set_metadata

    set_metadata(fp16, fp16_contract)
    fp16_report = streaming_parity(model, ort_session(fp16), fp16_contract, frames)
    fp16_path = save_onnx(fp16, out_dir / "model.fp16.onnx")

    report = {
        "model": name,
        "input": list(contract.image.shape),
        "states": [
            {
                "name": s.input,
                "shape": list(s.shape),
                "fp32_dtype": "float32",
                "fp16_dtype": fp16_contract.states[i].dtype,
            }
            for i, s in enumerate(contract.states)
        ],
        "checkpoint_sha256": contract.checkpoint_sha256,
        "export_seconds": round(export_s, 2),
        "files": {
            "model.onnx": {"bytes": fp32_path.stat().st_size, "sha256": fp32_sha},
            "model.fp16.onnx": {"bytes": fp16_path.stat().st_size, "sha256": sha256_file(fp16_path)},
        },
        "parity": {"fp32": fp32_report, "fp16": fp16_report},
    }
    write_json(out_dir / "export.json", report)
    print(format_report(report, out_dir))
    if fp16_report["mean_label_agreement"] < FP16_TARGET_AGREEMENT:
        log.warning(
            "FP16 label agreement %.3f %% is below the %.1f %% target",
            100 * fp16_report["mean_label_agreement"],
            100 * FP16_TARGET_AGREEMENT,
        )
    print(f"stage export: {time.perf_counter() - started:.1f} s -> {fp32_path}, {fp16_path}")
    return 0


def format_report(report: dict, out_dir: Path) -> str:
    lines = [
        f"parity over {report['parity']['fp32']['frames']} streamed frames (ONNX Runtime CPU vs torch, state carried):"
    ]
    for precision in ("fp32", "fp16"):
        r = report["parity"][precision]
        lines.append(
            f"  {precision}: max |logit error| {r['max_abs_logit_error']:.2e}, label agreement mean "
            f"{100 * r['mean_label_agreement']:.4f} % / min {100 * r['min_label_agreement']:.4f} %"
        )
    for name, info in report["files"].items():
        lines.append(f"  {out_dir / name}: {info['bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
