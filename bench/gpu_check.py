"""`make gpu-check`: on an NVIDIA machine, run the GPU paths that CI cannot, and record what happened.

CI has no GPU, so the CUDA paths are tested there with fakes only. This script runs them for real in one go
(a few minutes) with nothing downloaded: it needs the packages of NEEDS below (numpy, OpenCV, onnx,
onnxruntime, onnxscript for torch's exporter, tqdm, torch with CUDA, cuda-python) and no other; TensorRT,
TensorRT-RTX, pycuda and nvidia-ml-py (NVML) are used where installed and skipped, with the reason, where not.
It exports the graphs it needs itself, from random-weight models, into a temporary folder. The checks, in the
order they run:

1. cuda_api: runtime/cuda.py's device buffers, pinned host arrays, streams and events, with cuda-python and
   (where installed) pycuda: H2D, memset and D2H round trip, event timing, copy bandwidth.
2. cuda_graphs: runtime/cuda.py's stream capture (cuda-python): a captured copy graph must not run while
   captured and must replay with the host data of each launch; pycuda must refuse.
3. torch_vs_onnxruntime: the torch CUDA backend (runtime/backends/torch_runner.py) against ONNX Runtime on
   the CPU, same frames, state carried: label agreement per frame. Judged in strict FP32 (TF32 off); with
   TF32 on (torch's default for convolutions) and in FP16 it is recorded.
4. stateful_graphs: the stateful step of a one-state (T 6-6) and a two-state (memory attention) model as two
   CUDA graphs with ping-pong state addresses (bench/cuda_graph_runner.py), replayed on a runtime/cuda.py
   stream with its pinned buffers and events, captured by torch.cuda.graph and by runtime/cuda.py's own
   capture: labels against the eager torch runner, the state addresses per frame; graph against eager
   latency of fcresnet18_t66 FP16 at 256x512.
5. torch_latency: latency per phase (CUDA events, through the frame loop of runtime/loop.py), memory and NVML
   energy per frame of the torch CUDA backend at 256x512 for fcresnet18, fcresnet18_t66, fcresnet18_lma3r1
   and the Accel pair fcresnet18x0.5_accel34 (latency by frame kind, keyframe every 5 with host DIS flow),
   FP32 and FP16, at batch 1; then each at batch 1, 2, 4, ... until the frames a second stop growing by 10 %
   (the batch that saturates the GPU): throughput, latency per call, peak memory and energy per frame.
6. many_cameras: K streams (K = 1, 2, 4, 8) of fcresnet18_t66 at 256x512, FP16, through the torch CUDA backend:
   one runner of the model at batch K (runtime/batch.py, one call per tick) against K batch-1 runners called in
   turn: throughput, per-frame latency (the tick's start to the stream's labels), the CUDA allocator's peak,
   and each batched slot's labels against its stream run alone (agreement per frame).
7. tensorrt: for each of TensorRT and TensorRT-RTX that imports: build an engine of the small graph
   (engine/build.py; TensorRT-RTX for this GPU), run it through the TensorRT runner without and with CUDA
   graphs, labels against ONNX Runtime. A GPU that the flavour does not list (TensorRT-RTX 1.7 on Hopper,
   compute capability 9.0) is tried anyway, and what happened, error text included, is recorded as a skip.
   This check comes last because an engine on an unlisted GPU may crash the process: the report is written
   after every check, so a check still marked "running" is one that took the process down.

Writes bench/results/gpu-<device>-<date>.json: the device, package versions, and each check's status
(pass, fail or skip), its reason and its figures. Exit status 1 if a check failed. Without a GPU it prints
one line saying so and what it would run, writes nothing and exits 0.

`--rehearse` runs, on the CPU and at small sizes, every check that does not need a GPU (3, 5, 6: the export,
ONNX Runtime, the torch runner, the loops and the batch sweep), to find before a GPU machine is at hand what
the script imports or breaks; it writes gpu-cpu-rehearsal-<date>.json into --out-dir (default runs/gpu-check).
`--prepare-engines DIR` (no GPU, TensorRT-RTX) writes the small graph and its engine for RTX's default compute
capabilities; `--prebuilt DIR` on the GPU makes check 7 run them: does an engine built elsewhere run here?
`--budget-s S`: no check and no sweep point starts after S seconds (a machine held for a fixed time).

`python -m bench.gpu_check [--out-dir bench/results] [--latency-frames 200] [--rehearse] [--budget-s S]
[--prebuilt DIR | --prepare-engines DIR]` (`make gpu-check`)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import itertools
import json
import platform
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tempseg.common.io import write_json
from tempseg.common.platform import versions
from tempseg.engine.trt import GpuInfo, cuda_gpu

RESULTS = Path("bench/results")
REHEARSAL_RESULTS = Path("runs/gpu-check")
SMALL = "fcresnet18x0.25_t66"  # the agreement model: small, with a state that reaches the labels
SMALL_HW = (64, 128)
SMALL_FRAMES = 12
GRAPH_MODELS = (SMALL, "fcresnet18x0.25_lma3r1")  # one state (T 6-6), two states (memory attention)
LATENCY_MODELS = ("fcresnet18", "fcresnet18_t66", "fcresnet18_lma3r1", "fcresnet18x0.5_accel34")  # ratios: / [0]
CAMERA_MODEL = "fcresnet18_t66"
AGREEMENT = 0.99  # least label agreement with ONNX Runtime, per frame, for a pass
SATURATED = 1.10  # a batch twice as large that gives less than 10 % more frames a second: the GPU is saturated


@dataclass(frozen=True)
class Sizes:
    """How much the latency, sweep and camera checks run: on a GPU, and in a CPU rehearsal."""

    latency_hw: tuple[int, int]  # input size of the latency, sweep and camera models
    latency_frames: int  # timed frames per batch-1 latency run
    warmup: int  # frames (ticks, calls) run before the timed ones
    batches: tuple[int, ...]  # the batch sweep's sizes, in order; it stops once the GPU is saturated
    sweep_seconds: float  # least time of each sweep point's timed calls (NVML's energy counter is coarse)
    sweep_calls: int  # least number of timed calls per sweep point
    cameras: tuple[int, ...]  # values of K for many_cameras
    camera_ticks: int  # frames per stream


ON_GPU = Sizes((256, 512), 200, 20, (1, 2, 4, 8, 16, 32, 64), 0.5, 20, (1, 2, 4, 8), 40)
REHEARSAL = Sizes(SMALL_HW, 3, 1, (1, 2), 0.0, 2, (1, 2), 3)
PLAN = (
    "runtime/cuda.py buffers, events and streams (cuda-python, pycuda) and CUDA graphs, torch CUDA against "
    "ONNX Runtime labels, the stateful step as ping-pong CUDA graphs against eager, torch CUDA latency, memory "
    "and NVML energy at 256x512 (fcresnet18, fcresnet18_t66, fcresnet18_lma3r1, the Accel pair) at batch 1 and "
    "at the batch that saturates the GPU, K cameras batched against K runners in turn (torch CUDA), TensorRT "
    "and TensorRT-RTX engines where installed; --rehearse runs the CPU side of it here"
)
# What the checks import (distributions): the CPU rehearsal is tested with nothing else of the project's
# dependencies importable, as on a GPU machine given the source tree alone with a stock CUDA image.
NEEDS = (
    *("numpy", "opencv-python-headless", "onnx", "onnxruntime", "onnxscript", "tqdm", "torch"),
    *("cuda-python", "cuda-bindings"),
)
VERSIONS = ("numpy", "torch", "onnx", "onnxruntime", "opencv-python-headless", "cuda-bindings", "cuda-python")
VERSIONS += ("pycuda", "tensorrt", "tensorrt-rtx", "cupy-cuda12x", "cupy-cuda13x", "nvidia-ml-py")


class UnavailableError(Exception):
    """A check (or part of one) that cannot run on this machine; the message says why."""


def attempt(check: Callable[[], dict]) -> dict:
    """Run `check`: its figures with status "pass" (unless it sets its own), "skip" on UnavailableError, "fail"
    on any other error (with the error and the end of its traceback)."""
    started = time.perf_counter()
    result: dict[str, Any]
    try:
        result = {"status": "pass", **check()}
    except UnavailableError as err:
        result = {"status": "skip", "reason": str(err)}
    except Exception as err:
        result = {"status": "fail", "reason": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(-4)}
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def overall(parts: dict[str, dict]) -> dict:
    """Status and reason of a check made of parts: fail if one failed, else pass if one passed, else skip."""
    statuses = {part["status"] for part in parts.values()}
    status = "fail" if "fail" in statuses else "pass" if "pass" in statuses else "skip"
    reasons = [f"{name}: {part['reason']}" for name, part in parts.items() if part.get("reason")]
    return {"status": status, "reason": "; ".join(reasons)} if reasons else {"status": status}


def report_path(results: Path, device: str, date: str) -> Path:
    """results/gpu-<device>-<date>.json, the device name in lower case with runs of other characters as '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "gpu"
    return results / f"gpu-{slug}-{date}.json"


