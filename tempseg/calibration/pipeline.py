"""The calibration stage as one call: model.onnx -> model.int8.onnx + calib.json.

Order: read the contract, resolve the cache, load and check the frames (so bad input fails
before minutes of work), pre-process, collect ranges while streaming (skipped on a cache hit),
insert Q/DQ, check and write the INT8 graph, measure it against FP32, write calib.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import onnx
import onnxruntime
from onnxruntime.quantization import load_tensors_data

from tempseg.calibration.config import METHODS, CalibConfig, calibration_key, labelled_data
from tempseg.calibration.evaluate import accuracy_report, held_out_sequences
from tempseg.calibration.frames import calibration_frames, eval_sequences, take_frames
from tempseg.calibration.quantize import (
    activation_table,
    default_keep_float,
    finish_int8,
    keep_float_nodes,
    preprocess,
    quantize_qdq,
)
from tempseg.calibration.reader import StreamingCalibrationReader
from tempseg.common.contract import Contract, read_onnx_contract
from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write, sha256_file, write_json
from tempseg.data.frames import Frame
from tempseg.data.sources import dataset_classes
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner

log = logging.getLogger("tempseg.calibration")
CACHE_DIR = "calib_cache"
GIVEN = "frames given to calibrate()"
TENSORS_NOTE = (
    "min/max: the calibrated range of each float tensor; scale: the int8 scale its QuantizeLinear uses "
    "(symmetric, zero point 0: max |range| / 127, where a Relu's input takes the Relu's output range); "
    "null: the tensor is not quantized"
)


def _quantize(
    onnx_path: Path,
    contract: Contract,
    config: CalibConfig,
    cache_path: Path,
    reader: StreamingCalibrationReader | None,
    timing: dict[str, float],
) -> tuple[onnx.ModelProto, list[str]]:
    """Pre-process, collect ranges while streaming (or read them from the cache), insert Q/DQ."""
    with tempfile.TemporaryDirectory(prefix="tempseg-calib-") as tmp:
        pre_path, int8_tmp = Path(tmp) / "model.pre.onnx", Path(tmp) / "model.int8.onnx"
        t0 = time.perf_counter()
        preprocess(onnx_path, pre_path)
        excluded = keep_float_nodes(onnx.load(str(pre_path)), contract, config.keep_float)
        timing["preprocess"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        quantize_qdq(pre_path, int8_tmp, config, cache_path=cache_path, reader=reader, nodes_to_exclude=excluded)
        done = time.perf_counter()
        # The reader notes when it handed out its last frame: before that, ranges were being
        # collected (FP32 state stream + calibration inference); after it, thresholds and Q/DQ.
        collected = reader.exhausted_at if reader is not None and reader.exhausted_at else t0
        timing["collect_ranges"] = collected - t0
        timing["quantize"] = done - collected
        return onnx.load(str(int8_tmp)), excluded


def cache_file(out_path: Path, key: str) -> Path:
    """Where the ranges of `key` are cached: calib_cache/<key prefix>.json beside the INT8 graph."""
    return out_path.parent / CACHE_DIR / f"{key[:16]}.json"


def calibrate(
    onnx_path: Path,
    out_path: Path,
    config: CalibConfig,
    *,
    calib_json: Path | None = None,
    frames: Sequence[Frame] | None = None,
) -> dict:
    """Quantize `onnx_path` to `out_path`; returns the calib.json payload (also written to `calib_json`).

    `frames` replaces the frames `config.data` names (checked the same way: count and size; their
    pixels go into the calibration key).
    """
    started = time.perf_counter()
    _check_config(config)
    contract = read_onnx_contract(onnx_path)
    if contract.role != "frame":
        # Two graphs, one calibrated from the states and flows the other hands on: not written yet (FP16 is).
        raise UserError(
            f"INT8 calibration of a keyframe pair ({contract.role} graph of {contract.model}) is not supported "
            "yet: use PRECISION=fp16 or fp32",
            onnx_path,
        )
    onnx_sha = sha256_file(onnx_path)
    timing: dict[str, float] = {}
    given = None
    if frames is not None:
        given = take_frames(frames, config.frames, height=contract.height, width=contract.width, source=GIVEN)
    data_id = config.data if given is None else f"frames sha256 {_frames_digest(given)}"
    key, key_fields = calibration_key(onnx_sha, config, data=data_id)
    # Groups this contract always keeps in float join the user's (not part of the key: ranges are shared).
    config = replace(config, keep_float=tuple(dict.fromkeys(default_keep_float(contract) + config.keep_float)))
    cache_path = cache_file(out_path, key)
    hit = _cache_usable(cache_path, config)

    with contextlib.ExitStack() as active:
        reader = None
        if not hit:
            t0 = time.perf_counter()
            stream = given if given is not None else _load_frames(config, contract)
            timing["load_frames"] = time.perf_counter() - t0
            # the FP32 graph carries the state; its idle workers must not spin on the calibrator's cores
            runner = active.enter_context(OnnxRuntimeRunner(contract, onnx_path, spinning=False))
            reader = StreamingCalibrationReader(runner, stream)
        int8, excluded = _quantize(onnx_path, contract, config, cache_path, reader, timing)

    fp32 = onnx.load(str(onnx_path))
    int8_contract = _int8_contract(contract, onnx_sha, key, config, excluded)
    payload = finish_int8(int8, fp32, int8_contract, str(out_path)).SerializeToString()

    accuracy = None
    if config.eval_sequences > 0:
        t0 = time.perf_counter()
        sequences = _held_out(config, contract)
        with (
            OnnxRuntimeRunner(contract, fp32, spinning=False) as fp32_runner,
            OnnxRuntimeRunner(int8_contract, int8, spinning=False) as int8_runner,
        ):
            accuracy = accuracy_report(fp32_runner, int8_runner, sequences)
        if labelled_data(config.data):  # synthetic val, the default, goes unnamed (reports as before)
            accuracy["data"] = f"{config.data} val"
        timing["evaluate"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - started

    report = {
        "model": contract.model,
        "source_onnx": {"path": str(onnx_path), "bytes": onnx_path.stat().st_size, "sha256": onnx_sha},
        "int8_onnx": {"path": str(out_path), "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
        "method": config.method,
        "method_params": config.method_params(),
        "calibration_key": key,
        "key_fields": key_fields,
        "cache": {"hit": hit, "path": str(cache_path)},
        "data": _data_summary(config, reader, given=given is not None),
        "quantization": _quantization_summary(config, excluded),
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "accuracy": accuracy,
        "tensors_note": TENSORS_NOTE,
        "tensors": activation_table(cache_path, int8),
    }
    # The INT8 graph is the Makefile's target: written last, so a run that fails leaves no target.
    if calib_json is not None:
        write_json(calib_json, report)
    with atomic_write(out_path) as handle:
        handle.write(payload)
    return report


def _check_config(config: CalibConfig) -> None:
    if config.frames < 1 or config.sequence_length < 1 or config.chunk_frames < 1:
        raise UserError("--frames, --sequence-length and --chunk-frames must be at least 1")
    if config.eval_sequences < 0 or config.eval_frames < 1:
        raise UserError("--eval-sequences must be >= 0 and --eval-frames >= 1")
    if config.method not in METHODS:
        raise UserError(f"unknown calibration method {config.method!r}; expected one of {', '.join(METHODS)}")
    if not 0.0 < config.percentile <= 100.0:
        raise UserError(f"--percentile {config.percentile} is outside (0, 100]")


def _cache_usable(cache_path: Path, config: CalibConfig) -> bool:
    """True if `cache_path` holds ranges to reuse; an unreadable or unwanted cache is removed first."""
    if not cache_path.is_file():
        return False
    if config.use_cache:
        try:
            load_tensors_data(cache_path)
            return True
        except (ValueError, KeyError, TypeError) as err:  # a truncated or foreign JSON file
            log.warning("ignoring unreadable calibration cache %s (%s)", cache_path, err)
    # quantize_static would load any file at the cache path: clear it so the ranges are collected again.
    cache_path.unlink()
    return False


def _held_out(config: CalibConfig, contract: Contract) -> list[list[Frame]]:
    """The check's sequences: the val split of labelled data (the graph scores its own classes), else the
    held-out synthetic val sequences."""
    size = {"height": contract.height, "width": contract.width}
    if labelled_data(config.data):
        classes = len(dataset_classes(config.data))
        if classes != contract.num_classes:  # labels of other classes would be scored as the graph's
            raise UserError(
                f"labels {classes} classes, the graph of {contract.model} {contract.num_classes}: calibrate a "
                "graph trained on this data, or give --eval-sequences 0",
                config.data,
            )
        return held_out_sequences(config.data, config.eval_sequences, config.eval_frames, **size)
    return eval_sequences(config.eval_sequences, config.eval_frames, **size)


def _load_frames(config: CalibConfig, contract: Contract) -> list[Frame]:
    return calibration_frames(
        config.data,
        count=config.frames,
        height=contract.height,
        width=contract.width,
        seed=config.seed,
        sequence_length=config.sequence_length,
    )


def _frames_digest(frames: Sequence[Frame]) -> str:
    """sha256 over the frames' pixels and stream positions: the key of frames handed in directly."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(f"{frame.sequence}#{frame.index}".encode())
        digest.update(frame.image.tobytes())
    return digest.hexdigest()


