"""`python -m tempseg.export --model NAME --checkpoint PATH [--height 256 --width 512 --batch 1]`.

Writes OUT_DIR/model.onnx (FP32), model.fp16.onnx and export.json (streaming parity against
torch, sizes, times). A keyframe model (Accel) writes its update graph there and its keyframe graph as
keyframe.onnx / keyframe.fp16.onnx; parity streams the pair by its schedule (--keyframe-every).
The graphs output labels (and states) only, unless --logits; parity measures their labels, and the
logit error of twin graphs with logits exported from the same model. Fails (exit 1) when FP32 drifts
beyond 1e-4 max |logit error| or 99.99 % label agreement; nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import onnx

from tempseg.common.contract import LOGITS, Contract, TensorSpec, set_metadata
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import sha256_file, write_json
from tempseg.data.classes import class_table
from tempseg.data.synthetic import SyntheticVideo, split_seed
from tempseg.export.fp16 import convert_fp16
from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
from tempseg.export.parity import FP16_TARGET_AGREEMENT, ParityError, check_fp32, merge, streaming_parity
from tempseg.models import FCResNet, UnknownModelError, check_model_input, model_config, resolve_name
from tempseg.models.checkpoint import load_model
from tempseg.models.contract import KEYFRAME_EVERY, keyframe_contract

log = logging.getLogger("tempseg.export")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tempseg.export", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", type=Path, required=True, help="tempseg checkpoint (runs/MODEL/checkpoint.pt)")
    p.add_argument("--height", type=int, default=256, help="input height in pixels (default 256)")
    p.add_argument("--width", type=int, default=512, help="input width in pixels (default 512)")
    p.add_argument("--batch", type=int, default=1, help="batch size baked into the graph (default 1, the edge case)")
    p.add_argument("--out-dir", type=Path, help="output directory (default: the checkpoint's)")
    p.add_argument("--parity-frames", type=int, default=30, help="frames of the streamed parity check (default 30)")
    p.add_argument("--parity-seed", type=int, default=0, help="synthetic val sequence used for parity")
    p.add_argument("--logits", action="store_true", help="also output the C x H x W logits (default: labels only)")
    p.add_argument(
        "--keyframe-every",
        type=int,
        default=KEYFRAME_EVERY,
        help=f"keyframe models: the default schedule the graph records (default {KEYFRAME_EVERY})",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        name = resolve_name(args.model)
        check_model_input(model_config(name), args.height, args.width)
    except (UnknownModelError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.batch < 1 or args.parity_frames < 1 or args.keyframe_every < 1:
        raise UserError("--batch, --parity-frames and --keyframe-every must be at least 1")
    out_dir = args.out_dir or args.checkpoint.parent
    model, _ = load_model(args.checkpoint, expect_model=name)
    hw = {"height": args.height, "width": args.width, "batch": args.batch}
    sha = sha256_file(args.checkpoint)
    contract = build_contract(
        model,
        name,
        **hw,
        checkpoint_sha256=sha,
        logits=args.logits,
        keyframe_every=args.keyframe_every,
        classes=class_table(model.config.num_classes),
    )
    t0 = time.perf_counter()
    graphs = export_graphs(model, contract)
    export_s = time.perf_counter() - t0
    video = SyntheticVideo(split_seed("val", args.parity_seed), args.height, args.width, length=args.parity_frames)
    parity = check_parity(model, graphs, [f.image for f in video])
    try:
        check_fp32(parity["fp32"], str(out_dir / "model.onnx"))
    except ParityError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = save_graphs(graphs, out_dir)
    report = export_report(name, contract, graphs, paths, parity, export_s)
    write_json(out_dir / "export.json", report)
    print(format_report(report, out_dir))
    if parity["fp16"]["mean_label_agreement"] < FP16_TARGET_AGREEMENT:
        log.warning(
            "FP16 label agreement %.3f %% is below the 99.5 %% target", 100 * parity["fp16"]["mean_label_agreement"]
        )
    written = ", ".join(str(p) for p in paths.values())
    print(f"stage export: {time.perf_counter() - started:.1f} s -> {written}")
    return 0


def export_graphs(model: FCResNet, contract: Contract) -> dict[str, tuple[onnx.ModelProto, Contract]]:
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


def check_parity(model: FCResNet, graphs: dict, frames: list) -> dict[str, dict]:
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


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
