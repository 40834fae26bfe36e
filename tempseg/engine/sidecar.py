"""The record written beside every engine (`fp16.engine` -> `fp16.engine.json`) and the check made before loading.

An engine is code-like (TensorRT deserializes and runs what is in it), so the runtime loads one only
when its size and sha256 match the record written when it was built here, and when the record's model,
precision, input size, TensorRT flavour/version and GPU targets are what the caller expects.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from tempseg.common.contract import Contract, TensorSpec
from tempseg.common.errors import UserError
from tempseg.common.io import sha256_file, write_json

SIDECAR_VERSION = 1
EXPECT_KEYS = ("model", "precision", "input_hw", "flavour", "tensorrt_version", "compute_capability")


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """`runs/M/fp16.engine` -> `runs/M/fp16.engine.json`."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def make_sidecar(
    trt: Any,
    contract: Contract,
    *,
    onnx_path: Path,
    engine_name: str,
    engine_bytes: int,
    engine_sha256: str,
    options: Any,
    config: Any,
    build_seconds: float,
    io: tuple[dict[str, TensorSpec], dict[str, TensorSpec]],
    layers: list[dict[str, str]],
    inspected: dict[str, Any],
    build_log_memory: dict[str, int],
) -> dict[str, Any]:
    """The sidecar's JSON payload (see check_engine for the fields the runtime relies on)."""
    from tempseg.engine.trt import cuda_gpu  # ctypes only; no TensorRT import

    gpu = cuda_gpu()
    return {
        "sidecar_version": SIDECAR_VERSION,
        "engine": {"file": engine_name, "bytes": engine_bytes, "sha256": engine_sha256},
        "model": contract.model,
        "precision": contract.precision,
        "input_hw": [contract.height, contract.width],
        "batch": contract.batch,
        "tensorrt": {"flavour": trt.flavour, "version": trt.version},
        "compute_capabilities": config.compute_capabilities,
        "compute_capability_source": config.compute_capability_source,
        "source_onnx": {"path": str(onnx_path), "bytes": onnx_path.stat().st_size, "sha256": sha256_file(onnx_path)},
        "contract": json.loads(contract.to_json()),
        "io": {"inputs": [_spec(s) for s in io[0].values()], "outputs": [_spec(s) for s in io[1].values()]},
        "build": {
            "seconds": round(build_seconds, 3),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": options.to_dict(),
            "strongly_typed": config.strongly_typed,
            "builder_flags": config.flags,
            "timing_cache": config.timing_cache,
        },
        "device_memory": _device_memory(inspected, build_log_memory),
        "host": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "gpu": None if gpu is None else {"name": gpu.name, "compute_capability": gpu.compute_capability},
        },
        "layers": _layers(inspected, layers),
    }


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}


def _device_memory(inspected: dict[str, Any], build_log: dict[str, int]) -> dict[str, Any]:
    """ICudaEngine's figure where the engine was deserialized; else null, why, and the build log's figures."""
    if inspected.get("ok") and inspected.get("device_memory_bytes") is not None:
        return {"bytes": inspected["device_memory_bytes"], "source": "ICudaEngine", "build_log": build_log}
    reason = inspected.get("reason", "the engine reported none")
    return {"bytes": None, "reason": reason, "build_log": build_log}


def _layers(inspected: dict[str, Any], network: list[dict[str, str]]) -> dict[str, Any]:
    if inspected.get("ok") and inspected.get("layers"):
        items = inspected["layers"]
        return {"source": "engine_inspector", "count": len(items), "items": items}
    note = "INetworkDefinition layers before TensorRT's fusions; precision = first output's dtype (no engine inspector)"
    return {"source": "network_definition", "note": note, "count": len(network), "items": network}


def write_sidecar(path: Path, payload: dict[str, Any]) -> Path:
    write_json(path, payload)
    return path


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of `engine_path`; UserError if it is missing, unreadable or of another version."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise UserError(
            f"no build record {path.name} beside the engine; rebuild it with `python -m tempseg.engine`", engine_path
        )
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"unreadable build record: {err}", path) from None
    if not isinstance(payload, dict) or payload.get("sidecar_version") != SIDECAR_VERSION:
        version = payload.get("sidecar_version") if isinstance(payload, dict) else None
        raise UserError(f"build record version {version} is not {SIDECAR_VERSION}; rebuild the engine", path)
    return payload


def sidecar_contract(payload: dict[str, Any]) -> Contract:
    """The ONNX contract recorded in a sidecar."""
    return Contract.from_json(json.dumps(payload["contract"]))


def check_engine(engine_path: str | os.PathLike[str], *, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify an engine against its sidecar before deserializing it; returns the sidecar.

    `expect` may hold: model, precision, input_hw ([H, W]), flavour, tensorrt_version, and
    compute_capability ("8.9", this GPU's). Keys left out are not checked. UserError says what differs.
    """
    expect = dict(expect or {})
    unknown = set(expect) - set(EXPECT_KEYS)
    if unknown:
        raise ValueError(f"check_engine: unknown expectations {sorted(unknown)} (known: {EXPECT_KEYS})")
    path = Path(engine_path)
    if not path.is_file():
        raise UserError("engine file not found", path)
    payload = read_sidecar(path)
    _check_file(path, payload)
    recorded = {
        "model": payload.get("model"),
        "precision": payload.get("precision"),
        "input_hw": list(payload.get("input_hw") or []),
        "flavour": payload.get("tensorrt", {}).get("flavour"),
        "tensorrt_version": payload.get("tensorrt", {}).get("version"),
    }
    for key, wanted in expect.items():
        if key == "compute_capability":
            _check_capability(path, payload, str(wanted))
            continue
        wanted = list(wanted) if key == "input_hw" else wanted
        if wanted != recorded[key]:
            label = key.replace("_", " ").replace("hw", "size (H, W)")
            raise UserError(f"{label} differs: expected {_show(wanted)}, engine has {_show(recorded[key])}", path)
    return payload


def _check_file(path: Path, payload: dict[str, Any]) -> None:
    """Size first (cheap, catches truncation), then the hash (catches a swapped or altered file)."""
    record = payload.get("engine", {})
    size = path.stat().st_size
    if size != record.get("bytes"):
        raise UserError(
            f"engine size differs: expected {record.get('bytes')} bytes (build record), file has {size}; "
            "truncated or replaced: rebuild it",
            path,
        )
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise UserError(
            f"engine sha256 differs: expected {str(record.get('sha256'))[:16]}…, file has {digest[:16]}…; "
            "the file was altered or swapped: load only engines built here (rebuild it)",
            path,
        )


def _check_capability(path: Path, payload: dict[str, Any], wanted: str) -> None:
    targets = payload.get("compute_capabilities") or []
    if targets and wanted not in targets:
        raise UserError(
            f"compute capability differs: expected {wanted} (this GPU), engine has {', '.join(targets)}", path
        )


def _show(value: Any) -> str:
    return "x".join(str(v) for v in value) if isinstance(value, list) else str(value)