def _int8_contract(contract: Contract, onnx_sha: str, key: str, config: CalibConfig, excluded: list[str]) -> Contract:
    calibration = {"method": config.method, **config.method_params(), "key": key, "frames": config.frames}
    calibration |= {"data": config.data, "keep_float": list(config.keep_float), "float_nodes": excluded}
    extra = {**contract.extra, "calibration": calibration}
    return contract.with_changes(precision="int8", source_onnx_sha256=onnx_sha, extra=extra)


def _data_summary(config: CalibConfig, reader: StreamingCalibrationReader | None, *, given: bool) -> dict:
    summary: dict = {"spec": GIVEN if given else config.data, "frames": config.frames, "seed": config.seed}
    if config.data == "synthetic" and not given:
        summary["sequence_length"] = config.sequence_length
    if reader is not None:  # on a cache hit no frame was read: the key fields say which they were
        summary["sequences"] = list(dict.fromkeys(f.sequence for f in reader.frames))
    return summary


def _quantization_summary(config: CalibConfig, excluded: list[str]) -> dict:
    return {
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel",
        "activations": "int8, symmetric, per tensor",
        "bias": "float (not quantized: TensorRT refuses int32 DequantizeLinear)",
        "keep_float": list(config.keep_float),
        "float_nodes": excluded,
        "extra_options": config.extra_options(),
        "onnxruntime": onnxruntime.__version__,
    }
