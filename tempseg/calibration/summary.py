"""What the calibration stage prints: cache status, method, timings, sizes, INT8 accuracy and the stage line.

The CLI (`python -m tempseg.calibration`) and bench/compare print the same text from calibrate()'s report.
"""

from __future__ import annotations

from pathlib import Path

from tempseg.calibration.evaluate import format_accuracy


def format_stage(report: dict, out: Path, seconds: float) -> str:
    """The summary, the accuracy of INT8 against FP32 where measured, and `stage calibrate: ... -> OUT (...)`."""
    lines = [format_summary(report)]
    accuracy = report["accuracy"]
    if accuracy is not None:
        lines.append(format_accuracy(accuracy))
    drop = accuracy["miou_drop_points"] if accuracy else None
    drop_text = "n/a" if drop is None else f"{drop:.2f}"
    size = report["int8_onnx"]["bytes"] / 2**20
    lines.append(f"stage calibrate: {seconds:.1f} s -> {out} ({size:.1f} MiB, mIoU drop {drop_text} points)")
    return "\n".join(lines)


def format_summary(report: dict) -> str:
    """Cache status, method, timings and sizes in a few lines."""
    cache = report["cache"]
    key = report["calibration_key"][:16]
    if cache["hit"]:
        first = f"calibration cache hit: {cache['path']} (key {key}); ranges reused, no frame streamed"
    else:
        data = report["data"]
        first = f"calibration cache miss (key {key}): {data['frames']} frames of {data['spec']}, state carried"
    t = report["timing_s"]
    params = ", ".join(f"{k} {v}" for k, v in report["method_params"].items())
    float_nodes = report["quantization"]["float_nodes"]
    groups = report["quantization"].get("keep_float") or []
    shown = ", ".join(float_nodes[:8])
    if len(float_nodes) > 8:
        shown += f", ... ({len(float_nodes)} nodes; calib.json lists them)"
    return "\n".join(
        [
            first,
            f"  method {report['method']}" + (f" ({params})" if params else "") + f", {len(report['tensors'])} tensors",
            f"  seconds: pre-process {t['preprocess']:.2f}, collect ranges {t['collect_ranges']:.2f}, "
            f"quantize {t['quantize']:.2f}",
            f"  float nodes: {shown or 'none'}" + (f" (groups: {', '.join(groups)})" if groups and float_nodes else ""),
            f"  {report['source_onnx']['path']} {report['source_onnx']['bytes'] / 2**20:.1f} MiB -> "
            f"{report['int8_onnx']['path']} {report['int8_onnx']['bytes'] / 2**20:.1f} MiB",
        ]
    )
