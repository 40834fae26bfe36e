"""`python -m tempseg.runtime --model-dir runs/MODEL [--precision fp16] [--backend auto] [--source synthetic]
[--frames N]`.

Runs the stateful frame loop and prints the latency, memory and accuracy table; writes the
report to runs/MODEL/run-<precision>-<backend>.json. `--source` repeated streams K sources through one graph
exported at batch K, each in its own batch slot with its own state, one row per stream in the report
(runtime/batch.py: what happens when a stream ends, stalls or resets). Sources: synthetic (labelled), a video
file, an image folder, cityscapes:PATH[:SPLIT], labelled video of your own (folder:PATH[:SPLIT],
camvid:PATH[:SPLIT]), camera:N. The overlay shows the graph's classes (names and colours from its
metadata) and each frame's latency. Ctrl-C stops after the current frame and still writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from tempseg.common.contract import Contract
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json
from tempseg.data.frames import FrameSource
from tempseg.data.sources import open_source
from tempseg.runtime.batch import Sink, check_streams, run_batch
from tempseg.runtime.loop import LoopOptions, run_loop
from tempseg.runtime.outputs import FrameClock, Overlay, OverlayVideo, PngFrames, palette_lut
from tempseg.runtime.policy import StatePolicy
from tempseg.runtime.report import build_batch_report, build_report, format_batch_report, format_report
from tempseg.runtime.session import BACKENDS, PRECISIONS, Selection, make_runner, select

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
        action="append",
        help="synthetic[:SEED] | VIDEO | FOLDER | cityscapes:PATH[:SPLIT] | folder:PATH[:SPLIT] | "
        "camvid:PATH[:SPLIT] | camera:N (default synthetic); repeated: one stream per source, each in its own "
        "batch slot of a graph exported at that batch, each with its own state",
    )
    p.add_argument(
        "--frames", type=int, help="stop after N frames of each source (default: the whole source; synthetic: 300)"
    )
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
    specs = args.source or ["synthetic"]
    if len(specs) > 1:
        return run_streams(args, selection, specs)
    frames = frame_limit(args, specs[0])
    source = open_one(specs[0], contract, args)
    runner = make_runner(selection, threads=args.threads, device=args.device, cuda_graphs=args.cuda_graphs)
    options = loop_options(args, frames)
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
    report = build_report(contract, selection.backend, device, result, memory, source=specs[0])
    path = report_path(args, selection)
    write_json(path, report)
    print(format_report(report))
    print(f"stage run: {time.perf_counter() - started:.1f} s -> {path}")
    return 130 if result.interrupted else 0


def frame_limit(args: argparse.Namespace, spec: str) -> int | None:
    """--frames, or 300 for synthetic video (which never ends), or None: the whole source."""
    return args.frames or (300 if spec.startswith("synthetic") else None)


def open_one(spec: str, contract: Contract, args: argparse.Namespace) -> FrameSource:
    """`spec` opened at the graph's size, capped at frame_limit(); synthetic frames carry their exact flow for TC
    (DIS follows degraded pixels, not the scene)."""
    frames = frame_limit(args, spec)
    return open_source(spec, height=contract.height, width=contract.width, frames=frames, with_flow=not args.no_tc)


def loop_options(args: argparse.Namespace, frames: int | None) -> LoopOptions:
    return LoopOptions(
        warmup=args.warmup,
        max_frames=frames,
        policy=StatePolicy(reset_every=args.reset_every, scene_cut=args.scene_cut),
        accuracy=not args.no_accuracy,
        consistency=not args.no_tc,
        progress=not args.quiet,
    )


def report_path(args: argparse.Namespace, selection: Selection, streams: int = 1) -> Path:
    interval = f"-k{args.keyframe_every}" if args.keyframe_every else ""
    many = f"-{streams}streams" if streams > 1 else ""
    contract = selection.contract
    return args.report or args.model_dir / f"run-{contract.precision}-{selection.backend}{interval}{many}.json"


def run_streams(args: argparse.Namespace, selection: Selection, specs: list[str]) -> int:
    """Several sources, one batched graph (runtime/batch.py): stream k in batch slot k, a report row per stream."""
    contract = selection.contract
    check_streams(contract, len(specs))  # before opening cameras or loading a model
    sources = open_sources(specs, contract, args)
    names = [spec for spec, _ in sources]
    runner = make_runner(selection, threads=args.threads, device=args.device, cuda_graphs=args.cuda_graphs)
    options = loop_options(args, None)  # each source stops at its own frame_limit (open_one); the run at the last
    started = time.perf_counter()
    sinks = [stream_sinks(args, contract, k, len(names), source.fps) for k, (_, source) in enumerate(sources)]
    try:
        with contextlib.ExitStack() as stack:
            for _, source in sources:
                stack.enter_context(source)
            stack.enter_context(runner)
            fps = min(source.fps for _, source in sources)
            result = run_batch(runner, [s for _, s in sources], names, options, source_fps=fps, sinks=sinks)
            memory, device = runner.memory(), runner.device_name
    finally:
        for sink in itertools.chain.from_iterable(sinks):
            if hasattr(sink, "close"):
                sink.close()
    report = build_batch_report(contract, selection.backend, device, result, memory, sources=names)
    path = report_path(args, selection, len(names))
    write_json(path, report)
    print(format_batch_report(report))
    print(f"stage run: {time.perf_counter() - started:.1f} s -> {path}")
    return 130 if result.interrupted else 0


def open_sources(specs: list[str], contract: Contract, args: argparse.Namespace) -> list[tuple[str, FrameSource]]:
    """Each spec opened and conformed to the graph's size (a source of another size is resized, said once per
    source). A camera that does not open is left out with a warning while another source opens (cameras fail
    for passing reasons: unplugged, in use); any other source that does not open stops the run, as does no
    source opening at all: a mistyped path must not run three cameras of four unnoticed."""
    opened: list[tuple[str, FrameSource]] = []
    failed: list[UserError] = []
    for spec in specs:
        try:
            opened.append((spec, open_one(spec, contract, args)))
        except UserError as error:
            if not spec.startswith("camera:"):
                for _, source in opened:
                    source.close()
                raise
            log.warning("%s; running the other sources", error)
            failed.append(error)
    if not opened:
        raise failed[0]
    return opened


def stream_sinks(args: argparse.Namespace, contract: Contract, slot: int, count: int, fps: float) -> list[Sink]:
    """Stream `slot`'s overlay video and PNG folders: the paths given, with -<slot> / stream-<slot> per stream."""
    if not (args.overlay or args.overlay_dir or args.labels_dir):
        return []
    lut = palette_lut(contract.palette, contract.num_classes)
    overlay = Overlay(lut, contract.height, contract.width, class_names=contract.class_names())
    sinks: list[Sink] = []
    if args.overlay:
        path = args.overlay.with_name(f"{args.overlay.stem}-{slot}{args.overlay.suffix}") if count > 1 else args.overlay
        sinks.append(OverlayVideo(path, overlay, fps))
    if args.overlay_dir or args.labels_dir:
        folder = f"stream-{slot}"
        overlay_dir = args.overlay_dir / folder if args.overlay_dir else None
        labels_dir = args.labels_dir / folder if args.labels_dir else None
        sinks.append(PngFrames(overlay, overlay_dir, labels_dir))
    return sinks


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
