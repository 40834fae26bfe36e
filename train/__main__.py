"""`python -m train --model NAME [--preset smoke|default|paper] [--out-dir runs/NAME] [--resume]`.

Writes runs/NAME/checkpoint.pt and train.json. Multi-process: `torchrun --nproc_per_node N -m train ...`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError, run_cli
from models import UnknownModelError, resolve_name
from train.config import PRESETS
from train.trainer import train


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name, e.g. fcresnet18_t66")
    p.add_argument(
        "--preset",
        default="default",
        choices=sorted(PRESETS),
        help="budget preset (default: default, ~5 min on 2 cores)",
    )
    p.add_argument("--out-dir", type=Path, help="run directory (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.last.pt if present")
    p.add_argument("--data", help="'synthetic' (default) or 'cityscapes:PATH'")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="clips per step and process")
    p.add_argument("--lr", type=float, help="initial Adam learning rate")
    p.add_argument("--height", type=int, help="frame height in pixels")
    p.add_argument("--width", type=int, help="frame width in pixels")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="training crop")
    p.add_argument("--clip-length", type=int, help="frames per clip (temporal models; >2 unrolls)")
    p.add_argument("--target-offset", type=int, help="train for the label of frame t+k (latency-aware, FLAME)")
    p.add_argument("--eval-every", type=int, help="steps between validations")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--pretrained", help="torchvision-format ResNet state dict for the encoder")
    p.add_argument("--init-from", help="tempseg checkpoint to initialise from (e.g. the non-temporal model)")
    p.add_argument("--reinit-after-in", type=int, help="blocks after the in position left freshly initialised")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training device")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = resolve_name(args.model)
    except UnknownModelError as err:
        raise UserError(str(err)) from None
    config = PRESETS[args.preset].with_overrides(
        model=model,
        data=args.data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        height=args.height,
        width=args.width,
        crop=tuple(args.crop) if args.crop else None,
        clip_length=args.clip_length,
        target_offset=args.target_offset,
        eval_every=args.eval_every,
        seed=args.seed,
        pretrained=args.pretrained,
        init_from=args.init_from,
        reinit_after_in=args.reinit_after_in,
        device=args.device,
    )
    out_dir = args.out_dir or Path("runs") / model
    started = time.perf_counter()
    record = train(config, out_dir, resume=args.resume)
    if record["rank"] != 0:
        return 0
    last = record["epochs"][-1] if record["epochs"] else {}
    print(
        f"stage train: {time.perf_counter() - started:.1f} s -> {out_dir / 'checkpoint.pt'} "
        f"(val mIoU {last.get('val_miou', float('nan')):.4f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
