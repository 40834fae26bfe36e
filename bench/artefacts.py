"""The artefacts of compare's rows, made by the stages' library functions the way the Makefile's targets make them.

Each step runs only when its artefact is missing or older than its input (make's rule, `stale`): the bases
and the fine-tune (train/stage.py), the graphs (export/pipeline.py), the INT8 graph (calibration) and the
engines (engine/pipeline.py). A run directory with graphs and no checkpoint is deployed: its graphs are taken
as they are.
"""

from __future__ import annotations

import time
from pathlib import Path

from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write
from tempseg.models import UnknownModelError, check_model_input
from tempseg.models.registry import base_model, model_config, reference_model
from tempseg.runtime.session import GRAPH_NAMES
from tempseg.train.config import preset_config


def build_artefacts(
    model: str, precisions: list[str], *, engines: bool, preset: str, height: int, width: int, runs: Path, frames: int
) -> None:
    """The run directory's artefacts that are missing or older than their input, made by the stages' library
    functions as the Makefile's targets make them (RUNS/MODEL: checkpoint.pt, model.onnx, model.fp16.onnx,
    model.int8.onnx when int8 is asked for, <precision>.engine when `engines`). A run directory with graphs
    and no checkpoint is deployed: its graphs are taken as they are (Makefile DEPLOYED)."""
    from tempseg.export.parity import ParityError
    from tempseg.export.pipeline import export_run

    check_row(model, height, width)  # make's export.args: a size the export would refuse stops before training
    run_dir = runs / model
    checkpoint, graphs = run_dir / "checkpoint.pt", {p: run_dir / name for p, name in GRAPH_NAMES.items()}
    deployed = not checkpoint.is_file() and any(g.is_file() for g in graphs.values())
    if not deployed:
        size = write_changed(run_dir / "export.args", f"{height}x{width} batch 1\n")
        if stale(checkpoint):
            train_run(model, preset, runs)
        if stale(graphs["fp32"], size, checkpoint) or stale(graphs["fp16"], size, checkpoint):
            try:
                result = export_run(checkpoint, run_dir, model=model, height=height, width=width)
            except ParityError as err:
                raise UserError(str(err)) from None
            print(result.text)
    if "int8" in precisions and stale(graphs["int8"], *([] if deployed else [graphs["fp32"]])):
        calibrate_run(graphs["fp32"], graphs["int8"], frames)
    for precision in precisions if engines else []:
        if stale(run_dir / f"{precision}.engine", graphs[precision]):
            build_engine_run(graphs[precision], run_dir / f"{precision}.engine")


def check_row(model: str, height: int, width: int) -> None:
    """UserError unless `model` is a name of the grammar that takes a height x width input."""
    try:
        check_model_input(model_config(model), height, width)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None


def stale(target: Path, *sources: Path) -> bool:
    """make's rule: `target` is made when it is missing or older than one of its sources."""
    if not target.is_file():
        return True
    mtime = target.stat().st_mtime
    return any(not s.is_file() or s.stat().st_mtime > mtime for s in sources)


def write_changed(path: Path, text: str) -> Path:
    """Write `text` unless the file holds it already (its time then says when it last changed)."""
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as handle:
            handle.write(text)
    return path


def train_run(model: str, preset: str, runs: Path) -> None:
    """RUNS/MODEL/checkpoint.pt, fine-tuned from RUNS/BASE/base/checkpoint.pt (trained first where missing);
    a keyframe model (Accel) also from the base of its reference network (Makefile BASE, REF, CKPT)."""
    from tempseg.train.stage import train_stage

    reference = reference_model(model)
    bases = {name: runs / name / "base" / "checkpoint.pt" for name in (base_model(model), reference) if name}
    for name, checkpoint in bases.items():
        if stale(checkpoint):
            print(train_stage(preset_config(preset, "base", model=name), checkpoint.parent).line)
    config = preset_config(
        preset,
        "finetune",
        model=model,
        init_from=str(bases[base_model(model)]),
        reference_from=None if reference is None else str(bases[reference]),
    )
    print(train_stage(config, runs / model).line)


def calibrate_run(fp32: Path, int8: Path, frames: int) -> None:
    """model.int8.onnx and calib.json as `make calibrate` makes them for compare (CALIB_FRAMES=frames,
    CALIB_ARGS=--eval-sequences 2: every precision's accuracy is measured here; the check can be short)."""
    from tempseg.calibration import CalibConfig, calibrate
    from tempseg.calibration.summary import format_stage

    started = time.perf_counter()
    config = CalibConfig(method="percentile", frames=frames, eval_sequences=2)
    report = calibrate(fp32, int8, config, calib_json=int8.with_name("calib.json"))
    print(format_stage(report, int8, time.perf_counter() - started))


def build_engine_run(graph: Path, engine: Path) -> None:
    """<precision>.engine as `make engine` builds it (the engine CLI's defaults; a keyframe pair's keyframe
    engine first)."""
    from tempseg.engine.pipeline import build_engines, stage_lines

    started = time.perf_counter()
    results = build_engines(graph, engine)
    print("\n".join(stage_lines(results, time.perf_counter() - started)))


def engine_builder() -> str | None:
    """The TensorRT flavour the engine stage would build with here, or None when none imports."""
    from tempseg.engine.trt import load_tensorrt

    try:
        return load_tensorrt("auto").flavour
    except UserError:
        return None
