"""The artefacts of compare's rows, made by the stages' library functions the way the Makefile's targets make them.

Each step runs only when its artefact is missing or older than its input (make's rule, `stale`): the bases
and the fine-tune (train/stage.py), the graphs (export/pipeline.py), the INT8 graph (calibration) and the
engines (engine/pipeline.py). A run directory with graphs and no checkpoint is deployed: its graphs are taken
as they are.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tempseg.common.errors import UserError
from tempseg.common.io import write_text
from tempseg.models import UnknownModelError, check_model_input
from tempseg.models.registry import base_model, model_config, reference_model
from tempseg.runtime.session import GRAPH_NAMES
from tempseg.train.config import preset_config

SYNTHETIC = "synthetic"  # the default data: its bases keep the name they had before other data could be trained


def build_artefacts(
    model: str,
    precisions: list[str],
    *,
    engines: bool,
    preset: str,
    height: int,
    width: int,
    runs: Path,
    frames: int,
    data: str = SYNTHETIC,
) -> None:
    """The run directory's artefacts that are missing or older than their input, made by the stages' library
    functions as the Makefile's targets make them (RUNS/MODEL: checkpoint.pt, model.onnx, model.fp16.onnx,
    model.int8.onnx when int8 is asked for, <precision>.engine when `engines`), trained and calibrated on
    `data`. A run directory with graphs and no checkpoint is deployed: its graphs are taken as they are
    (Makefile DEPLOYED)."""
    from tempseg.export.parity import ParityError
    from tempseg.export.pipeline import export_run

    check_row(model, height, width)  # make's export.args: a size the export would refuse stops before training
    run_dir = runs / model
    checkpoint, graphs = run_dir / "checkpoint.pt", {p: run_dir / name for p, name in GRAPH_NAMES.items()}
    deployed = not checkpoint.is_file() and any(g.is_file() for g in graphs.values())
    if not deployed:
        check_trained_on(run_dir, data)
        size = write_changed(run_dir / "export.args", f"{height}x{width} batch 1\n")
        if stale(checkpoint):
            train_run(model, preset, runs, data)
        if stale(graphs["fp32"], size, checkpoint) or stale(graphs["fp16"], size, checkpoint):
            try:
                result = export_run(checkpoint, run_dir, model=model, height=height, width=width)
            except ParityError as err:
                raise UserError(str(err)) from None
            print(result.text)
    if "int8" in precisions and stale(graphs["int8"], *([] if deployed else [graphs["fp32"]])):
        calibrate_run(graphs["fp32"], graphs["int8"], frames, data)
    for precision in precisions if engines else []:
        if stale(run_dir / f"{precision}.engine", graphs[precision]):
            build_engine_run(graphs[precision], run_dir / f"{precision}.engine")


def check_row(model: str, height: int, width: int) -> None:
    """UserError unless `model` is a name of the grammar that takes a height x width input."""
    try:
        check_model_input(model_config(model), height, width)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None


def check_trained_on(run_dir: Path, data: str) -> None:
    """UserError where the run's checkpoint was trained on other data than `data` (its data.spec, synthetic where
    none is recorded), as the Makefile refuses it: a model of other classes is neither reused nor overwritten."""
    recorded = run_dir / "data.spec"
    trained = recorded.read_text().strip() if recorded.is_file() else SYNTHETIC
    if (run_dir / "checkpoint.pt").is_file() and trained != data:
        raise UserError(f"was trained on DATA={trained}, not DATA={data}: choose another --runs (RUNS=)", run_dir)


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
        write_text(path, text)
    return path


def train_run(model: str, preset: str, runs: Path, data: str = SYNTHETIC) -> None:
    """RUNS/MODEL/checkpoint.pt, fine-tuned on `data` from RUNS/BASE/<base_dir(data)>/checkpoint.pt (trained
    first where missing); a keyframe model (Accel) also from the base of its reference network (Makefile BASE,
    REF, CKPT); the data it was trained on in RUNS/MODEL/data.spec, as the Makefile records it."""
    from tempseg.train.stage import train_stage

    reference = reference_model(model)
    bases = {name: runs / name / base_dir(data) / "checkpoint.pt" for name in (base_model(model), reference) if name}
    for name, checkpoint in bases.items():
        if stale(checkpoint):
            print(train_stage(preset_config(preset, "base", model=name, data=data), checkpoint.parent).line)
    config = preset_config(
        preset,
        "finetune",
        model=model,
        data=data,
        init_from=str(bases[base_model(model)]),
        reference_from=None if reference is None else str(bases[reference]),
    )
    print(train_stage(config, runs / model).line)
    write_changed(runs / model / "data.spec", f"{data}\n")


def base_dir(data: str) -> str:
    """The directory of a base trained on `data`, the Makefile's base$(DATA_SLUG): `base` for the synthetic video,
    base-KIND-LAST-CKSUM otherwise (the last part of the path, then POSIX cksum of the whole spec)."""
    if data == SYNTHETIC:
        return "base"
    kind, _, rest = data.partition(":")
    rest = rest[:-1] if rest.endswith("/") else rest  # make's $(patsubst %/,%,...): one trailing slash
    last = rest.replace(":", "-").rpartition("/")[2]
    return f"base-{kind.replace('/', '-')}-{last}-{posix_cksum(data.encode())}"


def posix_cksum(data: bytes) -> int:
    """The checksum `cksum` prints for `data`: the Makefile's own tool, so the two names cannot drift apart."""
    result = subprocess.run(["cksum"], input=data, capture_output=True, check=True)
    return int(result.stdout.split()[0])


def calibrate_run(fp32: Path, int8: Path, frames: int, data: str = SYNTHETIC) -> None:
    """model.int8.onnx and calib.json as `make calibrate` makes them for compare (DATA=data, CALIB_FRAMES=frames,
    CALIB_ARGS=--eval-sequences 2: every precision's accuracy is measured here; the check can be short)."""
    from tempseg.calibration import CalibConfig, calibrate
    from tempseg.calibration.summary import format_stage

    started = time.perf_counter()
    config = CalibConfig(method="percentile", frames=frames, data=data, eval_sequences=2)
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