def write_report(report: dict, results: Path) -> Path:
    """Write `report` (with `device` and `date`) to its report_path, atomically; returns the path."""
    path = report_path(results, report["device"], report["date"])
    write_json(path, report)
    return path


# ---- shared inputs -----------------------------------------------------------------------------------------


class Context:
    """What several checks share, made on first use: the small model, its ONNX graph, frames, ONNX Runtime labels.
    `device` is "cuda", or "cpu" in a rehearsal (`gpu` None)."""

    def __init__(
        self, gpu: GpuInfo | None, work: Path, sizes: Sizes, device: str = "cuda", prebuilt: Path | None = None
    ) -> None:
        self.gpu, self.work, self.sizes, self.device = gpu, work, sizes, device
        self.prebuilt = prebuilt  # a folder of prepare_engines, for the TensorRT check
        self.deadline = float("inf")  # perf_counter time after which no check or sweep point starts (--budget-s)

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def torch(self) -> Any:
        """torch, where it runs on this context's device; UnavailableError otherwise."""
        try:
            import torch
        except ImportError as err:
            raise UnavailableError(f"torch is not installed ({err})") from None
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UnavailableError(f"torch {torch.__version__} sees no CUDA device (a CPU-only build?)")
        return torch

    @functools.cached_property
    def small(self) -> tuple[Any, Any, Path, dict]:
        """(model on the CPU, contract, model.onnx, notes): SMALL exported by export/, as `make export` does."""
        from tempseg.export import onnx_graph
        from tempseg.models import random_model

        model = random_model(SMALL)  # state reaches the labels, convs have biases
        contract = onnx_graph.build_contract(
            model, SMALL, height=SMALL_HW[0], width=SMALL_HW[1], batch=1, checkpoint_sha256=None
        )
        notes: dict[str, Any] = {}
        try:
            graph = onnx_graph.export_fp32(model, contract)
        except Exception as err:  # recorded: the project's exporter failed on this torch; the runtimes still run
            notes["export_fp32_error"] = f"{type(err).__name__}: {str(err)[:1000]}"
            graph = torchscript_export(model, contract)
            notes["exporter"] = "TorchScript (dynamo=False), after export_fp32 failed"
        return model, contract, onnx_graph.save_onnx(graph, self.work / "model.onnx"), notes

    @functools.cached_property
    def frames(self) -> list[Any]:
        """SMALL_FRAMES synthetic frames at the small graph's input size (one sequence, in order)."""
        return synthetic_frames(SMALL_HW, SMALL_FRAMES)

    @functools.cached_property
    def ort_labels(self) -> list[np.ndarray]:
        """The small graph's labels per frame on ONNX Runtime (CPU): the reference every GPU backend meets."""
        from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner

        _, contract, graph, _ = self.small
        return stream_labels(OnnxRuntimeRunner(contract, graph), self.frames)[0]


