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
    model: FCResNet, session: ort.InferenceSession, contract: Contract, frames: Iterable[np.ndarray]
) -> dict:
    """Per-frame max |logit error| and label agreement of `session` against `model` (FP32 torch)."""
    model.eval()
    batch = contract.batch
    torch_states: list[torch.Tensor] | None = None
    ort_states = {s.input: np.zeros(s.shape, np.dtype(s.dtype)) for s in contract.states}
    outputs = ["logits", "labels", *(s.output for s in contract.states)]
    per_frame = []
    for frame in frames:
        image = np.repeat(normalize_bgr(frame), batch, axis=0)
        tensor = torch.from_numpy(image)
        torch_states = model.initial_states(tensor) if torch_states is None else torch_states
        ref_logits, *torch_states = model(tensor, *torch_states)
        logits, labels, *next_states = session.run(outputs, {"image": image, **ort_states})
        ort_states = {s.input: v for s, v in zip(contract.states, next_states, strict=True)}
        ref = ref_logits.numpy()
        per_frame.append(
            {
                "max_abs_logit_error": float(np.abs(logits.astype(np.float64) - ref).max()),
                "label_agreement": float((labels == ref.argmax(1)).mean()),
            }
        )
    return summarize(per_frame)


def summarize(per_frame: list[dict]) -> dict:
    errors = [f["max_abs_logit_error"] for f in per_frame]
    agreement = [f["label_agreement"] for f in per_frame]
    return {
        "frames": len(per_frame),
        "max_abs_logit_error": max(errors),
        "mean_label_agreement": float(np.mean(agreement)),
        "min_label_agreement": min(agreement),
        "per_frame": [{k: round(v, 8) for k, v in f.items()} for f in per_frame],
    }


def check_fp32(report: dict, source: str) -> None:
    """Raise ParityError when the FP32 graph drifts beyond 1e-4 or 99.99 % label agreement."""
    if report["max_abs_logit_error"] > FP32_MAX_ABS or report["mean_label_agreement"] < FP32_MIN_AGREEMENT:
        raise ParityError(
            f"{source}: FP32 parity failed over {report['frames']} streamed frames: max |logit error| "
            f"{report['max_abs_logit_error']:.2e} (limit {FP32_MAX_ABS:.0e}), label agreement "
            f"{100 * report['mean_label_agreement']:.4f} % (limit {100 * FP32_MIN_AGREEMENT:.2f} %)"
        )
