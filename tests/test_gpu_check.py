"""bench/gpu_check.py where there is no GPU (CI): its one-line answer, and the report it writes on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.gpu_check import PLAN, UnavailableError, attempt, overall, report_path, write_report

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides the GPU from the driver on a machine that has one
    command = [sys.executable, "-m", "bench.gpu_check", "--out-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("gpu-check: no NVIDIA GPU visible (no driver or no device), nothing run")
    assert PLAN in result.stdout  # and what it would run
    assert list(tmp_path.iterdir()) == []  # nothing written


def _fail() -> dict:
    raise RuntimeError("cudaErrorIllegalAddress")


def _unavailable() -> dict:
    raise UnavailableError("TensorRT is not importable")


def test_the_report_is_named_by_device_and_date_and_holds_each_checks_outcome(tmp_path):
    checks = {
        "cuda_api": attempt(lambda: {"h2d_gb_per_s": 25.1}),
        "cuda_graphs": attempt(_fail),
        "tensorrt": attempt(_unavailable),
        "torch_latency": attempt(lambda: {"status": "fail", "reason": "labels differ", "min": 0.5}),
    }
    report = {"date": "2026-12-01", "device": "NVIDIA H200", "compute_capability": "9.0", "checks": checks}
    path = write_report(report, tmp_path)
    assert path == tmp_path / "gpu-nvidia-h200-2026-12-01.json"
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(report))
    got = written["checks"]
    assert (got["cuda_api"]["status"], got["cuda_api"]["h2d_gb_per_s"]) == ("pass", 25.1)
    assert got["cuda_graphs"]["status"] == "fail"
    assert got["cuda_graphs"]["reason"] == "RuntimeError: cudaErrorIllegalAddress"
    assert "_fail" in got["cuda_graphs"]["traceback"]
    assert (got["tensorrt"]["status"], got["tensorrt"]["reason"]) == ("skip", "TensorRT is not importable")
    assert (got["torch_latency"]["status"], got["torch_latency"]["min"]) == ("fail", 0.5)  # a check's own verdict
    assert all(c["seconds"] >= 0 for c in got.values())
    assert report_path(tmp_path, "Orin (nvgpu) / 64GB", "d").name == "gpu-orin-nvgpu-64gb-d.json"


def test_a_check_made_of_parts_fails_if_one_part_failed_and_skips_only_if_all_did():
    passed, skipped = {"status": "pass"}, {"status": "skip", "reason": "pycuda not installed"}
    assert overall({"cuda-python": passed, "pycuda": skipped}) == {
        "status": "pass",
        "reason": "pycuda: pycuda not installed",
    }
    assert overall({"a": passed, "b": {"status": "fail", "reason": "x"}})["status"] == "fail"
    assert overall({"a": skipped, "b": skipped})["status"] == "skip"
    assert overall({"a": passed}) == {"status": "pass"}


def test_the_many_cameras_check_times_both_ways_and_compares_each_slot_with_its_stream_alone():
    """Run on the CPU at a small size (the check itself runs on CUDA at 256x512): the figures it records."""
    import torch

    from bench.gpu_check import cameras_on_gpu
    from tempseg.data.sources import open_source

    streams = []
    for k in range(2):
        with open_source(f"synthetic:{k}", height=64, width=128, frames=4) as source:
            streams.append(list(source))
    got = cameras_on_gpu(torch, streams, device="cpu", skip=1)
    assert got["labels_agree_with_alone_min"] == 1.0  # on the CPU batched equals alone exactly
    for way in ("batched", "sequential"):
        assert got[way]["fps"] > 0
        assert got[way]["latency_ms"]["p99"] >= got[way]["latency_ms"]["p50"] > 0
    assert got["throughput_ratio"] == round(got["batched"]["fps"] / got["sequential"]["fps"], 4)
    assert got["memory_ratio"] is None  # CUDA's allocator only
