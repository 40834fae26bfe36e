"""Choosing the backend and the artefact it runs, and building its runner.

Artefacts of a run directory (runs/MODEL): model.onnx / model.fp16.onnx / model.int8.onnx for
ONNX Runtime, <precision>.engine (+ .engine.json sidecar) for TensorRT, checkpoint.pt for torch; graphs and
engines of batch N > 1 (several streams) in runs/MODEL/batchN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tempseg.common.contract import Contract, read_onnx_contract
from tempseg.common.errors import UserError
from tempseg.common.platform import auto_backend
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.schedule import KeyframeSchedule

log = logging.getLogger(__name__)
BACKENDS = ("auto", "tensorrt", "tensorrt_rtx", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
GRAPH_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True)
class Selection:
    backend: str
    artefact: Path
    contract: Contract


def select(
    model_dir: Path,
    precision: str,
    backend: str,
    *,
    onnx: Path | None = None,
    engine: Path | None = None,
    keyframe_every: int | None = None,
) -> Selection:
    """Resolve `auto` and find the artefact; UserError when it is missing, with the make command.
    `keyframe_every` replaces a keyframe model's default schedule (UserError for a single graph)."""
    selection = _select(model_dir, precision, backend, onnx=onnx, engine=engine)
    if keyframe_every is None:
        return selection
    contract = selection.contract
    if contract.role != "update":
        raise UserError(
            f"--keyframe-every applies to keyframe models (Accel); {contract.model} runs one graph every frame",
            selection.artefact,
        )
    KeyframeSchedule(keyframe_every)  # refuses an interval below 1 with the option's name
    schedule = {**contract.schedule, "keyframe_every": keyframe_every}
    return Selection(selection.backend, selection.artefact, contract.with_changes(schedule=schedule))


def _select(
    model_dir: Path, precision: str, backend: str, *, onnx: Path | None = None, engine: Path | None = None
) -> Selection:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    engine = engine or model_dir / f"{precision}.engine"
    if backend == "auto":
        backend, why = auto_backend(engine)  # common.platform decides, as it does for `make run`
        log.info("backend auto -> %s (%s)", backend, why)
    if backend in ("tensorrt", "tensorrt_rtx"):
        return Selection(backend, engine, _engine_contract(engine, _expectations(model_dir, precision, backend)))
    if onnx is not None and not onnx.is_file():
        raise UserError("ONNX file not found", onnx)
    graph = onnx or model_dir / GRAPH_NAMES[precision]
    if not graph.is_file():
        raise UserError(
            f"no {precision} graph here; build it with `make export` / `make calibrate` (MODEL={model_dir.name})", graph
        )
    contract = read_onnx_contract(graph)
    if backend == "torch":
        return Selection(backend, checkpoint_of(model_dir), contract)
    return Selection(backend, graph, contract)


def checkpoint_of(model_dir: Path) -> Path:
    """The checkpoint of a run directory; for graphs of another batch (runs/MODEL/batchN, as `make run SOURCES=`
    exports them), their run directory's."""
    checkpoint = model_dir / "checkpoint.pt"
    if not checkpoint.is_file() and model_dir.name.startswith("batch"):
        return model_dir.parent / "checkpoint.pt"
    return checkpoint


def make_runner(selection: Selection, *, threads: int = 0, device: str = "auto", cuda_graphs: bool = False) -> Runner:
    if selection.backend == "onnxruntime":
        from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(selection.contract, selection.artefact, threads=threads)
    if selection.backend == "torch":
        from tempseg.runtime.backends.torch_runner import TorchRunner

        return TorchRunner(selection.contract, selection.artefact, device=device, threads=threads)
    from tempseg.runtime.backends.trt_runner import TensorRTRunner

    return TensorRTRunner(selection.contract, selection.artefact, flavour=selection.backend, cuda_graphs=cuda_graphs)


def _expectations(model_dir: Path, precision: str, backend: str) -> dict:
    """What the user asked for: the precision, the flavour, and the model and input size of the
    run directory's FP32 graph when there is one (an engine from elsewhere must match them)."""
    expect: dict[str, object] = {"precision": precision, "flavour": backend}
    graph = model_dir / GRAPH_NAMES["fp32"]
    if graph.is_file():
        contract = read_onnx_contract(graph)
        expect.update(model=contract.model, input_hw=[contract.height, contract.width])
    return expect


def _engine_contract(engine: Path, expect: dict) -> Contract:
    """The engine's contract from its sidecar, once the sidecar matches `expect` and the file's hash.

    Nothing is deserialized here: an engine is code-like and is refused before TensorRT sees it.
    """
    from tempseg.engine.sidecar import check_engine, sidecar_contract

    if not engine.is_file():
        raise UserError(
            f"no engine here; build it with `make engine MODEL={engine.parent.name} PRECISION={engine.stem}`", engine
        )
    return sidecar_contract(check_engine(engine, expect=expect))
