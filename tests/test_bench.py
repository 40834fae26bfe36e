"""Benchmark harness logic: tables, deltas, Pareto fronts, verdicts (the measurements run in bench/)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bench.compare import base_model, deployed_memory, markdown, pareto_front, plot, table_rows
from bench.paper import CONNECTIONS, Budget, report, table_models
from bench.runtime_ratios import interleaved
from bench.soak import replayed, verdict, windows


def _report(model: str, precision: str, p50: float, miou: float, weights: int) -> dict:
    memory = {"params": 1_000_000, "weights_bytes": weights, "activation_bytes": 100, "state_bytes": 10, "io_bytes": 90}
    return {
        "model": model,
        "precision": precision,
        "backend": "onnxruntime",
        "fps": 1000 / p50,
        "latency_ms": {"p50": p50, "p99": p50 * 1.2},
        "memory": memory,
        "accuracy": {"miou": miou, "flame_miou": miou - 0.01, "tc": 0.9},
    }


def test_deltas_are_against_the_non_temporal_model_of_the_same_width_and_precision():
    assert base_model("fcresnet18x0.5_t66") == "fcresnet18x0.5"
    assert base_model("fcresnet34_t55_add") == "fcresnet34"
    reports = [
        _report("fcresnet18", "fp32", 40.0, 0.50, 1000),
        _report("fcresnet18_t66", "fp32", 42.0, 0.52, 1100),
        _report("fcresnet18_t66", "fp16", 30.0, 0.51, 550),  # no fp16 base: no deltas
    ]
    engines = {(r["model"], r["precision"]): _engine(200, 100) for r in reports}
    rows = {(r["model"], r["precision"]): r for r in table_rows(reports, engines)}
    t66 = rows[("fcresnet18_t66", "fp32")]
    assert t66["d_miou"] == pytest.approx(2.0)  # points
    assert t66["d_latency"] == pytest.approx(5.0)  # percent
    assert t66["d_memory"] == pytest.approx(100 * (1300 / 1200 - 1), abs=0.05)
    assert rows[("fcresnet18", "fp32")]["d_miou"] is None
    assert rows[("fcresnet18_t66", "fp16")]["d_latency"] is None
    text = markdown(list(rows.values()), "header")
    assert "| fcresnet18_t66 | fp32 |" in text
    assert "+2.0" in text


def _engine(file_bytes: int, activation_bytes: int) -> dict:
    return {"engine_file_bytes": file_bytes, "activation_bytes": activation_bytes}


def test_memory_columns_come_from_the_engine_unless_a_tensorrt_backend_measured_them():
    ort = _report("fcresnet18", "fp32", 40.0, 0.5, 1000)
    ort["memory"]["activation_bytes"] = 5_000_000  # ONNX Runtime's RSS growth: not comparable across runs
    assert deployed_memory(ort, None)["activation_bytes"] is None
    assert deployed_memory(ort, None)["engine_file_bytes"] is None
    assert deployed_memory(ort, _engine(1200, 300))["activation_bytes"] == 300
    measured = {**ort["memory"], "activation_bytes": 400, "engine_file_bytes": 1300}
    trt = {**ort, "backend": "tensorrt", "memory": measured}
    assert deployed_memory(trt, _engine(1200, 300))["activation_bytes"] == 400  # measured by the runner
    row = table_rows([ort], {("fcresnet18", "fp32"): _engine(2 * 2**20, 2**20)})[0]
    assert (row["engine_mb"], row["activation_mb"]) == (2.0, 1.0)


def test_pareto_front_keeps_only_undominated_points():
    points = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.55), (25, 0.7)]
    assert pareto_front(points) == [(10, 0.5), (20, 0.6), (25, 0.7)]


def test_plot_writes_a_png(tmp_path):
    reports = [_report("fcresnet18", "fp32", 40.0, 0.5, 1000), _report("fcresnet18_t66", "int8", 20.0, 0.49, 300)]
    out = tmp_path / "compare.png"
    plot(table_rows(reports, {}), out, "title")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_report_lays_out_every_row_and_says_it_is_synthetic():
    models = table_models()
    assert len(models) == 2 + 2 * len(CONNECTIONS)
    results = {m: {"pixel_acc": 0.8, "miou": 0.3 + 0.001 * i, "params_m": 11.3} for i, m in enumerate(models)}
    budget = Budget(2, 1, 128, 256, 3e-3, "poly", "synthetic", 1, 2)
    text = report(results, budget)
    assert "not Cityscapes" in text
    for connection in CONNECTIONS:
        assert f"| FCResNet18 | {connection} |" in text
    assert "concat is better on" in text
    partial = report({"fcresnet18": results["fcresnet18"]}, budget)
    assert "| FCResNet18 | 6-6 | - | - |" in partial  # rows not run are shown empty, not invented


def test_soak_verdict_catches_growth_and_p99_drift():
    flat = [{"frame": 1000 * i, "rss_bytes": 500e6 + 1e5 * i, "device_used_bytes": None} for i in range(1, 11)]
    growing = [{**s, "rss_bytes": 500e6 + 1e6 * i} for i, s in enumerate(flat)]
    steady = windows([10.0] * 4000 + [10.5] * 4000, 1000)
    assert verdict(flat, steady)["pass"]
    assert not verdict(growing, steady)["pass"]  # 9 MB of growth
    assert not verdict(flat, windows([10.0] * 2000 + [12.0] * 2000, 1000))["pass"]  # p99 +20 %


def test_soak_replay_cycles_the_same_frames_without_copying():
    frames = [object(), object(), object()]
    out = list(replayed(frames, 7))
    assert len(out) == 7
    assert all(a is b for a, b in zip(out, frames * 3, strict=False))


def test_interleaved_measures_each_side_every_round():
    calls = []
    result = interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 3.0}, rounds=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three alternating rounds
    assert result == {"a": 1.0, "b": 3.0}
    json.dumps(result)


@pytest.mark.slow
def test_compare_builds_what_is_missing_and_writes_the_table(tmp_path):
    """make -> train (smoke) -> export -> calibrate -> runtime on the same frames -> json/csv/md/png."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    runs = tmp_path / "runs"
    models = ["fcresnet18x0.25", "fcresnet18x0.25_t66"]
    cmd = [
        sys.executable,
        "-m",
        "bench.compare",
        "--models",
        *models,
        "--precisions",
        "fp32",
        "int8",
        "--preset",
        "smoke",
    ]
    cmd += ["--height", "64", "--width", "128", "--frames", "8", "--calib-frames", "8", "--runs", str(runs)]
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((runs / "compare" / "compare.json").read_text())
    assert {(r["model"], r["precision"]) for r in table["rows"]} == {(m, p) for m in models for p in ("fp32", "int8")}
    t66 = next(r for r in table["rows"] if r["model"] == models[1] and r["precision"] == "fp32")
    assert t66["d_miou"] is not None  # measured against the non-temporal model of the same width
    for name in ("compare.csv", "compare.md", "compare.png"):
        assert (runs / "compare" / name).stat().st_size > 0
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # engines build on the CPU: real engine figures
        assert all(r["engine_mb"] > 0 and r["activation_mb"] is not None for r in table["rows"])
        assert "engines built here" in table["header"]
    # a second call reuses every artefact and measurement
    again = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0
    assert "stage train" not in again.stdout
