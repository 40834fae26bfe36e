"""Streaming parity: ONNX Runtime vs the torch model over a sequence, each carrying its own state.

Errors that accumulate through the state show up here, which a single-frame check would miss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from tempseg.common.contract import LOGITS, Contract, TensorSpec
from tempseg.data.frames import Frame
from tempseg.models import FCResNet
from tempseg.models.accel import Accel
from tempseg.runtime.backends.base import Runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.torch_runner import TorchRunner
from tempseg.runtime.stream import StreamStep, compare_runners

REFERENCE = "torch"

FP32_MAX_ABS = 1e-4
FP32_MIN_AGREEMENT = 0.9999
FP16_TARGET_AGREEMENT = 0.995


class ParityError(RuntimeError):
    """The exported graph does not reproduce the torch model within tolerance."""


def ort_session(graph: onnx.ModelProto | str, threads: int = 0) -> ort.InferenceSession:
    """A plain ONNX Runtime session (tests and tools that look at a graph's raw outputs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = graph.SerializeToString() if isinstance(graph, onnx.ModelProto) else graph
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def streaming_parity(
    model: FCResNet | Accel, graphs: dict[str, tuple[onnx.ModelProto, Contract]], images: Iterable[np.ndarray]
) -> dict[str, dict]:
    """Each graph on ONNX Runtime against `model` (FP32 torch), frame by frame, every one carrying its own
    state: the same runners and stream as the runtime (runtime/stream.py compare_runners).

    Per frame: label agreement, and the max |logit error| for graphs that output logits. A keyframe
    model's graphs `keyframe_<name>` are streamed with `<name>` as its pair, by the schedule.
    """
    keyframes = {n: graphs[f"keyframe_{n}"][0] for n in graphs if f"keyframe_{n}" in graphs}
    graphs = {n: g for n, g in graphs.items() if not n.startswith("keyframe_")}  # streamed with their pair
    contract = next(iter(graphs.values()))[1]
    c = contract.num_classes
    reference = contract.with_changes(
        logits=TensorSpec(LOGITS, (contract.batch, c, contract.height, contract.width), "float32")
    )
    runners: dict[str, Runner] = {REFERENCE: TorchRunner(reference, model=model.eval(), device="cpu")}
    # ONNX Runtime's idle workers would spin on the cores torch needs next (30x slower on 2 cores)
    runners.update(
        {
            name: OnnxRuntimeRunner(g, graph, spinning=False, keyframe=keyframes.get(name))
            for name, (graph, g) in graphs.items()
        }
    )
    frames = [Frame(image=image, label=None, index=i, sequence="parity") for i, image in enumerate(images)]
    per_frame: dict[str, list[dict]] = {name: [] for name in graphs}
    with contextlib.ExitStack() as active:
        for runner in runners.values():
            active.enter_context(runner)
        for steps in compare_runners(runners, frames):
            ref = steps[REFERENCE]
            for name in graphs:
                per_frame[name].append(_frame_record(steps[name], ref))
    return {name: summarize(records) for name, records in per_frame.items()}


def _frame_record(step: StreamStep, ref: StreamStep) -> dict:
    record = {"label_agreement": float((step.labels == ref.labels).mean())}
    if step.logits is not None:
        if ref.logits is None:  # the reference contract always outputs logits (streaming_parity)
            raise ValueError("the reference step has no logits to compare with")
        error = np.abs(step.logits.astype(np.float64) - ref.logits).max()
        record["max_abs_logit_error"] = float(error)
    return record


def summarize(per_frame: list[dict]) -> dict:
    errors = [f["max_abs_logit_error"] for f in per_frame if "max_abs_logit_error" in f]
    agreement = [f["label_agreement"] for f in per_frame]
    return {
        "frames": len(per_frame),
        "max_abs_logit_error": max(errors) if errors else None,
        "mean_label_agreement": float(np.mean(agreement)),
        "min_label_agreement": min(agreement),
        "per_frame": [{k: round(v, 8) for k, v in f.items()} for f in per_frame],
    }


def merge(labels: dict, logits: dict) -> dict:
    """The parity of a deployed graph: its own label agreement, the logit error of its twin with logits."""
    return {
        **labels,
        "max_abs_logit_error": logits["max_abs_logit_error"],
        "logit_error_from": "twin graph with logits",
    }


def check_fp32(report: dict, source: str) -> None:
    """Raise ParityError when the FP32 graph drifts beyond 1e-4 or 99.99 % label agreement."""
    if report["max_abs_logit_error"] > FP32_MAX_ABS or report["mean_label_agreement"] < FP32_MIN_AGREEMENT:
        raise ParityError(
            f"{source}: FP32 parity failed over {report['frames']} streamed frames: max |logit error| "
            f"{report['max_abs_logit_error']:.2e} (limit {FP32_MAX_ABS:.0e}), label agreement "
            f"{100 * report['mean_label_agreement']:.4f} % (limit {100 * FP32_MIN_AGREEMENT:.2f} %)"
        )
