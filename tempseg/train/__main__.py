"""`python -m tempseg.train --model NAME [--preset smoke|default|compare|paper] [--stage base|finetune] ...`.

Stage `base` trains a frame-by-frame model from scratch (runs/NAME/base/); stage `finetune` trains
any model from a trained base (`--init-from`), the temporal variants and their controls alike.
Writes OUT_DIR/checkpoint.pt and train.json. Multi-process: `torchrun --nproc_per_node N -m tempseg.train ...`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.errors import UserError, require_torch, run_cli

require_torch("python -m tempseg.train")  # before the imports below, which need it: one line, not a traceback
from tempseg.models import UnknownModelError, resolve_name  # noqa: E402
from tempseg.train.config import PRESETS, STAGES, preset_config  # noqa: E402
from tempseg.train.stage import train_stage  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.train", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name, e.g. fcresnet18_t66")
    p.add_argument(
        "--preset",
        default="default",
        choices=sorted(PRESETS),
        help="budget preset (default: default, a base in ~9 min on 2 cores)",
    )
    p.add_argument(
        "--stage", default="base", choices=STAGES, help="base: from scratch; finetune: from --init-from (default base)"
    )
    p.add_argument("--out-dir", type=Path, help="run directory (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.last.pt if present")
    p.add_argument(
        "--data",
        help="'synthetic' (default), 'cityscapes:PATH', or your own labelled video: 'folder:PATH' or 'camvid:PATH' "
        "(the model predicts the data's classes)",
    )
    p.add_argument(
        "--pretrained",
        help="torchvision-format ResNet state dict for the encoder (e.g. ImageNet weights; the head still gets the "
        "data's classes); small datasets need it: a few hundred labelled frames do not train an encoder from scratch",
    )
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="clips per step and process")
    p.add_argument("--lr", type=float, help="initial Adam learning rate")
    p.add_argument("--height", type=int, help="frame height in pixels")
    p.add_argument("--width", type=int, help="frame width in pixels")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="training crop")
    p.add_argument("--min-scale", type=float, help="smallest random render scale before the crop (1: none)")
    p.add_argument("--class-weights", choices=("erfnet", "none"), help="per-class loss weights")
    p.add_argument("--clip-length", type=int, help="frames per clip (temporal models; >2 unrolls)")
    p.add_argument("--target-offset", type=int, help="train for the label of frame t+k (latency-aware, FLAME)")
    p.add_argument(
        "--tc-loss",
        type=float,
        metavar="WEIGHT",
        help="weight of ETC's temporal-consistency loss (0: off; a MODEL+tc name sets the paper's 0.1)",
    )
    p.add_argument("--teacher", help="trained tempseg checkpoint to distil from (with --kd-loss or a MODEL+kd name)")
    p.add_argument(
        "--kd-loss", type=float, metavar="WEIGHT", help="weight of ETC's distillation terms (a MODEL+kd name: 0.1)"
    )
    p.add_argument("--eval-every", type=int, help="steps between validations")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument(
        "--init-from",
        help="tempseg checkpoint to initialise from (e.g. the non-temporal model; one trained on other classes "
        "gives all but its classifier layers)",
    )
    p.add_argument(
        "--reference-from", help="keyframe models (Accel): trained checkpoint of the reference network (its base)"
    )
    p.add_argument("--keyframe-every", type=int, help="keyframe models: keyframe offsets 0..N-1 in training")
    p.add_argument("--reinit-after-in", type=int, help="blocks after the in position left freshly initialised")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training device")
    p.add_argument("--amp", choices=("auto", "bf16", "fp32"), help="autocast dtype (auto: bf16 where native)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = resolve_name(args.model)
    except UnknownModelError as err:
        raise UserError(str(err)) from None
    config = preset_config(
        args.preset,
        args.stage,
        model=model,
        data=args.data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        height=args.height,
        width=args.width,
        crop=tuple(args.crop) if args.crop else None,
        min_scale=args.min_scale,
        class_weights=args.class_weights,
        clip_length=args.clip_length,
        target_offset=args.target_offset,
        tc_loss=args.tc_loss,
        kd_loss=args.kd_loss,
        teacher=args.teacher,
        eval_every=args.eval_every,
        seed=args.seed,
        pretrained=args.pretrained,
        init_from=args.init_from,
        reference_from=args.reference_from,
        keyframe_interval=args.keyframe_every,
        reinit_after_in=args.reinit_after_in,
        device=args.device,
        amp=args.amp,
    )
    result = train_stage(config, args.out_dir or Path("runs") / model, resume=args.resume)
    if result.record["rank"] == 0:
        print(result.line)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
