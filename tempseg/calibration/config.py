"""What a calibration run depends on, and the key that says when two runs would collect the same ranges."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import onnxruntime

METHODS = ("minmax", "entropy", "percentile")
KEEP_FLOAT_GROUPS = ("first-conv", "temporal", "last-upsample", "memory-read")
# Measured on fcresnet18_t66 at 256x512, 4x20 held-out frames: INT8/FP32 label agreement 98.95 % at
# 99.99, 98.87 % at 99.999 (ONNX Runtime's default), 98.89 % at 99.9; mIoU drops 0.03-0.10 points for all.
DEFAULT_PERCENTILE = 99.99
# Specs whose val split carries labels: the held-out check scores on them (other specs have no labels to score).
LABELLED_SPECS = ("folder:", "camvid:", "camvid32:", "cityscapes:")


@dataclass(frozen=True)
class CalibConfig:
    """One calibration run; filled from argparse in calibration/__main__.py."""

    method: str = "percentile"  # minmax | entropy | percentile (ONNX Runtime's calibrators)
    percentile: float = DEFAULT_PERCENTILE  # percentile method: share of |x| kept inside the range, in %
    frames: int = 128  # calibration frames, streamed in order with the state carried
    data: str = "synthetic"  # "synthetic", a video file, an image folder or "cityscapes:PATH"
    seed: int = 0  # synthetic: first calibration sequence; other sources: passed to data.open_source
    sequence_length: int = 32  # synthetic: frames per calibration sequence (zero state at each start)
    keep_float: tuple[str, ...] = ()  # node groups (KEEP_FLOAT_GROUPS) or node names left unquantized
    chunk_frames: int = 16  # frames per collection pass: ONNX Runtime's histogram calibrators hold
    #                         every calibrated tensor of a pass in memory (fcresnet18_t66 at 256x512,
    #                         16 frames: 2.3 GB peak), so passes bound the memory; ranges merge across
    eval_sequences: int = 4  # held-out val sequences for the accuracy report: of `data` where it is labelled
    #                          (labelled_data), else synthetic (0: no report)
    eval_frames: int = 20  # frames per evaluation sequence
    use_cache: bool = True  # reuse the ranges of an earlier run with the same key

    def method_params(self) -> dict:
        """Parameters of the chosen method (ONNX Runtime defaults for the others), as recorded in calib.json."""
        if self.method == "percentile":
            return {"percentile": self.percentile, "num_bins": 2048, "symmetric": True}
        if self.method == "entropy":
            return {"num_bins": 128, "num_quantized_bins": 128}
        return {}

    def extra_options(self) -> dict:
        """quantize_static extra_options: symmetric int8 for TensorRT, no int32 bias (its parser refuses it)."""
        options: dict[str, bool | float] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
        if self.method == "percentile":
            options["CalibPercentile"] = self.percentile
        return options


def labelled_data(spec: str) -> bool:
    """Whether `spec` names labelled data with a val split (a folder tree, CamVid, Cityscapes)."""
    return spec.startswith(LABELLED_SPECS)


def calibration_key(onnx_sha256: str, config: CalibConfig, *, data: str | None = None) -> tuple[str, dict]:
    """sha256 over everything that decides the collected ranges, and the fields it was made of.

    `data` names the frames when they are not `config.data` (frames handed in: a digest of them).

    keep_float is not part of it: the calibrators collect every float tensor whatever is later
    left unquantized, so runs that differ only in keep_float share their ranges.
    """
    fields = {
        "onnx_sha256": onnx_sha256,
        "data": config.data if data is None else data,
        "frames": config.frames,
        "seed": config.seed,
        "sequence_length": config.sequence_length if config.data == "synthetic" else None,
        "method": config.method,
        "method_params": config.method_params(),
        "options": {"chunk_frames": config.chunk_frames, **config.extra_options()},
        "onnxruntime": onnxruntime.__version__,  # quant_pre_process may name tensors differently across versions
    }
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), fields
