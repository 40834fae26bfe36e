"""bench/gpu_check.py where there is no GPU (CI): its one-line answer, and the report it writes on a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cuda_graph_runner import TorchGraphRunner, ping_pong
from bench.gpu_check import (
    CHECKS,
    LATENCY_MODELS,
    NEEDS,
    PLAN,
    REHEARSAL,
    SMALL,
    Context,
    EnergyMeter,
    NoEnergy,
    UnavailableError,
    attempt,
    batch_sweep,
    call_kinds,
    energy_meter,
    overall,
    report_path,
    run_prebuilt,
    saturation,
    write_report,
)
from tempseg.engine.trt import cuda_gpu
from tempseg.runtime.backends.base import PhaseTimes

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


def _project_imports() -> dict[str, str]:
    """Top-level import name -> distribution, for every dependency tempseg declares (extras included) that is
    installed here."""
    from importlib.metadata import packages_distributions, requires

    declared = {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in requires("tempseg") or []}  # type: ignore[union-attr]
    return {
        module: dist.lower()
        for module, dists in packages_distributions().items()
        for dist in dists
        if dist.lower() in declared
    }


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_check_that_needs_no_gpu_with_nothing_but_what_it_declares(tmp_path):
    """As on a GPU machine given the source tree alone: the project's other dependencies (cityscapesscripts,
    onnxsim, matplotlib, TensorRT-RTX, ...) cannot be imported, and the CPU side of every check still passes."""
    blocked = sorted({m for m, dist in _project_imports().items() if dist not in NEEDS and not m.startswith("_")})
    assert {"cityscapesscripts", "onnxsim"} <= set(blocked)  # what a stock CUDA image lacks
    code = f"""
import runpy, sys
from importlib.abc import MetaPathFinder
BLOCKED = set({blocked!r})
class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (left out)", name=name)
sys.meta_path.insert(0, Refuse())
sys.argv = ["bench.gpu_check", "--rehearse", "--out-dir", {str(tmp_path)!r}]
runpy.run_module("bench.gpu_check", run_name="__main__", alter_sys=True)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(next(tmp_path.glob("gpu-cpu-rehearsal-*.json")).read_text())
    statuses = {name: check["status"] for name, check in report["checks"].items()}
    on_cpu = {name for name, _, runs_on_cpu in CHECKS if runs_on_cpu}
    assert on_cpu == {"torch_vs_onnxruntime", "torch_latency", "many_cameras"}
    assert {name: statuses[name] for name in on_cpu} == dict.fromkeys(on_cpu, "pass"), report["checks"]
    assert {statuses[name] for name in statuses.keys() - on_cpu} == {"skip"}
    latency = report["checks"]["torch_latency"]
    assert set(latency["runs"]) == {f"{m}/{p}" for m in LATENCY_MODELS for p in ("fp32", "fp16")}
    assert "fcresnet18_lma3r1" in LATENCY_MODELS
    for sweep in latency["batch_sweep"].values():
        assert sweep["status"] == "pass"
        assert set(sweep["points"]) == {"1", "2"}  # the rehearsal's batches
        assert sweep["saturating_batch"] in (1, 2)
        assert sweep["stopped"] in ("saturated", "largest batch")
    assert "latency_by_kind_ms" in latency["runs"]["fcresnet18x0.5_accel34/fp32"]  # the pair's frames by kind
    assert not set(report["versions"]) & {"tensorrt-rtx", "matplotlib"}  # left out, so not reported


def test_the_saturating_batch_is_the_smallest_within_ten_percent_of_the_best():
    point = {"latency_ms": {"p50": 1.0}}
    points = {"1": {"fps": 100.0, **point}, "2": {"fps": 180.0, **point}, "4": {"fps": 300.0, **point}}
    points |= {"8": {"fps": 320.0, **point}, "16": {"out_of_memory": "CUDA out of memory"}}
    got = saturation(points)
    assert (got["saturating_batch"], got["fps_at_saturation"], got["fps_ratio_to_batch_1"]) == (4, 300.0, 3.0)
    assert saturation({"1": {"out_of_memory": "x"}}) == {"saturating_batch": None}


def test_a_sweep_point_of_a_keyframe_pair_gives_its_latency_by_kind():
    calls = [PhaseTimes(compute=9.0, kind="keyframe"), *(PhaseTimes(compute=3.0, kind="update") for _ in range(4))]
    got = call_kinds([t.kind for t in calls], [t.compute for t in calls])
    assert got is not None
    assert (got["keyframe"]["p50"], got["update"]["p50"]) == (9.0, 3.0)
    assert call_kinds([PhaseTimes().kind] * 3, [3.0] * 3) is None  # one graph: no split


def test_ping_pong_means_two_sets_of_state_addresses_in_turn():
    a, b = (0x100, 0x200), (0x300, 0x400)
    assert ping_pong([a, b, a, b, a])
    assert not ping_pong([a, a, a])  # one set: the state is copied back, or not carried
    assert not ping_pong([a, b, b, a])  # a frame that did not swap
    assert not ping_pong([a])


class _FakeNvml:
    """NVML's energy counter in millijoules, 2 J more at each read."""

    class NVMLError(Exception):
        pass

    def __init__(self, supported: bool = True) -> None:
        self.millijoules, self.supported, self.open = 10_000, supported, False

    def nvmlInit(self) -> None:  # noqa: N802 (NVML's names)
        self.open = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.open = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return b"NVIDIA H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        if not self.supported:
            raise self.NVMLError("Not Supported")
        self.millijoules += 2_000
        return self.millijoules


