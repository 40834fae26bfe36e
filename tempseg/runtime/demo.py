"""`python -m tempseg.runtime.demo --model-dir runs/A --model-dir2 runs/B [--precision fp16] [--frames 200]`.

Writes one video to look at: the same (degraded) clip through two models side by side, each carrying
its own state (runtime/stream.py compare_runners). Per frame:

    [ model A overlay         | model B overlay            ]
    [ input, CLEAN/DEGRADED   | ground-truth labels        ]
    [ strip: per-frame mIoU and TC of both models, degraded frames shaded, cursor at this frame ]

Per-frame mIoU is the mIoU of that frame alone (classes present in its label or prediction). Per-frame TC
is the IoU of this prediction with the previous one warped onto this frame, as metrics/consistency.py
computes TC for a whole sequence: with the synthetic generator's exact flow, DIS for other sources.
The video is written to a temp file beside --out and renamed when complete: an error or Ctrl-C leaves
an existing file as it was. The clip is held in memory while it streams (compare_runners runs the same
frames through each runner): about 0.5 MB a frame at 256x512.
OpenCV and numpy only (no torch, no matplotlib): it runs on a Jetson.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import atomic_path
from tempseg.common.text import number
from tempseg.data.frames import Frame
from tempseg.data.sources import open_source
from tempseg.metrics import ConfusionMatrix, TemporalConsistency
from tempseg.runtime.outputs import Overlay, palette_lut
from tempseg.runtime.session import BACKENDS, PRECISIONS, Selection, make_runner, select
from tempseg.runtime.stream import compare_runners

log = logging.getLogger("tempseg.runtime.demo")

DEFAULT_FRAMES = 200
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}  # as runtime/outputs.OverlayVideo

# BGR colours of the drawing (the labels use the contract's palette).
MODEL_COLOURS = ((0, 165, 255), (255, 200, 0))  # model A orange, model B cyan: titles and plot lines
CLEAN_BADGE = (0, 150, 0)
DEGRADED_BADGE = (0, 0, 210)
SHADE = (40, 40, 90)  # degraded frames in the strip
GRID = (70, 70, 70)
WHITE = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


# ---- layout ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def view(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


@dataclass(frozen=True)
class Layout:
    """Where everything sits in a frame of the demo video, for panels of height x width."""

    height: int
    width: int

    @property
    def scale(self) -> float:
        """Font scale: 0.5 at 512 wide, readable down to 128."""
        return max(0.3, self.width / 1024)

    @property
    def text_h(self) -> int:
        return cv2.getTextSize("Ag", FONT, self.scale, 1)[0][1] + 4

    @property
    def strip_h(self) -> int:
        return max(64, self.height // 2 // 2 * 2)  # two plots, even (codecs like even sizes)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video."""
        return 2 * self.width, 2 * self.height + self.strip_h

    @property
    def model_a(self) -> Box:
        return Box(0, 0, self.width, self.height)

    @property
    def model_b(self) -> Box:
        return Box(self.width, 0, self.width, self.height)

    @property
    def input(self) -> Box:
        return Box(0, self.height, self.width, self.height)

    @property
    def truth(self) -> Box:
        return Box(self.width, self.height, self.width, self.height)

    @property
    def badge(self) -> Box:
        """The CLEAN / DEGRADED:<kind> badge, at the bottom left of the input panel."""
        label_w = cv2.getTextSize("DEGRADED:motion_blur", FONT, self.scale, 1)[0][0] + 8
        h = self.text_h + 4
        return Box(0, 2 * self.height - h, min(label_w, self.width), h)

    @property
    def strip(self) -> Box:
        return Box(0, 2 * self.height, 2 * self.width, self.strip_h)


# ---- per-frame metrics ----------------------------------------------------------------------------------


