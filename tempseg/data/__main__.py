"""python -m tempseg.data synthetic --out demo.mp4 | python -m tempseg.data preview --out preview.png"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from tempseg.common.errors import run_cli

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
        p.add_argument("--height", type=_positive, default=256, help="frame height in pixels (default 256)")
        p.add_argument("--width", type=_positive, default=512, help="frame width in pixels (default 512)")
        p.add_argument("--seed", type=int, default=0, help="first synthetic sequence of the val split (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from tempseg.data.demo import write_preview, write_synthetic_video  # lazy: --help stays instant

    args = parse_args(argv)
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