def test_the_energy_meter_gives_millijoules_per_frame_and_mean_power_and_shuts_nvml_down():
    nvml = _FakeNvml()
    meter = EnergyMeter(nvml)
    mark = meter.mark()
    got = meter.since(mark, frames=4)
    assert got["energy_mj_per_frame"] == 500.0  # 2,000 mJ over 4 frames
    assert got["mean_power_w"] > 0
    assert meter.name == "NVIDIA H200"
    meter.close()
    assert not nvml.open
    unsupported = _FakeNvml(supported=False)
    with pytest.raises(_FakeNvml.NVMLError):
        EnergyMeter(unsupported)  # the caller records why there are no energy figures
    assert not unsupported.open
    assert NoEnergy("NVML: Not Supported").since((0, 0.0), 4) == {}


def test_without_an_nvidia_driver_the_energy_figures_are_left_out_with_nvmls_reason(tmp_path):
    pytest.importorskip("pynvml")
    if cuda_gpu() is not None:
        pytest.skip("an NVIDIA driver is here: NVML answers")
    meter = energy_meter(Context(None, tmp_path, REHEARSAL, device="cuda"))
    assert isinstance(meter, NoEnergy)
    assert meter.reason.startswith("NVML: ")  # e.g. "NVML: NVML Shared Library Not Found"
    assert energy_meter(Context(None, tmp_path, REHEARSAL, device="cpu")).reason == "no GPU (a CPU rehearsal)"


def test_the_graph_runner_takes_single_graph_models_and_a_known_capture():
    from tempseg.models import build_model
    from tempseg.models.contract import build_contract

    for name in ("fcresnet18x0.25_t66", "fcresnet18x0.25_accel18"):
        model = build_model(name)
        contract = build_contract(model, name, height=64, width=128)
        if name.endswith("accel18"):  # a keyframe pair: two graphs a frame could take
            with pytest.raises(ValueError, match="graph pair"):
                TorchGraphRunner(contract, model)
            continue
        assert TorchGraphRunner(contract, model, capture="runtime").capture == "runtime"
        with pytest.raises(ValueError, match="capture"):
            TorchGraphRunner(contract, model, capture="cupy")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip extra `rtx`) builds engines without a GPU")
    folder = tmp_path_factory.mktemp("prepared")
    command = [sys.executable, "-m", "bench.gpu_check", "--prepare-engines", str(folder)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"--prebuilt {folder}" in result.stdout  # what to run on the GPU machine
    return folder


@pytest.mark.rtx
def test_prepare_engines_writes_the_small_graph_and_an_rtx_engine_for_the_portable_targets(prepared):
    from tempseg.common.contract import read_onnx_contract

    contract = read_onnx_contract(prepared / "model.onnx")
    assert (contract.model, (contract.height, contract.width)) == ("fcresnet18x0.25_t66", (64, 128))
    built = json.loads((prepared / "tensorrt_rtx-fp32.engine.json").read_text())
    assert built["tensorrt"]["flavour"] == "tensorrt_rtx"
    assert built["compute_capability_source"] == "portable default"  # no GPU here: RTX's listed targets
    assert "9.0" not in built["compute_capabilities"]  # so a Hopper GPU is expected to refuse it
    assert (prepared / "tensorrt_rtx-fp32.engine").stat().st_size == built["engine"]["bytes"]


@pytest.mark.rtx
def test_a_prebuilt_engine_of_a_flavour_not_installed_is_a_skip_with_the_reason(prepared, tmp_path):
    from tempseg.common.platform import try_import

    if try_import("tensorrt")[0] is not None:
        pytest.skip("standard TensorRT is installed here")
    folder = tmp_path / "prebuilt"
    folder.mkdir()
    for name in ("model.onnx", "tensorrt_rtx-fp32.engine"):
        (folder / name).write_bytes((prepared / name).read_bytes())
    built = json.loads((prepared / "tensorrt_rtx-fp32.engine.json").read_text())
    built["tensorrt"]["flavour"] = "tensorrt"  # as if standard TensorRT had built it
    (folder / "tensorrt_rtx-fp32.engine.json").write_text(json.dumps(built))
    got = run_prebuilt(Context(None, tmp_path, REHEARSAL, device="cpu", prebuilt=folder))
    engine = got["engines"]["tensorrt_rtx-fp32.engine"]
    assert (got["status"], engine["status"]) == ("skip", "skip")
    assert "TensorRT is not importable" in engine["reason"]


def test_prebuilt_without_the_prepared_graph_is_a_one_line_error(tmp_path):
    command = [sys.executable, "-m", "bench.gpu_check", "--prebuilt", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr == f"gpu-check: {tmp_path}: no model.onnx (write the folder with --prepare-engines)\n"
    assert list(tmp_path.iterdir()) == []


def test_a_spent_time_budget_skips_the_checks_not_yet_started_and_says_so(tmp_path):
    command = [sys.executable, "-m", "bench.gpu_check", "--rehearse", "--budget-s", "0", "--out-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(next(tmp_path.glob("gpu-cpu-rehearsal-*.json")).read_text())
    reasons = {check["reason"] for check in report["checks"].values()}
    assert reasons == {"the --budget-s of 0 s was spent", "needs a GPU (a CPU rehearsal)"}
    assert report["summary"] == {"pass": 0, "fail": 0, "skip": len(CHECKS)}


def test_the_batch_sweep_stops_at_the_time_budget_after_its_first_point(tmp_path):
    from tempseg.models import build_model

    ctx = Context(None, tmp_path, REHEARSAL, device="cpu")
    ctx.deadline = 0.0  # spent
    model = build_model(SMALL).eval()
    got = batch_sweep(ctx, model, SMALL, "fp32", NoEnergy("none"))
    assert list(got["points"]) == ["1"]  # batch 1 is always measured
    assert (got["stopped"], got["saturating_batch"]) == ("time budget (--budget-s)", 1)