def frame_miou(prediction: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """mIoU of one frame: classes present in its label or prediction; NaN where every pixel is ignored."""
    matrix = ConfusionMatrix(num_classes)
    matrix.update(prediction, label)
    return matrix.miou() if matrix.total else math.nan


class FrameConsistency:
    """Per-frame TC of several prediction streams over the same frames: each stream's metrics.TemporalConsistency
    gives the previous prediction warped onto this frame, scored here for this frame alone; NaN on the
    first frame of each sequence."""

    def __init__(self, num_classes: int, names: Sequence[str]) -> None:
        self.num_classes = num_classes
        self.metrics = {name: TemporalConsistency(num_classes) for name in names}

    def update(self, frame: Frame, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        flow = None
        if frame.flow_prev is not None and frame.flow_valid is not None:  # exact flow: set together, or neither
            flow = (frame.flow_prev, frame.flow_valid)
        scores = {}
        for name, metric in self.metrics.items():
            reference = metric.update(frame.image, predictions[name], frame.sequence, flow)
            scores[name] = math.nan if reference is None else frame_miou(predictions[name], reference, self.num_classes)
        return scores

    @property
    def flow(self) -> str | None:
        """ "exact" (synthetic), "dis" or None, as metrics.TemporalConsistency names it."""
        return next(iter(self.metrics.values())).flow


@dataclass
class Series:
    """One model's per-frame mIoU and TC, in frame order (NaN where undefined)."""

    miou: list[float] = field(default_factory=list)
    tc: list[float] = field(default_factory=list)

    def means(self, degraded: Sequence[bool]) -> dict[str, tuple[float, float]]:
        """{"clean": (mIoU, TC), "degraded": (mIoU, TC)}: means over the frames of each kind (NaN: none)."""
        flags = np.asarray(degraded, bool)
        out = {}
        for kind, mask in (("clean", ~flags), ("degraded", flags)):
            out[kind] = (_nanmean(np.asarray(self.miou)[mask]), _nanmean(np.asarray(self.tc)[mask]))
        return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


# ---- drawing --------------------------------------------------------------------------------------------


def put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour=WHITE) -> None:
    """Text on a black box, readable on any background; `origin` is the bottom left of the text."""
    (w, h), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x - 2, y - h - 2), (x + w + 2, y + baseline), (0, 0, 0), -1)
    cv2.putText(image, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


class Strip:
    """The running plot under the panels: mIoU (top) and TC (bottom) of both models against the frame
    index, degraded frames shaded as they are reached, a cursor at the current frame."""

    def __init__(self, box: Box, frames: int, names: Sequence[str], scale: float) -> None:
        self.box, self.frames, self.names, self.scale = box, frames, tuple(names), scale
        self.margin = cv2.getTextSize("mIoU", FONT, scale, 1)[0][0] + 10
        self.plot_h = box.h // 2
        self.base = np.zeros((box.h, box.w, 3), np.uint8)
        self.points: dict[tuple[str, str], list[tuple[int, int] | None]] = {
            (name, metric): [] for name in self.names for metric in ("miou", "tc")
        }
        for row, metric in enumerate(("mIoU", "TC")):
            top = row * self.plot_h
            for value in (0.0, 0.5, 1.0):
                y = self._y(row, value)
                cv2.line(self.base, (self.margin, y), (box.w - 1, y), GRID, 1)
            put_text(self.base, metric, (4, top + self.plot_h // 2 + 4), scale)
        cv2.line(self.base, (0, self.plot_h), (box.w - 1, self.plot_h), (120, 120, 120), 1)

    def x(self, t: int) -> int:
        return self.margin + round(t * (self.box.w - 1 - self.margin) / max(self.frames - 1, 1))

    def _y(self, row: int, value: float) -> int:
        pad = 3
        return row * self.plot_h + pad + round((1.0 - value) * (self.plot_h - 1 - 2 * pad))

    def add(self, t: int, degraded: bool, values: dict[str, tuple[float, float]]) -> None:
        """Frame t: shade it when degraded, and add each model's (mIoU, TC)."""
        if degraded:
            half = max((self.x(t + 1) - self.x(t)) // 2, 1)
            cv2.rectangle(self.base, (self.x(t) - half, 0), (self.x(t) + half, self.box.h - 1), SHADE, -1)
            for row in (0, 1):  # the grid stays visible over the shading
                for value in (0.0, 0.5, 1.0):
                    y = self._y(row, value)
                    cv2.line(self.base, (self.x(t) - half, y), (self.x(t) + half, y), GRID, 1)
        for name in self.names:
            for row, metric in enumerate(("miou", "tc")):
                value = values[name][row]
                point = None if math.isnan(value) else (self.x(t), self._y(row, min(max(value, 0.0), 1.0)))
                self.points[name, metric].append(point)

    def draw(self, out: np.ndarray, t: int) -> None:
        out[:] = self.base
        for index, name in enumerate(self.names):
            for metric in ("miou", "tc"):
                for run in _runs(self.points[name, metric]):
                    if len(run) == 1:
                        cv2.circle(out, run[0], 1, MODEL_COLOURS[index], -1)
                    else:
                        cv2.polylines(out, [np.array(run, np.int32)], False, MODEL_COLOURS[index], 1, cv2.LINE_AA)
        cv2.line(out, (self.x(t), 0), (self.x(t), self.box.h - 1), WHITE, 1)


def _runs(points: list[tuple[int, int] | None]) -> list[list[tuple[int, int]]]:
    """Consecutive defined points: a NaN (no label, first frame of a sequence) breaks the line."""
    runs: list[list[tuple[int, int]]] = [[]]
    for point in points:
        if point is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(point)
    return [run for run in runs if run]


class Composer:
    """Builds each frame of the demo video into one canvas allocated once."""

    def __init__(
        self, layout: Layout, lut: np.ndarray, titles: Sequence[str], frames: int, class_names: Sequence[str] = ()
    ) -> None:
        self.layout, self.titles = layout, tuple(titles)
        h, w = layout.height, layout.width
        self.overlays = [Overlay(lut, h, w) for _ in self.titles]
        # the labels' colours alone, with the key to them (the model panels' titles take their top rows)
        self.truth = Overlay(lut, h, w, alpha=1.0, class_names=class_names)
        self.canvas = np.zeros((layout.size[1], layout.size[0], 3), np.uint8)
        self.strip = Strip(layout.strip, frames, self.titles, layout.scale)

    def __call__(
        self, t: int, frame: Frame, predictions: Sequence[np.ndarray], values: dict[str, tuple[float, float]]
    ) -> np.ndarray:
        layout, scale, line = self.layout, self.layout.scale, self.layout.text_h
        canvas = self.canvas
        for index, (box, title, overlay, labels) in enumerate(
            zip((layout.model_a, layout.model_b), self.titles, self.overlays, predictions, strict=True)
        ):
            view = box.view(canvas)
            view[:] = overlay(frame, labels)
            put_text(view, title, (4, line), scale, MODEL_COLOURS[index])
            miou, tc = values[title]
            put_text(view, f"mIoU {number(miou, nan='n/a')}  TC {number(tc, nan='n/a')}", (4, box.h - 6), scale)
        view = layout.input.view(canvas)
        view[:] = frame.image
        put_text(view, f"input  {frame.sequence} #{frame.index}", (4, line), scale)
        badge = layout.badge
        colour = DEGRADED_BADGE if frame.degraded else CLEAN_BADGE
        text = f"DEGRADED:{frame.degraded}" if frame.degraded else "CLEAN"
        cv2.rectangle(view, (badge.x, badge.y - layout.height), (badge.w - 1, layout.height - 1), colour, -1)
        cv2.putText(view, text, (badge.x + 4, layout.height - 6), FONT, scale, WHITE, 1, cv2.LINE_AA)
        view = layout.truth.view(canvas)
        if frame.label is None:
            view[:] = 0
            put_text(view, "no labels in this source", (4, 2 * line), scale)
        else:
            view[:] = self.truth(frame, frame.label)
        put_text(view, "ground truth", (4, line), scale)
        self.strip.add(t, frame.degraded is not None, values)
        self.strip.draw(layout.strip.view(canvas), t)
        return canvas


# ---- the command ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempseg.runtime.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, required=True, help="run directory of model A (runs/A)")
    p.add_argument("--model-dir2", type=Path, required=True, help="run directory of model B (runs/B)")
    p.add_argument("--precision", default="fp16", choices=PRECISIONS, help="graph/engine precision (default fp16)")
    p.add_argument("--precision2", choices=PRECISIONS, help="model B's precision (default: --precision)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: TensorRT when installed with a GPU and an engine, else ONNX Runtime (both models)",
    )
    p.add_argument(
        "--source",
        default="synthetic",
        help="synthetic[:SEED] (labelled, degraded) | VIDEO | FOLDER | cityscapes:PATH | folder:PATH[:SPLIT] | "
        "camvid:PATH[:SPLIT]",
    )
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames (default {DEFAULT_FRAMES})")
    p.add_argument("--out", type=Path, help="the video (.mp4/.avi; default RUNS/demo-A-vs-B.mp4 beside model A)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime / torch (0: their default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch backend device")
    return p.parse_args(argv)


def _select(model_dir: Path, precision: str, backend: str) -> Selection:
    if not model_dir.is_dir():
        raise UserError("no such run directory (expected runs/MODEL with its graphs)", model_dir)
    return select(model_dir, precision, backend)


def check_pair(a: Selection, b: Selection) -> None:
    """The two models must read the same frames and speak the same classes."""
    ca, cb = a.contract, b.contract
    if (ca.height, ca.width) != (cb.height, cb.width):
        raise UserError(
            f"takes {cb.height}x{cb.width} frames, {a.artefact} takes {ca.height}x{ca.width}: "
            "the two models must have the same input size",
            b.artefact,
        )
    if ca.num_classes != cb.num_classes:
        raise UserError(
            f"has {cb.num_classes} classes, {a.artefact} has {ca.num_classes}: "
            "the two models must have the same classes",
            b.artefact,
        )


def _title(model_dir: Path, selection: Selection) -> str:
    return f"{model_dir.resolve().name} ({selection.contract.precision}, {selection.backend})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    out = (
        args.out
        or args.model_dir.parent / f"demo-{args.model_dir.resolve().name}-vs-{args.model_dir2.resolve().name}.mp4"
    )
    if out.suffix.lower() not in FOURCC:
        raise UserError(f"cannot write a {out.suffix or 'suffix-less'} video: use {', '.join(FOURCC)}", out)
    a = _select(args.model_dir, args.precision, args.backend)
    b = _select(args.model_dir2, args.precision2 or args.precision, args.backend)
    check_pair(a, b)
    titles = [f"A: {_title(args.model_dir, a)}", f"B: {_title(args.model_dir2, b)}"]
    contract = a.contract
    source = open_source(args.source, height=contract.height, width=contract.width, frames=args.frames, with_flow=True)
    with source:
        fps = source.fps
        frames = list(source)  # compare_runners streams the same frames through each runner
    if not frames:
        raise UserError("gave no frames", args.source)
    layout = Layout(contract.height, contract.width)
    lut = palette_lut(contract.palette, contract.num_classes)
    composer = Composer(layout, lut, titles, len(frames), contract.class_names())
    consistency = FrameConsistency(contract.num_classes, titles)
    series = {title: Series() for title in titles}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        runners = {
            title: stack.enter_context(make_runner(s, threads=args.threads, device=args.device))
            for title, s in zip(titles, (a, b), strict=True)
        }
        tmp = stack.enter_context(atomic_path(out))
        writer = cv2.VideoWriter(
            str(tmp), cv2.VideoWriter.fourcc(*FOURCC[out.suffix.lower()]), max(1.0, fps), layout.size
        )
        stack.callback(writer.release)
        if not writer.isOpened():
            raise UserError("cannot open a video writer for this file (extension / codec?)", out)
        for t, steps in enumerate(compare_runners(runners, frames)):
            frame = steps[titles[0]].frame
            predictions = {title: steps[title].labels for title in titles}
            tc = consistency.update(frame, predictions)
            values = {}
            for title in titles:
                miou = (
                    math.nan
                    if frame.label is None
                    else frame_miou(predictions[title], frame.label, contract.num_classes)
                )
                series[title].miou.append(miou)
                series[title].tc.append(tc[title])
                values[title] = (miou, tc[title])
            writer.write(composer(t, frame, [predictions[title] for title in titles], values))
        writer.release()  # complete before atomic_path renames it
    degraded = [frame.degraded is not None for frame in frames]
    summary = "; ".join(
        f"{title}: "
        + ", ".join(
            f"{kind} mIoU {number(m, nan='n/a')} TC {number(c, nan='n/a')}"
            for kind, (m, c) in series[title].means(degraded).items()
        )
        for title in titles
    )
    print(
        f"demo: {out}: {len(frames)} frames ({sum(degraded)} degraded), {time.perf_counter() - started:.1f} s; "
        f"{summary} (TC with {consistency.flow or 'no'} flow)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