def torchscript_export(model: Any, contract: Any) -> Any:
    """The contract graph through torch's TorchScript exporter, for when export_fp32's exporter fails."""
    import io

    import onnx
    import torch

    from tempseg.common.contract import set_metadata
    from tempseg.export import onnx_graph
    from tempseg.export.reparam import deploy_model
    from tempseg.models.fcresnet import FCResNet

    deployed = deploy_model(copy.deepcopy(model))  # a copy of its argument, of the same class
    if not isinstance(deployed, FCResNet):  # SMALL is one; an Accel pair would need the keyframe/update wrappers
        raise TypeError(f"the TorchScript fallback exports an FCResNet, not {type(deployed).__name__}")
    wrapper = onnx_graph.ContractWrapper(deployed, logits=False).eval()
    inputs = (torch.zeros(contract.image.shape), *(torch.zeros(s.shape) for s in contract.states))
    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper,
        inputs,
        buffer,  # pyright: ignore[reportArgumentType] # f is typed a path; the TorchScript exporter writes file-likes
        input_names=["image", *(s.input for s in contract.states)],
        output_names=["labels", *(s.output for s in contract.states)],
        opset_version=onnx_graph.OPSET,
        dynamo=False,
    )
    graph = onnx.load_from_string(buffer.getvalue())
    set_metadata(graph, contract)
    return graph


def stream_labels(runner: Any, frames: Sequence[Any]) -> tuple[list[np.ndarray], list[Any]]:
    """`frames` through `runner` (activated here) on the runtime's one stateful stream: labels and PhaseTimes."""
    from tempseg.runtime.stream import stream

    labels, times = [], []
    with runner:
        for step in stream(runner, frames):
            times.append(step.phases)
            labels.append(step.labels.copy())
    return labels, times


