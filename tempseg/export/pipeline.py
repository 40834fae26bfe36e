"""The export stage as one call: checkpoint -> model.onnx, model.fp16.onnx and export.json.

Order: check the name and size (bad input fails before torch loads the checkpoint), load the checkpoint,
build the contract, export the FP32 and FP16 graphs (a keyframe model's keyframe graphs too, and twins with
logits when the deployed graphs have none), stream the parity check, refuse FP32 drift (ParityError, nothing
written), then save the graphs atomically and write export.json.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from tempseg.common.classes import ClassTable
from tempseg.common.contract import LOGITS, Contract, TensorSpec, set_metadata
from tempseg.common.errors import UserError
from tempseg.common.io import sha256_file, write_json
from tempseg.data.classes import class_table
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.export.fp16 import convert_fp16
from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
from tempseg.export.parity import FP16_TARGET_AGREEMENT, check_fp32, merge, streaming_parity
from tempseg.models import FCResNet, UnknownModelError, check_model_input, model_config, resolve_name
from tempseg.models.accel import Accel
from tempseg.models.checkpoint import checkpoint_classes, load_model
from tempseg.models.contract import KEYFRAME_EVERY, keyframe_contract

log = logging.getLogger("tempseg.export")


@dataclass(frozen=True)
class ExportResult:
    """What export_run wrote."""

    paths: dict[str, Path]  # graphs by role and precision: fp32, fp16 (+ keyframe_fp32, keyframe_fp16), in save order
    report_path: Path  # export.json beside the graphs
    report: dict[str, Any]  # what export.json holds
    parity: dict[str, dict]  # streaming parity of the fp32 and fp16 graphs (per frame too)
    seconds: float  # wall time of the whole call

    @property
    def line(self) -> str:
        """The stage line the CLI prints: `stage export: 12.3 s -> model.onnx, model.fp16.onnx`."""
        written = ", ".join(str(p) for p in self.paths.values())
        return f"stage export: {self.seconds:.1f} s -> {written}"

    @property
    def text(self) -> str:
        """What the stage prints: the parity figures and file sizes, then the stage line."""
        return f"{format_report(self.report, self.report_path.parent)}\n{self.line}"


def export_run(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    model: str,
    height: int = 256,
    width: int = 512,
    batch: int = 1,
    logits: bool = False,
    keyframe_every: int = KEYFRAME_EVERY,
    parity_frames: int = 30,
    parity_seed: int = 0,
) -> ExportResult:
    """Export the checkpoint of `model` at height x width pixels and `batch` into out_dir (default: the
    checkpoint's folder). The graphs output labels (and states) only unless `logits`; a keyframe model
    records `keyframe_every` as its default schedule. Parity streams `parity_frames` frames of synthetic val
    sequence `parity_seed`. UserError on bad input, ParityError (nothing written) when FP32 drifts."""
    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    try:
        name = resolve_name(model)
        check_model_input(model_config(name), height, width)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None
    if min(batch, parity_frames, keyframe_every) < 1:
        raise UserError(
            f"batch ({batch}), parity frames ({parity_frames}) and keyframe interval ({keyframe_every}) "
            "must be at least 1"
        )
    out_dir = checkpoint.parent if out_dir is None else Path(out_dir)
    net, payload = load_model(checkpoint, expect_model=name)
    contract = build_contract(
        net,
        name,
        height=height,
        width=width,
        batch=batch,
        checkpoint_sha256=sha256_file(checkpoint),
        logits=logits,
        keyframe_every=keyframe_every,
        classes=graph_classes(payload, checkpoint),
    )
    t0 = time.perf_counter()
    graphs = export_graphs(net, contract)
    export_s = time.perf_counter() - t0
    video = SyntheticVideo(split_seed("val", parity_seed), height, width, length=parity_frames)
    parity = check_parity(net, graphs, [f.image for f in video])
    check_fp32(parity["fp32"], str(out_dir / "model.onnx"))  # ParityError before anything is written
    paths = save_graphs(graphs, out_dir)
    report = export_report(name, contract, graphs, paths, parity, export_s)
    report_path = out_dir / "export.json"
    write_json(report_path, report)
    if parity["fp16"]["mean_label_agreement"] < FP16_TARGET_AGREEMENT:
        log.warning(
            "FP16 label agreement %.3f %% is below the 99.5 %% target", 100 * parity["fp16"]["mean_label_agreement"]
        )
    return ExportResult(paths, report_path, report, parity, time.perf_counter() - started)


def graph_classes(payload: dict[str, Any], checkpoint: Path) -> ClassTable | None:
    """The class table the graph's metadata names: the one the checkpoint was trained on; for a checkpoint
    older than that record, the table of its class count (the 19 Cityscapes classes), as exports always had."""
    return checkpoint_classes(payload, checkpoint) or class_table(payload["config"]["num_classes"])


def export_graphs(model: FCResNet | Accel, contract: Contract) -> dict[str, tuple[onnx.ModelProto, Contract]]:
    """fp32 and fp16 deployed graphs, plus in-memory twins with logits when those have none; a keyframe
    model's keyframe graphs under the same names prefixed `keyframe_`."""
    graphs = {"fp32": (export_fp32(model, contract), contract)}
    if contract.logits is None:
        c = contract.num_classes
        twin = contract.with_changes(
            logits=TensorSpec(LOGITS, (contract.batch, c, contract.height, contract.width), "float32")
        )
        graphs["fp32_logits"] = (export_fp32(model, twin), twin)
    if contract.role == "update":
        for name in list(graphs):
            keyframe = keyframe_contract(graphs[name][1])
            graphs[f"keyframe_{name}"] = (export_fp32(model, keyframe), keyframe)
    for name in list(graphs):
        graph, graph_contract = graphs[name]
        graphs[name.replace("fp32", "fp16")] = convert_fp16(graph, graph_contract)
    if contract.role == "update":
        for name in ("fp16", "fp16_logits"):
            if name in graphs:
                graph, fp16 = graphs[name]
                fp16 = fp16.with_changes(schedule={**fp16.schedule, "keyframe_graph": "keyframe.fp16.onnx"})
                set_metadata(graph, fp16)
                graphs[name] = (graph, fp16)
    return graphs


def check_parity(model: FCResNet | Accel, graphs: dict, frames: list) -> dict[str, dict]:
    """Streaming parity of the deployed graphs; logit errors from their twins where they have no logits."""
    reports = streaming_parity(model, graphs, frames)
    if "fp32_logits" not in reports:
        return reports
    return {p: merge(reports[p], reports[f"{p}_logits"]) for p in ("fp32", "fp16")}


def save_graphs(graphs: dict, out_dir: Path) -> dict[str, Path]:
    """model.onnx, then model.fp16.onnx recording model.onnx's hash as its source; a keyframe model's
    keyframe graphs first (keyframe.onnx, keyframe.fp16.onnx), so no update graph names a missing one."""
    paths = {}
    for prefix, stem in (("keyframe_", "keyframe"), ("", "model")):
        if f"{prefix}fp32" not in graphs:
            continue
        fp32_path = save_onnx(graphs[f"{prefix}fp32"][0], out_dir / f"{stem}.onnx")
        fp16, fp16_contract = graphs[f"{prefix}fp16"]
        set_metadata(fp16, fp16_contract.with_changes(source_onnx_sha256=sha256_file(fp32_path)))
        paths[f"{prefix}fp32"], paths[f"{prefix}fp16"] = fp32_path, save_onnx(fp16, out_dir / f"{stem}.fp16.onnx")
    return paths


def export_report(name: str, contract: Contract, graphs: dict, paths: dict, parity: dict, export_s: float) -> dict:
    """export.json: input, outputs, states, checkpoint hash, export seconds, files (bytes, sha256), parity."""
    fp16_states = graphs["fp16"][1].states
    return {
        "model": name,
        "input": list(contract.image.shape),
        "outputs": ["logits", "labels"] if contract.logits else ["labels"],
        "states": [
            {"name": s.input, "shape": list(s.shape), "fp32_dtype": s.dtype, "fp16_dtype": f.dtype}
            for s, f in zip(contract.states, fp16_states, strict=True)
        ],
        "checkpoint_sha256": contract.checkpoint_sha256,
        "export_seconds": round(export_s, 2),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths.values()},
        "parity": {"fp32": parity["fp32"], "fp16": parity["fp16"]},
    }


def format_report(report: dict, out_dir: Path) -> str:
    """The parity figures and file sizes of an export report, a few lines."""
    lines = [
        f"parity over {report['parity']['fp32']['frames']} streamed frames (ONNX Runtime CPU vs torch, state carried):"
    ]
    for precision in ("fp32", "fp16"):
        r = report["parity"][precision]
        lines.append(
            f"  {precision}: max |logit error| {r['max_abs_logit_error']:.2e}, label agreement mean "
            f"{100 * r['mean_label_agreement']:.4f} % / min {100 * r['min_label_agreement']:.4f} %"
        )
    for name, info in report["files"].items():
        lines.append(f"  {out_dir / name}: {info['bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)
