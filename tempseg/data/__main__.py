"""python -m tempseg.data synthetic --out demo.mp4 | python -m tempseg.data preview --out preview.png |
python -m tempseg.data write-folder OUT --split train --sequences 4 --length 60 --label-every 5 |
python -m tempseg.data classes SPEC"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from tempseg.common.errors import UserError, run_cli

log = logging.getLogger("tempseg.data")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tempseg.data", description="Synthetic street video and previews.")
    sub = parser.add_subparsers(dest="command", required=True)
    video = sub.add_parser("synthetic", help="write a labelled synthetic street video (mp4v) to try the video path")
    video.add_argument("--out", required=True, help="video file to write, e.g. demo.mp4")
    video.add_argument("--frames", type=_positive, default=120, help="frames to write (default 120, at 17 fps)")
    video.add_argument("--labels-out", help="folder for one train-id label PNG per frame (000000.png, ...)")
    preview = sub.add_parser("preview", help="write a PNG grid of a few frames over their colourised labels")
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--source", default="synthetic", help="any source spec of open_source (default synthetic)")
    preview.add_argument("--count", type=_positive, default=4, help="frames in the grid (default 4)")
    preview.add_argument("--step", type=_positive, default=40, help="frames between grid frames (default 40)")
    for p in (video, preview):
        p.add_argument("--seed", type=int, default=0, help="first synthetic sequence of the val split (default 0)")
    classes = sub.add_parser("classes", help="print the classes a data spec labels (train id, name, RGB colour)")
    classes.add_argument("spec", help="synthetic, cityscapes:PATH, folder:PATH, camvid:PATH or camvid32:PATH")
    folder = sub.add_parser(
        "write-folder",
        help="write synthetic sequences as a folder dataset (folder:OUT), labelled on every K-th frame only",
    )
    folder.add_argument("out", help="dataset folder to write (classes.json, SPLIT/NNNN/*.png, SPLIT/NNNN/labels/)")
    folder.add_argument("--split", choices=("train", "val", "test"), default="train", help="split (default train)")
    folder.add_argument("--sequences", type=_positive, default=4, help="sequences 0..N-1 of the split (default 4)")
    folder.add_argument("--length", type=_positive, default=60, help="frames per sequence (default 60)")
    folder.add_argument("--label-every", type=_positive, default=5, help="label every K-th frame (default 5)")
    folder.add_argument(
        "--first-label",
        type=int,
        default=1,
        help="first labelled frame (default 1: clips of 2 have a frame before it; use clip length + offset - 1)",
    )
    for p in (video, preview, folder):
        p.add_argument("--height", type=_positive, default=256, help="frame height in pixels (default 256)")
        p.add_argument("--width", type=_positive, default=512, help="frame width in pixels (default 512)")
    return parser.parse_args(argv)


def print_classes(spec: str) -> None:
    """The data's class table, one class a line: what a model trained on `spec` predicts and colours."""
    from tempseg.data.sources import dataset_classes  # lazy: --help stays instant

    table = dataset_classes(spec)
    for train_id, (name, (r, g, b)) in enumerate(zip(table.names, table.palette, strict=True)):
        print(f"{train_id:3d}  {name:<24} {r:3d} {g:3d} {b:3d}")
    print(f"ignore {table.ignore}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "classes":
        print_classes(args.spec)
        return 0
    from tempseg.data.demo import write_preview, write_synthetic_video  # lazy: --help stays instant

    if args.command == "write-folder":
        from tempseg.data.folder import write_synthetic_folder  # lazy: --help stays instant

        if args.first_label < 0:
            raise UserError(f"--first-label {args.first_label} must be >= 0")
        write_synthetic_folder(
            args.out,
            split=args.split,
            sequences=args.sequences,
            length=args.length,
            label_every=args.label_every,
            first_label=args.first_label,
            height=args.height,
            width=args.width,
        )
        labelled = len(range(args.first_label, args.length, args.label_every))
        log.info(
            "wrote folder:%s %s: %d sequences of %d frames (%dx%d), %d labelled each",
            args.out,
            args.split,
            args.sequences,
            args.length,
            args.width,
            args.height,
            labelled,
        )
        return 0
    if args.command == "synthetic":
        ms = write_synthetic_video(
            args.out,
            frames=args.frames,
            height=args.height,
            width=args.width,
            seed=args.seed,
            labels_out=args.labels_out,
        )
        log.info(
            "wrote %s: %d frames of %dx%d at 17 fps (%.1f ms per frame to render, street generation included)",
            args.out,
            args.frames,
            args.width,
            args.height,
            ms,
        )
        if args.labels_out:
            log.info("wrote %d train-id label PNGs to %s", args.frames, args.labels_out)
    else:
        write_preview(
            args.out,
            source=args.source,
            count=args.count,
            step=args.step,
            height=args.height,
            width=args.width,
            seed=args.seed,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