def agreement(labels: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict:
    """Fraction of equal labels per frame: mean and min over the frames."""
    per_frame = [float((a == b).mean()) for a, b in zip(labels, reference, strict=True)]
    return {"mean": round(float(np.mean(per_frame)), 6), "min": round(min(per_frame), 6)}


def summary(values: np.ndarray | Sequence[float]) -> dict:
    """mean / p50 / p99 / max in ms."""
    stats = {"mean": float(np.mean(values)), **{f"p{q}": float(np.percentile(values, q)) for q in (50, 99)}}
    return {key: round(value, 4) for key, value in {**stats, "max": float(np.max(values))}.items()}


# ---- 1, 2: runtime/cuda.py -----------------------------------------------------------------------------------


def check_cuda_api(ctx: Context) -> dict:
    from tempseg.runtime import cuda as rc

    bindings = {name: attempt(lambda make=make: cuda_round_trip(make)) for name, make in cuda_apis(rc).items()}
    if {b["status"] for b in bindings.values()} == {"skip"}:
        raise UnavailableError("no CUDA binding installed: " + "; ".join(b["reason"] for b in bindings.values()))
    chosen = attempt(lambda: {"api": close_after(rc.default_cuda_api(), lambda api: type(api).__name__)})
    return {**overall({**bindings, "default_cuda_api": chosen}), "bindings": bindings, "default_cuda_api": chosen}


def cuda_apis(rc: Any) -> dict[str, Callable[[], Any]]:
    """Each binding's api maker; UnavailableError from the maker where the binding is not installed."""

    def maker(cls: type) -> Callable[[], Any]:
        def make() -> Any:
            try:
                return cls()
            except ImportError as err:
                raise UnavailableError(f"not installed ({err})") from None

        return make

    return {"cuda-python": maker(rc.CudaPythonApi), "pycuda": maker(rc.PyCudaApi)}


def close_after(api: Any, use: Callable[[Any], Any]) -> Any:
    try:
        return use(api)
    finally:
        api.close()


def cuda_round_trip(make: Callable[[], Any], mib: int = 64) -> dict:
    """H2D, memset of the first KiB, D2H of `mib` MiB through pinned arrays and a DeviceBuffer, timed by events."""
    api = make()
    try:
        stream, events = api.create_stream(), [api.create_event() for _ in range(4)]
        host = api.host_array((mib << 18,), np.float32)  # mib MiB of float32
        back = api.host_array((mib << 18,), np.float32)
        host[...] = np.arange(host.size, dtype=np.float32)
        free_before, total = api.mem_get_info()
        with api.device_buffer(host.nbytes) as device:
            free_during, _ = api.mem_get_info()
            events[0].record(stream)
            api.memcpy_htod_async(device.ptr, host, stream)
            events[1].record(stream)
            api.memset_async(device.ptr, 0, 1024, stream)
            events[2].record(stream)
            api.memcpy_dtoh_async(back, device.ptr, stream)
            events[3].record(stream)
            stream.synchronize()
        expected_ok = not back[:256].any() and np.array_equal(back[256:], host[256:])
        h2d, d2h = events[0].elapsed_ms(events[1]), events[2].elapsed_ms(events[3])
        for array in (host, back):
            api.free_host(array)
        for handle in (*events, stream):
            handle.close()
    finally:
        api.close()
    figures = {
        "bytes": host.nbytes,
        "h2d_ms": round(h2d, 4),
        "d2h_ms": round(d2h, 4),
        "h2d_gb_per_s": round(host.nbytes / h2d / 1e6, 2) if h2d > 0 else None,
        "d2h_gb_per_s": round(host.nbytes / d2h / 1e6, 2) if d2h > 0 else None,
        "device_free_bytes": free_before,
        "device_total_bytes": total,
        "allocation_seen_bytes": free_before - free_during,
    }
    if not expected_ok:
        return {"status": "fail", "reason": "the data copied back differs from what was sent (less the memset)"}
    return figures


def check_cuda_graphs(ctx: Context) -> dict:
    from tempseg.common.errors import UserError
    from tempseg.runtime import cuda as rc

    makers = cuda_apis(rc)
    figures = {"cuda-python": cuda_graph_replay(makers["cuda-python"])}
    try:
        close_after(makers["pycuda"](), lambda api: api.capture_graph(api.create_stream(), lambda: None))
        figures["pycuda"] = {"status": "fail", "reason": "pycuda captured a graph; runtime/cuda.py says it cannot"}
    except UnavailableError as err:
        figures["pycuda"] = {"status": "skip", "reason": str(err)}
    except UserError as err:
        figures["pycuda"] = {"status": "pass", "refused": str(err)}
    return {**overall(figures), **figures}


def cuda_graph_replay(make: Callable[[], Any], n: int = 4096, launches: int = 100) -> dict:
    """Capture H2D -> memset -> D2H; nothing may run while captured; each launch reads the host data of that time."""
    api = make()
    try:
        stream, start, end = api.create_stream(), api.create_event(), api.create_event()
        src, dst = api.host_array((n,), np.float32), api.host_array((n,), np.float32)
        with api.device_buffer(src.nbytes) as device:

            def enqueue() -> None:
                api.memcpy_htod_async(device.ptr, src, stream)
                api.memset_async(device.ptr, 0, 16, stream)  # the first 4 floats
                api.memcpy_dtoh_async(dst, device.ptr, stream)

            src[...] = 1.0
            graph = api.capture_graph(stream, enqueue)
            stream.synchronize()
            ran_while_captured = bool(dst.any())
            replays = []
            for scale in (2.0, 3.0):
                src[...] = np.arange(n, dtype=np.float32) * scale
                graph.launch(stream)
                stream.synchronize()
                replays.append(not dst[:4].any() and np.array_equal(dst[4:], src[4:]))
            start.record(stream)
            for _ in range(launches):
                graph.launch(stream)
            end.record(stream)
            stream.synchronize()
            per_launch_us = 1e3 * start.elapsed_ms(end) / launches
            graph.close()
        for array in (src, dst):
            api.free_host(array)
        for handle in (start, end, stream):
            handle.close()
    finally:
        api.close()
    if ran_while_captured or not all(replays):
        reason = f"ran while captured: {ran_while_captured}; replays right: {replays}"
        return {"status": "fail", "reason": reason}
    return {"status": "pass", "replays": len(replays), "us_per_launch": round(per_launch_us, 2)}


# ---- 3-6: torch on CUDA ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tf32(torch: Any, enabled: bool) -> Iterator[None]:
    """TF32 for cuDNN convolutions and matmuls on or off, restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def synthetic_frames(hw: tuple[int, int], count: int, source: str = "synthetic") -> list[Any]:
    """`count` frames of a synthetic stream at `hw`, in order."""
    from tempseg.data.sources import open_source

    with open_source(source, height=hw[0], width=hw[1], frames=count) as frames:
        return list(frames)


def seeded_model(torch: Any, name: str) -> Any:
    """`name` built with random weights from a fixed seed (latency and memory do not depend on them)."""
    from tempseg.models import build_model

    torch.manual_seed(0)
    return build_model(name).eval()


def check_torch_vs_onnxruntime(ctx: Context) -> dict:
    torch = ctx.torch()
    from tempseg.runtime.backends.torch_runner import TorchRunner

    model, contract, _, notes = ctx.small
    reference = ctx.ort_labels
    runs = {}
    for name, precision, allow_tf32 in (("fp32", "fp32", False), ("fp32_tf32", "fp32", True), ("fp16", "fp16", True)):
        runner = TorchRunner(contract.with_changes(precision=precision), model=copy.deepcopy(model), device=ctx.device)
        with tf32(torch, allow_tf32):
            labels, times = stream_labels(runner, ctx.frames)
        runs[name] = {**agreement(labels, reference), "compute_ms_p50": summary([t.compute for t in times])["p50"]}
    strict = runs["fp32"]["min"]
    figures = {"model": SMALL, "input_hw": list(SMALL_HW), "frames": len(ctx.frames), "agreement": runs, **notes}
    if strict < AGREEMENT:
        reason = f"strict FP32 labels agree with ONNX Runtime on {100 * strict:.2f} % of a frame at worst"
        return {"status": "fail", "reason": f"{reason} (< {100 * AGREEMENT:g} %)", **figures}
    return figures


# ---- 4: the stateful step as CUDA graphs ---------------------------------------------------------------------


def check_stateful_graphs(ctx: Context) -> dict:
    torch = ctx.torch()
    from bench.cuda_graph_runner import CAPTURES

    runs = {}
    with tf32(torch, False):  # strict FP32: graph and eager run the same kernels
        for name, capture in itertools.product(GRAPH_MODELS, CAPTURES):
            runs[f"{name}/{capture}"] = attempt(lambda n=name, c=capture: graphs_against_eager(torch, n, c, ctx.frames))
    latency = attempt(lambda: graph_latency(ctx, torch))
    figures = {"input_hw": list(SMALL_HW), "frames": len(ctx.frames), "runs": runs, "latency": latency}
    return {**overall({**runs, "latency": latency}), **figures}


def graphs_against_eager(torch: Any, name: str, capture: str, frames: Sequence[Any]) -> dict:
    """`name` (random weights) through the eager torch runner and through the graph runner: labels and the state
    addresses each frame read."""
    from bench.cuda_graph_runner import TorchGraphRunner, ping_pong
    from tempseg.models import random_model
    from tempseg.models.contract import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner
    from tempseg.runtime.stream import stream

    model = random_model(name)
    height, width = frames[0].image.shape[:2]
    contract = build_contract(model, name, height=height, width=width)
    eager, _ = stream_labels(TorchRunner(contract, model=copy.deepcopy(model), device="cuda"), frames)
    graphed, addresses, compute = [], [], []
    with TorchGraphRunner(contract, model, capture=capture) as runner:
        for step in stream(runner, frames):
            addresses.append(runner.state_addresses())  # the buffers the next frame reads
            graphed.append(step.labels.copy())
            compute.append(step.phases.compute)
    figures = {
        **agreement(graphed, eager),
        "identical_frames": sum(np.array_equal(a, b) for a, b in zip(graphed, eager, strict=True)),
        "state_buffer_sets": len(set(addresses)),
        "compute_ms": summary(compute),
    }
    if not ping_pong(addresses):
        return {"status": "fail", "reason": "the state addresses do not alternate between two sets", **figures}
    if figures["min"] < AGREEMENT:
        reason = f"graph labels agree with eager on {100 * figures['min']:.2f} % of a frame at worst"
        return {"status": "fail", "reason": reason, **figures}
    return figures


def graph_latency(ctx: Context, torch: Any) -> dict:
    """fcresnet18_t66 FP16 at the latency size, eager against CUDA graphs (torch capture), per phase."""
    from bench.cuda_graph_runner import TorchGraphRunner
    from tempseg.models.contract import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner

    sizes = ctx.sizes
    model = seeded_model(torch, CAMERA_MODEL)
    contract = build_contract(model, CAMERA_MODEL, height=sizes.latency_hw[0], width=sizes.latency_hw[1])
    contract = contract.with_changes(precision="fp16")
    frames = list(itertools.islice(itertools.cycle(synthetic_frames(sizes.latency_hw, 30)), sizes.warmup + 100))
    runners = {"eager": TorchRunner(contract, model=model, device="cuda"), "graphs": TorchGraphRunner(contract, model)}
    runs, labels = {}, {}
    for way, runner in runners.items():
        labels[way], times = stream_labels(runner, frames)
        kept = times[sizes.warmup :]
        runs[way] = {phase: summary([getattr(t, phase) for t in kept]) for phase in ("h2d", "compute", "d2h")}
    ratio = runs["graphs"]["compute"]["p50"] / runs["eager"]["compute"]["p50"]
    return {
        "model": CAMERA_MODEL,
        "precision": "fp16",
        "input_hw": list(sizes.latency_hw),
        "frames": len(frames) - sizes.warmup,
        "runs": runs,
        "compute_p50_ratio_graphs_to_eager": round(ratio, 4),
        "labels_agree_fp16": agreement(labels["graphs"], labels["eager"]),  # recorded, not judged
    }


# ---- 5: latency, memory, energy, the batch that saturates the GPU --------------------------------------------


class EnergyMeter:
    """GPU 0's energy counter through NVML (nvidia-ml-py), in millijoules since the driver loaded (Volta and
    later). NVML's device 0 is CUDA's device 0 on a machine with one GPU; `name` records which it read."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        try:
            self.handle = nvml.nvmlDeviceGetHandleByIndex(0)
            name = nvml.nvmlDeviceGetName(self.handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
            self.read()  # NVMLError here where the driver does not give the counter
        except Exception:
            nvml.nvmlShutdown()
            raise
        self.reason = ""

    def read(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def mark(self) -> tuple[int, float]:
        return self.read(), time.perf_counter()

    def since(self, mark: tuple[int, float], frames: int) -> dict:
        """Energy per frame and mean power from `mark` to now."""
        millijoules, seconds = self.read() - mark[0], time.perf_counter() - mark[1]
        return {
            "energy_mj_per_frame": round(millijoules / frames, 3) if frames else None,
            "mean_power_w": round(millijoules / 1e3 / seconds, 1) if seconds > 0 else None,
        }

    def close(self) -> None:
        self.nvml.nvmlShutdown()


class NoEnergy:
    """Where NVML cannot give the energy counter: no figures, and the reason why."""

    def __init__(self, reason: str) -> None:
        self.reason, self.name = reason, None

    def mark(self) -> tuple[int, float]:
        return 0, 0.0

    def since(self, mark: tuple[int, float], frames: int) -> dict:
        return {}

    def close(self) -> None:
        """Nothing to release."""


def energy_meter(ctx: Context) -> EnergyMeter | NoEnergy:
    if ctx.device != "cuda":
        return NoEnergy("no GPU (a CPU rehearsal)")
    try:
        import pynvml
    except ImportError as err:
        return NoEnergy(f"nvidia-ml-py is not installed ({err})")
    try:
        return EnergyMeter(pynvml)
    except pynvml.NVMLError as err:
        return NoEnergy(f"NVML: {err}")


def check_torch_latency(ctx: Context) -> dict:
    torch = ctx.torch()
    sizes = ctx.sizes
    frames = synthetic_frames(sizes.latency_hw, 30)
    meter = energy_meter(ctx)
    runs, sweeps = {}, {}
    try:
        for name, precision in itertools.product(LATENCY_MODELS, ("fp32", "fp16")):
            model = seeded_model(torch, name)
            runs[f"{name}/{precision}"] = loop_latency(ctx, model, name, precision, frames, meter)
            sweep = functools.partial(batch_sweep, ctx, model, name, precision, meter)
            sweeps[f"{name}/{precision}"] = attempt(sweep)
            del model, sweep  # the next model replaces this one on the GPU
            if ctx.device == "cuda":
                torch.cuda.empty_cache()
    finally:
        meter.close()
    base = LATENCY_MODELS[0]
    ratios = {
        name: {
            p: round(p50_compute(runs[f"{name}/{p}"]) / p50_compute(runs[f"{base}/{p}"]), 4) for p in ("fp32", "fp16")
        }
        for name in LATENCY_MODELS[1:]
    }
    return {
        **overall(sweeps),
        "input_hw": list(sizes.latency_hw),
        "frames": sizes.latency_frames,
        "warmup": sizes.warmup,
        "weights": "random (latency and memory do not depend on them)",
        "tf32": bool(torch.backends.cudnn.allow_tf32),
        "energy": {"nvml_device": meter.name, "reason": meter.reason or None},
        "runs": runs,
        f"compute_p50_ratio_to_{base}": ratios,
        "batch_sweep": sweeps,
    }


def p50_compute(run: dict) -> float:
    return run["latency_ms"]["compute"]["p50"]


def loop_latency(ctx: Context, model: Any, name: str, precision: str, frames: list[Any], meter: Any) -> dict:
    """Batch 1 through runtime/loop.py: latency per phase (and by frame kind), memory, energy over the loop."""
    from tempseg.models.contract import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner
    from tempseg.runtime.loop import PHASES, LoopOptions, run_loop
    from tempseg.runtime.report import latency_by_kind

    sizes = ctx.sizes
    total = sizes.warmup + sizes.latency_frames
    options = LoopOptions(warmup=sizes.warmup, max_frames=total, accuracy=False, consistency=False, progress=False)
    contract = build_contract(model, name, height=sizes.latency_hw[0], width=sizes.latency_hw[1])
    with TorchRunner(contract.with_changes(precision=precision), model=model, device=ctx.device) as runner:
        mark = meter.mark()
        result = run_loop(runner, itertools.islice(itertools.cycle(frames), total), options, source_fps=30.0)
        energy = meter.since(mark, total)  # over every frame of the loop, the warm-up included
        memory = asdict(runner.memory())
    rows = result.timings.rows(skip=sizes.warmup)
    latency = {phase: summary(rows[:, i]) for i, phase in enumerate(PHASES)}
    run = {"latency_ms": latency, "fps": round(1e3 / latency["total"]["mean"], 2), "memory": memory, **energy}
    by_kind = latency_by_kind(rows, result.timings.kinds_of(skip=sizes.warmup))
    if by_kind is not None:  # a keyframe pair: keyframe and update frames apart
        run["latency_by_kind_ms"] = by_kind
    return run


def batch_sweep(ctx: Context, model: Any, name: str, precision: str, meter: Any) -> dict:
    """The model at batch 1, 2, 4, ... until a doubling adds less than 10 % frames a second: each point's figures,
    the batch that saturates the GPU, and why the sweep stopped ("saturated" where the GPU was; else the best
    batch measured is not shown to saturate it)."""
    torch = ctx.torch()
    points: dict[str, dict] = {}
    best, stopped = 0.0, "largest batch"
    for batch in ctx.sizes.batches:
        if points and ctx.time_left() <= 0:
            stopped = "time budget (--budget-s)"
            break
        try:
            point = sweep_point(ctx, torch, model, name, precision, batch, meter)
        except torch.cuda.OutOfMemoryError as err:
            points[str(batch)] = {"out_of_memory": str(err).splitlines()[0][:200]}
            torch.cuda.empty_cache()
            stopped = "out of memory"
            break
        points[str(batch)] = point
        if point["fps"] < SATURATED * best:
            stopped = "saturated"
            break
        best = max(best, point["fps"])
    return {
        "input_hw": list(ctx.sizes.latency_hw),
        "flow": "zeros (the update graph's host flow is not device work)",
        "points": points,
        "stopped": stopped,
        **saturation(points),
    }


def sweep_point(ctx: Context, torch: Any, model: Any, name: str, precision: str, batch: int, meter: Any) -> dict:
    """infer() calls of one runner at `batch` on a filled input: frames a second, latency per call (H2D, compute,
    D2H), the CUDA allocator's peak, energy per frame."""
    from tempseg.models.contract import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner

    sizes = ctx.sizes
    contract = build_contract(model, name, height=sizes.latency_hw[0], width=sizes.latency_hw[1], batch=batch)
    peak = _peak_memory(torch, ctx.device)
    with TorchRunner(contract.with_changes(precision=precision), model=model, device=ctx.device) as runner:
        runner.image.fill(0.5)  # the values do not change the work of a dense network
        for _ in range(max(1, sizes.warmup // 4)):  # a few calls: cuDNN picks its kernels for this batch
            runner.infer()
        calls, mark, started = [], meter.mark(), time.perf_counter()
        while len(calls) < sizes.sweep_calls or time.perf_counter() - started < sizes.sweep_seconds:
            calls.append(runner.infer())
        seconds = time.perf_counter() - started
        energy = meter.since(mark, batch * len(calls))
    totals = [t.h2d + t.compute + t.d2h for t in calls]
    by_kind = call_kinds([t.kind for t in calls], totals)
    return {
        "calls": len(calls),
        "fps": round(batch * len(calls) / seconds, 2),
        "latency_ms": summary(totals),
        "peak_allocated_bytes": peak(),
        **energy,
        **({"latency_by_kind_ms": by_kind} if by_kind else {}),
    }


def call_kinds(kinds: Sequence[str], totals: Sequence[float]) -> dict | None:
    """Latency per call by the graph that ran, where more than one did (a keyframe pair); else None."""
    if len(set(kinds)) < 2:
        return None
    return {kind: summary([t for k, t in zip(kinds, totals, strict=True) if k == kind]) for kind in sorted(set(kinds))}


def saturation(points: dict[str, dict]) -> dict:
    """The smallest batch whose frames a second come within 10 % of the sweep's best, and its figures."""
    measured = {int(batch): point for batch, point in points.items() if "fps" in point}
    if not measured:
        return {"saturating_batch": None}
    best = max(point["fps"] for point in measured.values())
    batch = min(b for b, point in measured.items() if point["fps"] * SATURATED >= best)
    return {
        "saturating_batch": batch,
        "fps_at_saturation": measured[batch]["fps"],
        "latency_ms_at_saturation": measured[batch]["latency_ms"],
        "fps_ratio_to_batch_1": round(measured[batch]["fps"] / measured[1]["fps"], 4) if 1 in measured else None,
    }


# ---- 6: many cameras ------------------------------------------------------------------------------------------


def check_many_cameras(ctx: Context) -> dict:
    torch = ctx.torch()
    sizes = ctx.sizes
    streams = [
        synthetic_frames(sizes.latency_hw, sizes.camera_ticks, f"synthetic:{k}") for k in range(max(sizes.cameras))
    ]
    runs = {}
    for count in sizes.cameras:
        runs[str(count)] = cameras_on_gpu(torch, streams[:count], device=ctx.device, skip=sizes.warmup // 4)
        if ctx.device == "cuda":
            torch.cuda.empty_cache()
    return {
        "model": CAMERA_MODEL,
        "precision": "fp16",
        "input_hw": list(sizes.latency_hw),
        "ticks": sizes.camera_ticks,
        "warmup_ticks": sizes.warmup // 4,
        "weights": "random (latency and memory do not depend on them)",
        "runs": runs,
    }


def cameras_on_gpu(torch: Any, streams: list[list[Any]], *, device: str = "cuda", skip: int = 5) -> dict:
    """K streams batched in one runner against K batch-1 runners in turn (bench/multistream.py serves both ways):
    figures and their ratios. `skip`: ticks left out of the timing. On a CPU (tests, rehearsal) the memory
    figures are None."""
    from bench.multistream import serve_batched, serve_sequential
    from tempseg.models.contract import build_contract
    from tempseg.runtime.backends.torch_runner import TorchRunner

    model = seeded_model(torch, CAMERA_MODEL)
    height, width = streams[0][0].image.shape[:2]

    def runner(batch: int) -> Any:
        made = build_contract(model, CAMERA_MODEL, height=height, width=width, batch=batch)
        return TorchRunner(made.with_changes(precision="fp16"), model=model, device=device)

    peak = _peak_memory(torch, device)
    with runner(len(streams)) as active:
        together = serve_batched(active, streams, skip=skip, keep_labels=True)
        batched = {**timing(together.latency, together.seconds), "peak_allocated_bytes": peak()}
    peak = _peak_memory(torch, device)
    with contextlib.ExitStack() as stack:
        alone = serve_sequential(
            [stack.enter_context(runner(1)) for _ in streams], streams, skip=skip, keep_labels=True
        )
        sequential = {**timing(alone.latency, alone.seconds), "peak_allocated_bytes": peak()}
    agree = [agreement(b, a)["min"] for b, a in zip(together.labels, alone.labels, strict=True)]
    memory = batched["peak_allocated_bytes"], sequential["peak_allocated_bytes"]
    return {
        "batched": batched,
        "sequential": sequential,
        "throughput_ratio": round(batched["fps"] / sequential["fps"], 4),
        "p99_ratio": round(batched["latency_ms"]["p99"] / sequential["latency_ms"]["p99"], 4),
        "memory_ratio": None if None in memory else round(memory[0] / memory[1], 4),
        "labels_agree_with_alone_min": min(agree),
    }


def _peak_memory(torch: Any, device: str) -> Callable[[], int | None]:
    """Resets the CUDA allocator's peak; the function returned reads it (None off CUDA)."""
    if device != "cuda":
        return lambda: None
    torch.cuda.reset_peak_memory_stats()
    return lambda: int(torch.cuda.max_memory_allocated())


def timing(latency: list[float], seconds: float) -> dict:
    """Frames a second over `seconds` and the per-frame latency statistics."""
    return {"fps": round(len(latency) / seconds, 2) if seconds else None, "latency_ms": summary(latency)}


# ---- 7: TensorRT ------------------------------------------------------------------------------------------------


def check_tensorrt(ctx: Context) -> dict:
    from tempseg.common.errors import UserError
    from tempseg.engine.trt import FLAVOURS, load_tensorrt

    flavours = {}
    for flavour in FLAVOURS:
        try:
            trt = load_tensorrt(flavour)
        except UserError as err:
            flavours[flavour] = {"status": "skip", "reason": str(err)}
            continue
        flavours[flavour] = try_engine(ctx, trt, functools.partial(build_and_run, ctx, trt))
    if ctx.prebuilt is None:
        return {**overall(flavours), "flavours": flavours}
    prebuilt = attempt(lambda: run_prebuilt(ctx))
    return {**overall({**flavours, "prebuilt": prebuilt}), "flavours": flavours, "prebuilt": prebuilt}


def try_engine(ctx: Context, trt: Any, run: Callable[[], dict]) -> dict:
    """`run` an engine of `trt`; on a GPU its flavour does not list, a failure is recorded as a skip."""
    from tempseg.engine.trt import gpu_support

    unlisted = gpu_support(trt, ctx.gpu)
    result = {"version": trt.version, **attempt(run)}
    if result["status"] == "fail":
        result["tensorrt_errors"] = list(trt.logger.errors()[-5:])
    if unlisted and result["status"] == "fail":
        result.update(status="skip", reason=f"{unlisted}; tried anyway: {result['reason']}")
    elif unlisted and result["status"] == "pass":
        result["note"] = f"{unlisted} by its own list, yet the engine built and ran"
    return result


def build_and_run(ctx: Context, trt: Any) -> dict:
    """The small graph built into an engine for this GPU, run against ONNX Runtime's labels."""
    from tempseg.engine.build import BuildOptions, build_engine

    _, contract, graph, _ = ctx.small
    engine = ctx.work / f"{trt.flavour}-fp32.engine"
    options = BuildOptions(timing_cache=None, compute_capabilities=("current",) if trt.is_rtx else ())
    built = build_engine(trt, graph, engine, options)
    runs = engine_runs(trt, contract, engine, ctx.frames, ctx.ort_labels)
    return {**runs, "engine_bytes": built.engine_bytes, "build_s": round(built.build_seconds, 3)}


def engine_runs(trt: Any, contract: Any, engine: Path, frames: Sequence[Any], reference: Sequence[np.ndarray]) -> dict:
    """`engine` through the TensorRT runner without and with CUDA graphs: labels against `reference`, and the
    status of both runs."""
    from tempseg.runtime.backends.trt_runner import TensorRTRunner

    runs = {}
    for graphs in (False, True):

        def run(graphs: bool = graphs) -> dict:
            runner = TensorRTRunner(
                contract, engine, flavour=trt.flavour, trt=trt, cuda_graphs=graphs, nan_check_every=1
            )
            labels, times = stream_labels(runner, frames)
            figures = {**agreement(labels, reference), "compute_ms": summary([t.compute for t in times])}
            if figures["min"] < AGREEMENT:
                return {"status": "fail", "reason": f"labels agree on {100 * figures['min']:.2f} % of a frame at worst"}
            return figures

        runs["cuda_graphs" if graphs else "plain"] = attempt(run)
    return {**overall(runs), **runs}


def prepare_engines(folder: Path) -> list[Path]:
    """For --prebuilt: the small graph (folder/model.onnx) and its TensorRT-RTX engine built for RTX's portable
    targets, here, where no GPU is needed; on a GPU machine they show whether an engine built elsewhere runs."""
    from tempseg.engine.build import BuildOptions, build_engine
    from tempseg.engine.sidecar import sidecar_path
    from tempseg.engine.trt import load_tensorrt

    trt = load_tensorrt("tensorrt_rtx")
    folder.mkdir(parents=True, exist_ok=True)
    _, _, graph, _ = Context(None, folder, REHEARSAL, device="cpu").small
    engine = folder / f"{trt.flavour}-fp32.engine"
    build_engine(trt, graph, engine, BuildOptions(timing_cache=None))  # no GPU: RTX's portable default targets
    return [graph, engine, sidecar_path(engine)]


def run_prebuilt(ctx: Context) -> dict:
    """Each engine of --prebuilt's folder (prepare_engines) through the runner, against ONNX Runtime's labels of
    the folder's model.onnx; an engine whose flavour is not installed, or does not list this GPU, is a skip."""
    from tempseg.common.contract import read_onnx_contract
    from tempseg.common.errors import UserError
    from tempseg.engine.sidecar import sidecar_path
    from tempseg.engine.trt import load_tensorrt
    from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner

    folder = ctx.prebuilt
    if folder is None:
        raise UnavailableError("no --prebuilt folder given")
    graph = folder / "model.onnx"
    contract = read_onnx_contract(graph)
    if (contract.height, contract.width) != SMALL_HW:
        raise ValueError(f"{graph}: input {contract.height}x{contract.width}, not the {SMALL_HW} of --prepare-engines")
    reference = stream_labels(OnnxRuntimeRunner(contract, graph), ctx.frames)[0]
    engines = {}
    for engine in sorted(folder.glob("*.engine")):
        built = json.loads(sidecar_path(engine).read_text())
        try:
            trt = load_tensorrt(built["tensorrt"]["flavour"])
        except UserError as err:
            engines[engine.name] = {"status": "skip", "reason": str(err)}
            continue
        runs = functools.partial(engine_runs, trt, contract, engine, ctx.frames, reference)
        engines[engine.name] = try_engine(ctx, trt, runs)
        engines[engine.name]["built_with"] = {**built["tensorrt"], "targets": built["compute_capabilities"]}
    if not engines:
        raise UnavailableError(f"no .engine file in {folder}")
    return {**overall(engines), "folder": str(folder), "engines": engines}


# ---- the script ---------------------------------------------------------------------------------------------------

GPU_ONLY = "needs a GPU (a CPU rehearsal)"
CHECKS: tuple[tuple[str, Callable[[Context], dict], bool], ...] = (  # name, check, runs in a CPU rehearsal
    ("cuda_api", check_cuda_api, False),
    ("cuda_graphs", check_cuda_graphs, False),
    ("torch_vs_onnxruntime", check_torch_vs_onnxruntime, True),
    ("stateful_graphs", check_stateful_graphs, False),
    ("torch_latency", check_torch_latency, True),
    ("many_cameras", check_many_cameras, True),
    ("tensorrt", check_tensorrt, False),  # last: an engine on a GPU its flavour does not list may crash the process
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"folder of the JSON report (default {RESULTS}; {REHEARSAL_RESULTS} with --rehearse)",
    )
    p.add_argument(
        "--latency-frames",
        type=int,
        default=None,
        help=f"timed frames per batch-1 latency run (default {ON_GPU.latency_frames})",
    )
    p.add_argument("--rehearse", action="store_true", help="run the checks that need no GPU on the CPU, at small sizes")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no check and no batch-sweep point after this many seconds (default: no limit)",
    )
    p.add_argument(
        "--prepare-engines",
        type=Path,
        metavar="DIR",
        help="no GPU needed: write the small graph and its TensorRT-RTX engine (default compute capabilities) into DIR",
    )
    p.add_argument(
        "--prebuilt",
        type=Path,
        metavar="DIR",
        help="the TensorRT check also runs the engines of --prepare-engines' DIR",
    )
    args = p.parse_args(argv)
    if args.prepare_engines is not None:
        return prepare_command(args.prepare_engines)
    if args.prebuilt is not None and not (args.prebuilt / "model.onnx").is_file():
        print(f"gpu-check: {args.prebuilt}: no model.onnx (write the folder with --prepare-engines)", file=sys.stderr)
        return 2
    gpu = None if args.rehearse else cuda_gpu()
    if gpu is None and not args.rehearse:
        print(f"gpu-check: no NVIDIA GPU visible (no driver or no device), nothing run or written; on a GPU: {PLAN}")
        return 0
    sizes = REHEARSAL if args.rehearse else ON_GPU
    if args.latency_frames is not None:
        sizes = replace(sizes, latency_frames=args.latency_frames)
    out_dir = args.out_dir or (REHEARSAL_RESULTS if args.rehearse else RESULTS)
    report = {
        "date": datetime.date.today().isoformat(),
        "host": f"{platform.node()} {platform.machine()}",
        "device": gpu.name if gpu else "cpu rehearsal",
        "compute_capability": gpu.compute_capability if gpu else None,
        "total_memory_bytes": gpu.total_memory_bytes if gpu else None,
        "command": " ".join(["python -m bench.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
        "versions": {"python": platform.python_version(), **{k: v for k, v in versions(VERSIONS).items() if v}},
        "sizes": asdict(sizes),
        "checks": {name: {"status": "not run"} for name, _, _ in CHECKS},
    }
    path = report_path(out_dir, report["device"], report["date"])
    where = (
        f"{gpu.name} (compute capability {gpu.compute_capability})" if gpu else "the CPU, a rehearsal at small sizes"
    )
    print(f"gpu-check on {where} -> {path}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        ctx = Context(gpu, Path(work), sizes, device="cuda" if gpu else "cpu", prebuilt=args.prebuilt)
        if args.budget_s is not None:
            ctx.deadline = time.perf_counter() + args.budget_s
        for name, check, on_cpu in CHECKS:
            if gpu is None and not on_cpu:
                report["checks"][name] = {"status": "skip", "reason": GPU_ONLY}
                continue
            if ctx.time_left() <= 0:
                report["checks"][name] = {
                    "status": "skip",
                    "reason": f"the --budget-s of {args.budget_s:g} s was spent",
                }
                continue
            report["checks"][name] = {"status": "running"}  # still there after a crash: this check crashed
            write_report(report, out_dir)
            result = report["checks"][name] = attempt(lambda check=check: check(ctx))
            write_report(report, out_dir)
            print(f"  {name:<22} {result['status'].upper():<5} {result.get('reason', '')}"[:300], flush=True)
    counts = {s: sum(c["status"] == s for c in report["checks"].values()) for s in ("pass", "fail", "skip")}
    report["summary"] = counts
    write_report(report, out_dir)
    print(f"gpu-check: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip; wrote {path}")
    return 1 if counts["fail"] else 0


def prepare_command(folder: Path) -> int:
    """--prepare-engines: the files it wrote, one line each; a one-line error and exit 2 where it cannot."""
    from tempseg.common.errors import UserError

    try:
        written = prepare_engines(folder)
    except UserError as err:
        print(f"gpu-check: {folder}: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"gpu-check: wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"gpu-check: on the GPU machine: python -m bench.gpu_check --prebuilt {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
