"""`python -m tempseg.runtime --model-dir runs/MODEL [--precision fp16] [--backend auto] [--source synthetic]
[--frames N]`.

Runs the stateful frame loop and prints the latency, memory and accuracy table; writes the
report to runs/MODEL/run-<precision>-<backend>.json. Sources: synthetic (labelled), a video
file, an image folder, cityscapes:PATH[:SPLIT], labelled video of your own (folder:PATH[:SPLIT],
camvid:PATH[:SPLIT]), camera:N. The overlay shows the graph's classes (names and colours from its
metadata) and each frame's latency. Ctrl-C stops after the current frame and still writes the report.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json
from tempseg.data.sources import open_source
from tempseg.runtime.loop import LoopOptions, run_loop
from tempseg.runtime.outputs import FrameClock, Overlay, OverlayVideo, PngFrames, palette_lut
from tempseg.runtime.policy import StatePolicy
from tempseg.runtime.report import build_report, format_report
from tempseg.runtime.session import BACKENDS, PRECISIONS, make_runner, select

log = logging.getLogger("tempseg.runtime")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempseg.runtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, required=True, help="run directory with the graphs/engines (runs/MODEL)")
    p.add_argument("--precision", default="fp16", choices=PRECISIONS, help="graph/engine precision (default fp16)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: TensorRT when installed with a GPU and an engine, else ONNX Runtime",
    )
    p.add_argument(
        "--onnx",
        type=Path,
        help="run this ONNX file instead of the run directory's (any graph following the state contract)",
    )
    p.add_argument("--engine", type=Path, help="run this engine instead of the run directory's")
    p.add_argument(
        "--source",
        default="synthetic",
        help="synthetic[:SEED] | VIDEO | FOLDER | cityscapes:PATH[:SPLIT] | folder:PATH[:SPLIT] | "
        "camvid:PATH[:SPLIT] | camera:N",
    )
    p.add_argument("--frames", type=int, help="stop after N frames (default: the whole source; synthetic: 300)")
    p.add_argument("--warmup", type=int, default=10, help="frames left out of the latency statistics (default 10)")
    p.add_argument(
        "--reset-every", type=int, help="zero the state every N frames (1: every frame runs on a zero state)"
    )
    p.add_argument(
        "--keyframe-every",
        type=int,
        help="keyframe models (Accel): run the keyframe graph every N frames (default: the graph's, 5); "
        "a reset or scene cut forces a keyframe",
    )
    p.add_argument(
        "--scene-cut",
        type=float,
        help="reset the state where the frame difference (0..1) exceeds this, e.g. 0.25 for edited video "
        "(default: off; a dropped or glared frame would look like a cut)",
    )
    p.add_argument("--overlay", type=Path, help="write the colourised overlay as a video (.mp4/.avi)")
    p.add_argument("--overlay-dir", type=Path, help="write overlay PNG frames here")
    p.add_argument("--labels-dir", type=Path, help="write label maps (uint8 class ids, PNG) here")
    p.add_argument("--no-accuracy", action="store_true", help="skip mIoU/FLAME even where labels exist")
    p.add_argument("--no-tc", action="store_true", help="skip temporal consistency (optical flow per frame)")
    p.add_argument("--report", type=Path, help="report path (default MODEL_DIR/run-<precision>-<backend>.json)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime / torch (0: their default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch backend device")
    p.add_argument(
        "--cuda-graphs", action="store_true", help="TensorRT: replay each frame as a CUDA graph (untested in CI)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.frames is not None and args.frames < 1:
        raise UserError("--frames must be at least 1")
    selection = select(
        args.model_dir,
        args.precision,
        args.backend,
        onnx=args.onnx,
        engine=args.engine,
        keyframe_every=args.keyframe_every,
    )
    contract = selection.contract
    frames = args.frames or (300 if args.source.startswith("synthetic") else None)
    # synthetic frames carry their exact flow for TC (DIS follows degraded pixels, not the scene)
    source = open_source(
        args.source, height=contract.height, width=contract.width, frames=frames, with_flow=not args.no_tc
    )
    runner = make_runner(selection, threads=args.threads, device=args.device, cuda_graphs=args.cuda_graphs)
    options = LoopOptions(
        warmup=args.warmup,
        max_frames=frames,
        policy=StatePolicy(reset_every=args.reset_every, scene_cut=args.scene_cut),
        accuracy=not args.no_accuracy,
        consistency=not args.no_tc,
        progress=not args.quiet,
    )
    clock = FrameClock()
    lut = palette_lut(contract.palette, contract.num_classes)
    overlay = Overlay(
        lut, contract.height, contract.width, class_names=contract.class_names(), latency=clock.elapsed_ms
    )
    sinks = []
    if args.overlay:
        sinks.append(OverlayVideo(args.overlay, overlay, source.fps))
    if args.overlay_dir or args.labels_dir:
        sinks.append(PngFrames(overlay, args.overlay_dir, args.labels_dir))
    started = time.perf_counter()
    try:
        with source, runner:
            frames_in = clock.stamp(source)
            result = run_loop(
                runner, frames_in, options, source_fps=source.fps, sinks=tuple(sinks), total=source.length
            )
            memory = runner.memory()
            device = runner.device_name
    finally:
        for sink in sinks:
            if hasattr(sink, "close"):
                sink.close()
    report = build_report(contract, selection.backend, device, result, memory, source=args.source)
    interval = f"-k{args.keyframe_every}" if args.keyframe_every else ""
    path = args.report or args.model_dir / f"run-{contract.precision}-{selection.backend}{interval}.json"
    write_json(path, report)
    print(format_report(report))
    print(f"stage run: {time.perf_counter() - started:.1f} s -> {path}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
