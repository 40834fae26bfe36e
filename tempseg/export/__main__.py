"""`python -m tempseg.export --model NAME --checkpoint PATH [--height 256 --width 512 --batch 1]`.

Writes OUT_DIR/model.onnx (FP32), model.fp16.onnx and export.json (streaming parity against
torch, sizes, times). A keyframe model (Accel) writes its update graph there and its keyframe graph as
keyframe.onnx / keyframe.fp16.onnx; parity streams the pair by its schedule (--keyframe-every).
The graphs output labels (and states) only, unless --logits; parity measures their labels, and the
logit error of twin graphs with logits exported from the same model. Fails (exit 1) when FP32 drifts
beyond 1e-4 max |logit error| or 99.99 % label agreement; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.errors import require_torch, run_cli

require_torch("python -m tempseg.export")  # before the imports below, which need it: one line, not a traceback
from tempseg.export.parity import ParityError  # noqa: E402
from tempseg.export.pipeline import export_run  # noqa: E402
from tempseg.models.contract import KEYFRAME_EVERY  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.export", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", type=Path, required=True, help="tempseg checkpoint (runs/MODEL/checkpoint.pt)")
    p.add_argument("--height", type=int, default=256, help="input height in pixels (default 256)")
    p.add_argument("--width", type=int, default=512, help="input width in pixels (default 512)")
    p.add_argument("--batch", type=int, default=1, help="batch size baked into the graph (default 1, the edge case)")
    p.add_argument("--out-dir", type=Path, help="output directory (default: the checkpoint's)")
    p.add_argument("--parity-frames", type=int, default=30, help="frames of the streamed parity check (default 30)")
    p.add_argument("--parity-seed", type=int, default=0, help="synthetic val sequence used for parity")
    p.add_argument("--logits", action="store_true", help="also output the C x H x W logits (default: labels only)")
    p.add_argument(
        "--keyframe-every",
        type=int,
        default=KEYFRAME_EVERY,
        help=f"keyframe models: the default schedule the graph records (default {KEYFRAME_EVERY})",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.out_dir or args.checkpoint.parent
    try:
        result = export_run(
            args.checkpoint,
            out_dir,
            model=args.model,
            height=args.height,
            width=args.width,
            batch=args.batch,
            logits=args.logits,
            keyframe_every=args.keyframe_every,
            parity_frames=args.parity_frames,
            parity_seed=args.parity_seed,
        )
    except ParityError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(result.text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
