"""Streaming parity: ONNX Runtime vs the torch model over a sequence, each carrying its own state.

Errors that accumulate through the state show up here, which a single-frame check would miss.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from common.contract import Contract
from common.preprocess import normalize_bgr
from models import FCResNet

FP32_MAX_ABS = 1e-4
FP32_MIN_AGREEMENT = 0.9999
FP16_TARGET_AGREEMENT = 0.995


class ParityError(RuntimeError):
    """The exported graph does not reproduce the torch model within tolerance."""


def ort_session(graph: onnx.ModelProto | str, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # ORT's workers spin after each run; alternating with torch on the same cores, they starve it (30x slower here).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = graph.SerializeToString() if isinstance(graph, onnx.ModelProto) else graph
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def streaming_parity(
    model: FCResNet, sessions: dict[str, tuple[ort.InferenceSession, Contract]], frames: Iterable[np.ndarray]
) -> dict[str, dict]:
    """Each session against `model` (FP32 torch), frame by frame, every one carrying its own state.

    Per frame: label agreement, and the max |logit error| for graphs that output logits. One torch
    pass serves every session (the deployed graphs and their in-memory twins with logits).
    """
    model.eval()
    torch_states: list[torch.Tensor] | None = None
    ort_states = {name: _zero_states(contract) for name, (_, contract) in sessions.items()}
    per_frame: dict[str, list[dict]] = {name: [] for name in sessions}
    for frame in frames:
        batch = next(iter(sessions.values()))[1].batch
        image = np.repeat(normalize_bgr(frame), batch, axis=0)
        tensor = torch.from_numpy(image)
        torch_states = model.initial_states(tensor) if torch_states is None else torch_states
        ref_logits, *torch_states = model(tensor, *torch_states)
        ref = ref_logits.numpy()
        ref_labels = ref.argmax(1)
        for name, (session, contract) in sessions.items():
            outputs = session.run(None, {"image": image, **ort_states[name]})
            named = dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))
            ort_states[name] = {s.input: named[s.output] for s in contract.states}
            record = {"label_agreement": float((named["labels"] == ref_labels).mean())}
            if "logits" in named:
                record["max_abs_logit_error"] = float(np.abs(named["logits"].astype(np.float64) - ref).max())
            per_frame[name].append(record)
    return {name: summarize(records) for name, records in per_frame.items()}


def _zero_states(contract: Contract) -> dict[str, np.ndarray]:
    return {s.input: np.zeros(s.shape, np.dtype(s.dtype)) for s in contract.states}


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
