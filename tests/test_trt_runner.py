"""runtime/cuda.py and the TensorRT runner: what runs without a GPU, and the GPU checks (marker `gpu`).

CI has no GPU, so the runner is driven through `FakeCuda` (a CudaApi whose "device memory" is numpy arrays,
whose every call is logged, and which refuses what CUDA refuses inside a stream capture) and a fake TensorRT,
one kind per branch the runner feature-detects (trt_fakes.KINDS), whose engine is the ONNX graph and whose
execution context runs it with ONNX Runtime on the arrays at the addresses bound to it. The labels are
compared with ONNX Runtime's runner on the same graph, frame by frame: a one-conv contract graph made with
onnx.helper (its state feeds back into the logits) and a keyframe pair of the same kind, then the tiny
fcresnet18x0.25_t66 in FP32, FP16 (half state buffers) and INT8 (Q/DQ), a memory-attention model (two states)
and an Accel pair (two engines, a flow input). A state read out of phase fails in the fake context. Refusing
engines is checked on a real TensorRT-RTX engine (built on the CPU) before any deserialization. The `gpu` tests
run the real thing and skip, with the reason, where no GPU is.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tempseg.common.contract import Contract, StateSpec, TensorSpec, read_onnx_contract
from tempseg.common.errors import UserError
from tempseg.engine.sidecar import read_sidecar, sidecar_contract, sidecar_path
from tempseg.engine.trt import GpuInfo, cuda_gpu, load_tensorrt
from tempseg.runtime import cuda as rc
from tempseg.runtime.backends import trt_engine, trt_runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tempseg.runtime.cuda import CudaApi, CudaError, CudaGraph, Stream, cuda_device_count
from tempseg.runtime.report import format_report
from tests.conftest import run_python
from tests.trt_fakes import (
    CAPTURE_UNSUPPORTED,
    CAPTURED_EVENT,
    CLASSES,
    COST_MS,
    FAKE_GPU,
    FLOW,
    HAVE_RTX,
    KINDS,
    CudaGraphStrategy,
    FakeCuda,
    FakeCudart,
    FakeRuntimeConfig,
    H,
    W,
    flows,
    frame_slices,
    frames,
    make_fake_pair,
    make_fake_runner,
    ort_labels,
    pair_contracts,
    run_frames,
    run_pair,
    run_stream,
    tiny_contract,
    tiny_pair_graphs,
    tiny_state_graph,
)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> tuple[Path, Contract]:
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    return path, tiny_state_graph(path)


@pytest.fixture(scope="module")
def pair_graphs(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_pair_graphs(tmp_path_factory.mktemp("pair"))


@pytest.fixture
def fake_gpu(monkeypatch) -> GpuInfo:
    monkeypatch.setattr(trt_runner, "cuda_gpu", lambda: FAKE_GPU)
    return FAKE_GPU


# ---- runtime/cuda.py without a GPU ---------------------------------------------------------------------


def test_cuda_device_count_is_zero_here_and_never_raises(monkeypatch):
    if cuda_gpu() is None:
        assert cuda_device_count() == 0  # cuda-python is installed; the driver is not
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    assert cuda_device_count() == 0

    class Broken:
        def cudaGetDeviceCount(self) -> tuple:  # noqa: N802 (CUDA's name)
            raise RuntimeError("driver exploded")

    monkeypatch.setattr(rc, "_import_cudart", lambda: Broken())
    assert cuda_device_count() == 0


def test_no_cuda_binding_is_a_user_error_naming_what_to_install(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(UserError, match=r"needs a CUDA binding .*`pip install cuda-python`.*pycuda"):
        rc.default_cuda_api()


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python not installed")
def test_cuda_python_errors_carry_the_cuda_error_name():
    if cuda_device_count() > 0:
        pytest.skip("a GPU is visible: cudaSetDevice succeeds here")
    with pytest.raises(CudaError, match=r"^cudaSetDevice failed: cudaError\w+$") as err:
        rc.CudaPythonApi()
    assert err.value.call == "cudaSetDevice"
    assert err.value.error in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")


def test_cuda_python_api_wraps_pinned_memory_and_raises_cuda_error_names():
    api = object.__new__(rc.CudaPythonApi)  # skip __init__'s cudaSetDevice: no driver here
    api.rt, api._pinned = FakeCudart(), {}
    host = api.host_array((2, 3), np.float32)
    assert (host.shape, host.dtype, host.flags.writeable, host.sum()) == ((2, 3), np.float32, True, 0.0)
    assert api._pinned == {host.ctypes.data: 24}  # the array is the pinned block itself, no copy
    host[...] = np.arange(6).reshape(2, 3)
    device = api.device_buffer(host.nbytes)
    back = api.host_array((2, 3), np.float32)
    stream = SimpleNamespace(handle=0)
    api.memcpy_htod_async(device.ptr, host, stream)
    api.memcpy_dtoh_async(back, device.ptr, stream)
    np.testing.assert_array_equal(back, host)
    kinds = [c[1] for c in api.rt._calls if c[0] == "cudaMemcpyAsync"]
    assert kinds == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        api.malloc(2 << 20)
    with pytest.raises(ValueError, match="not an array from this api"):
        api.free_host(host[1:])
    for array in (host, back):
        api.free_host(array)
    assert api._pinned == {}


class CapturingCudart:
    """The stream-capture calls of cuda-python's runtime: EndCapture answers `end_error` (and a graph on success)."""

    cudaError_t = SimpleNamespace(cudaSuccess="cudaSuccess")  # noqa: N815 (CUDA's names)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal="global")  # noqa: N815

    def __init__(self, end_error: str) -> None:
        self.end_error, self.calls = end_error, []

    def cudaStreamBeginCapture(self, stream: int, mode: str) -> tuple:  # noqa: N802
        self.calls.append(("cudaStreamBeginCapture", stream))
        return ("cudaSuccess",)

    def cudaStreamEndCapture(self, stream: int) -> tuple:  # noqa: N802
        self.calls.append(("cudaStreamEndCapture", stream))
        return self.end_error, (0x6A if self.end_error == "cudaSuccess" else None)

    def cudaGraphDestroy(self, graph: int) -> tuple:  # noqa: N802
        self.calls.append(("cudaGraphDestroy", graph))
        return ("cudaSuccess",)


@pytest.mark.parametrize("end_error", ["cudaErrorStreamCaptureInvalidated", "cudaSuccess"])
def test_an_error_while_capturing_is_the_one_raised_and_the_capture_is_ended_without_a_graph(end_error):
    """What the enqueue raised (TensorRT's or torch's error) names the cause; the invalidated capture does not."""
    api = object.__new__(rc.CudaPythonApi)  # skip __init__'s cudaSetDevice: no driver here
    api.rt, api._pinned = CapturingCudart(end_error), {}

    def enqueue() -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="operation not permitted when stream is capturing"):
        api.capture_graph(SimpleNamespace(handle=7), enqueue)
    ended = [("cudaStreamBeginCapture", 7), ("cudaStreamEndCapture", 7)]
    assert api.rt.calls == (ended if end_error != "cudaSuccess" else [*ended, ("cudaGraphDestroy", 0x6A)])


# ---- imports and refusals -------------------------------------------------------------------------------


def test_runtime_imports_and_builds_the_runner_without_tensorrt_cuda_or_torch(tmp_path):
    code = f"""
import sys
for name in ("torch", "tensorrt", "tensorrt_rtx", "cuda", "pycuda"):
    sys.modules[name] = None
from tempseg.runtime import cuda, session
from tempseg.common.errors import UserError
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tests.trt_fakes import tiny_contract
assert cuda.cuda_device_count() == 0 and session.select
runner = TensorRTRunner(tiny_contract(), {str(tmp_path / "fp16.engine")!r}, flavour="tensorrt_rtx")
try:
    runner.activate()
except UserError as err:
    assert "TensorRT is not importable" in str(err) and "pip install" in str(err), err
else:
    raise AssertionError("activate() without TensorRT must fail")
loaded = {{m for m in sys.modules if sys.modules[m] is not None}}
assert not {{"torch", "tensorrt", "tensorrt_rtx", "cuda", "pycuda"}} & loaded, sorted(loaded)
"""
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError, match="flavour must be one of"):
        TensorRTRunner(tiny_contract(), "x.engine", flavour="onnxruntime")


@pytest.fixture(scope="module")
def rtx_engine(graph, tmp_path_factory) -> Path:
    """A real TensorRT-RTX engine of the test graph, built on the CPU by engine/."""
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
    from tempseg.engine.build import BuildOptions, build_engine

    path = tmp_path_factory.mktemp("engine") / "fp32.engine"
    build_engine(load_tensorrt("tensorrt_rtx"), graph[0], path, BuildOptions(timing_cache=None, inspect=False))
    return path


@pytest.fixture
def no_deserialize(monkeypatch) -> list[str]:
    """TensorRT-RTX's Runtime replaced by one that records being made; no CUDA api may be created either."""
    made: list[str] = []
    rtx = load_tensorrt("tensorrt_rtx").module
    monkeypatch.setattr(rtx, "Runtime", lambda logger: made.append("Runtime") or pytest.fail("deserialized"))
    monkeypatch.setattr(trt_runner, "default_cuda_api", lambda: made.append("cuda") or pytest.fail("cuda api made"))
    return made


@pytest.mark.rtx
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "fcresnet34_t66"}, "model differs: expected fcresnet34_t66, engine has tiny_state"),
        ({"precision": "fp16"}, "precision differs: expected fp16, engine has fp32"),
        (
            {"image": TensorSpec("image", (1, 3, 16, 16), "float32")},
            r"input size \(H, W\) differs: expected 16x16, engine has 8x8",
        ),
    ],
)
def test_activate_refuses_a_mismatched_engine_before_deserializing(rtx_engine, no_deserialize, change, message):
    runner = TensorRTRunner(tiny_contract().with_changes(**change), rtx_engine, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match=message) as err:
        runner.activate()
    assert err.value.path == str(rtx_engine)
    assert no_deserialize == []
    assert runner.image.size == 0  # nothing allocated


@pytest.mark.rtx
def test_activate_refuses_a_truncated_engine(rtx_engine, no_deserialize, tmp_path):
    damaged = tmp_path / rtx_engine.name
    data = rtx_engine.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    sidecar_path(damaged).write_bytes(sidecar_path(rtx_engine).read_bytes())
    runner = TensorRTRunner(tiny_contract(), damaged, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match=rf"engine size differs: expected {len(data)} bytes .*truncated"):
        runner.activate()
    assert no_deserialize == []


@pytest.mark.rtx
def test_activate_without_a_gpu_says_so_after_the_checks(rtx_engine, no_deserialize):
    if cuda_gpu() is not None:
        pytest.skip("a GPU is visible")
    runner = TensorRTRunner(tiny_contract(), rtx_engine, flavour="tensorrt_rtx")
    with pytest.raises(UserError, match="tensorrt_rtx needs an NVIDIA GPU and none is visible"):
        runner.activate()
    assert no_deserialize == []


def test_engine_io_that_differs_from_the_contract_is_refused(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, store={"retype": {"labels": "float32"}})
    with pytest.raises(UserError, match=r"output 'labels' is \[1, 8, 8\] int32 in the metadata but .* float32"):
        runner.activate()
    assert (cuda._memory, cuda._host) == ({}, {})  # a failed activate() frees what it had allocated
    runner, cuda = make_fake_runner(tmp_path, store={"extra_outputs": [("debug", (1,), "float32")]})
    with pytest.raises(UserError, match=r"engine tensors \['debug'\] are not in the state contract"):
        runner.activate()
    assert (cuda._memory, cuda._host) == ({}, {})


# ---- the frame loop on the fake device --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_labels_match_onnxruntime_and_state_buffers_alternate(graph, tmp_path, fake_gpu, kind):
    images = frames(6)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, kind)
    with runner:
        config = runner._given_trt.module._store["context_config"]
        assert isinstance(config, FakeRuntimeConfig) == (kind in ("trt10_config", "rtx"))  # made from one, or not
        assert (runner._engines.main.runtime_cache is not None) == (kind == "rtx")  # only RTX has a runtime cache
        start = runner.state_addresses()
        results = run_frames(runner, images)
        for t, (labels, _, _) in enumerate(results):
            np.testing.assert_array_equal(labels, expected[t], err_msg=f"frame {t}")
        addresses = [start] + [a for _, a, _ in results]
        assert addresses[0::2] == [addresses[0]] * 4
        assert addresses[1::2] == [addresses[1]] * 3
        assert addresses[0] != addresses[1]
        assert runner.labels is runner._labels_host  # the D2H copy lands in the array the loop reads
    pair = set(addresses[0] + addresses[1])
    touched = [e[0] for e in cuda._log if e[0] in ("htod", "dtoh", "memset") and e[1] in pair]
    assert touched == ["memset"]  # zeroed at activation, never copied (6 frames: before the first NaN check, 10)
    bound = [(e[1], e[2]) for e in cuda._log if e[0] == "set_tensor_address" and e[1].startswith("state")]
    per_frame = bound[-2 * len(images) :]
    for t in range(len(images)):
        (n_in, a_in), (n_out, a_out) = per_frame[2 * t : 2 * t + 2]
        assert (n_in, n_out) == ("state_in.0", "state_out.0")
        assert (a_in, a_out) == (addresses[t][0], addresses[t + 1][0])  # frame t reads A, writes B; then swapped


def test_each_frame_is_h2d_execute_d2h_with_one_sync_and_exact_phase_times(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=3)
    with runner:
        allocations = [sum(1 for e in cuda._log if e[0] == kind) for kind in ("malloc", "host_alloc")]
        cuda._log.clear()
        results = run_frames(runner, frames(3))
        image_ptr, labels_ptr = runner._device["image"].ptr, runner._device["labels"].ptr
        log = list(cuda._log)
    timed = ["record", "htod", "record", "execute", "record", "dtoh", "record"]
    for t, ((_, _, times), ops) in enumerate(zip(results, frame_slices(log), strict=True), start=1):
        assert (times.h2d, times.compute, times.d2h) == (COST_MS["htod"], COST_MS["execute"], COST_MS["dtoh"])
        mirror = ["dtoh"] if t == 3 else []  # only the check frame copies the state back, after the timed copy
        assert [e[0] for e in ops if e[0] != "set_tensor_address"] == [*timed, *mirror, "sync"]
        copies = [e for e in ops if e[0] in ("htod", "dtoh")]
        assert (copies[0][1], copies[1][1]) == (image_ptr, labels_ptr)  # image in, labels out; logits stay on device
        if mirror:
            assert copies[2][2] == tiny_contract().states[0].nbytes  # the small state mirror
    assert not [e for e in log if e[0] in ("malloc", "host_alloc", "event")]  # nothing allocated per frame
    assert allocations == [3 + 2, 3]  # image, logits, labels + two per state; pinned image, labels, state mirror
    assert [e for e in log if e[0] in ("sync", "event_sync")] == [("sync",)] * 3  # one sync per frame


def test_reset_zeroes_the_current_state_and_a_nan_state_is_seen(graph, tmp_path, fake_gpu):
    images = frames(3, seed=1)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=1)  # every frame
    with runner:
        assert runner.state_is_finite()
        run_frames(runner, images[:2])
        runner.image[...] = _poisoned(images[2])
        runner.infer()
        assert not runner.state_is_finite()  # the copied-back state holds the NaN
        cuda._log.clear()
        runner.reset_state()
        current = runner.state_addresses()[0]
        assert cuda._log == [("memset", current, tiny_contract().states[0].nbytes)]
        assert runner.state_is_finite()
        (labels, _, _), *_ = run_frames(runner, images[:1])
        np.testing.assert_array_equal(labels, expected[0])  # after a reset the stream starts afresh


def _poisoned(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[0, :, 0, 0] = np.nan  # one pixel: its logits and so its state become NaN, and stay NaN frame after frame
    return out


def test_the_nan_check_copies_the_state_back_every_nth_frame_and_sees_a_nan_late(tmp_path, fake_gpu):
    images = frames(8, seed=4)
    images[3] = _poisoned(images[3])  # frame 4 writes a NaN state; the checks are on frames 3 and 6
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=3)
    with runner:
        pair = {b.ptr for b in runner._states[0].buffers}
        seen, copied = [], []
        for image in images[:7]:
            cuda._log.clear()
            runner.image[...] = image
            runner.infer()
            copied.append(sum(1 for e in cuda._log if e[0] == "dtoh" and e[1] in pair))
            seen.append(runner.state_is_finite())
        assert copied == [0, 0, 1, 0, 0, 1, 0]
        assert seen == [True] * 5 + [False, False]  # seen at frame 6, two frames late; still known bad at 7
        assert not np.isfinite(cuda._array(runner.state_addresses()[0], tiny_contract().states[0])).all()
        runner.reset_state()
        assert runner.state_is_finite()
        runner.image[...] = images[7]
        runner.infer()
        assert runner.state_is_finite()


def test_nan_check_every_must_be_at_least_one():
    with pytest.raises(ValueError, match="nan_check_every must be at least 1"):
        TensorRTRunner(tiny_contract(), "x.engine", nan_check_every=0)
    assert TensorRTRunner(tiny_contract(), "x.engine").nan_check_every == trt_runner.NAN_CHECK_EVERY == 10


@pytest.mark.parametrize("kind", ["trt10", "trt10_config"])
def test_cuda_graphs_capture_one_graph_per_parity(graph, tmp_path, fake_gpu, kind):
    """Standard TensorRT captures by hand, 10.13 too: its runtime config has no cuda_graph_strategy."""
    images = frames(5, seed=2)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, kind, cuda_graphs=True)
    with runner:
        assert not runner._engines.builtin_graphs
        captures = [e for e in cuda._log if e[0] == "capture"]
        graph_addresses = [(e[1]["state_in.0"], e[1]["state_out.0"]) for e in cuda._log if e[0] == "captured"]
        cuda._log.clear()
        results = run_frames(runner, images)
    assert len(captures) == 2
    assert graph_addresses[0] == graph_addresses[1][::-1]  # parity 0 and parity 1: the pair swapped
    for t, (labels, _, times) in enumerate(results):
        np.testing.assert_array_equal(labels, expected[t], err_msg=f"frame {t}")
        assert times.compute == COST_MS["launch"]
    assert not [e for e in cuda._log if e[0] in ("execute", "set_tensor_address")]  # replayed, not re-enqueued
    assert not (tmp_path / "fp32.engine.runtime_cache").exists()  # no runtime cache outside TensorRT-RTX


def test_tensorrt_rtx_gets_its_runtime_cache_and_builtin_graphs(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, "rtx", cuda_graphs=True)
    store = runner._given_trt.module._store
    cache_file = tmp_path / "fp32.engine.runtime_cache"
    with runner:
        config = store["context_config"]
        assert config.cuda_graph_strategy == CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        assert "loaded" not in store
        assert not [e for e in cuda._log if e[0] == "capture"]  # TensorRT-RTX captures by itself
        run_frames(runner, frames(2))
    assert cache_file.read_bytes() == b"jit-kernels"  # saved after the run
    with runner:
        assert store["loaded"] == b"jit-kernels"  # and loaded on the next start


# the one-conv graph's figures by hand: float32/int32 bytes of its tensors, and its weights (conv 3x3x1x1, `mix`)
IMAGE_BYTES, CLASS_MAP_BYTES, LABELS_BYTES = 3 * H * W * 4, CLASSES * H * W * 4, H * W * 4  # a state: a class map
GRAPH_WEIGHTS = (CLASSES * 3 + 1) * 4
CONTEXT_BYTES = 50_000  # what the fake engine says an execution context needs
RECORDED_WEIGHTS = 1  # the build log's weights figure, told apart from the engine's own


@pytest.mark.parametrize("kind", KINDS)
def test_device_memory_is_the_runners_buffers_plus_what_tensorrt_says(tmp_path, fake_gpu, kind):
    build_log = {"bytes": None, "build_log": {"weights_bytes": RECORDED_WEIGHTS}}
    runner, cuda = make_fake_runner(
        tmp_path, kind, store={"device_memory": CONTEXT_BYTES}, record={"device_memory": build_log}
    )
    with runner:
        info = runner.memory()
        assert runner.device_name == "Fake RTX"
    weights = GRAPH_WEIGHTS if kind == "rtx" else RECORDED_WEIGHTS  # get_engine_stat where the engine has it
    buffers = IMAGE_BYTES + CLASS_MAP_BYTES + LABELS_BYTES + 2 * CLASS_MAP_BYTES  # both buffers of the state pair
    assert (info.state_bytes, info.io_bytes) == (2 * CLASS_MAP_BYTES, IMAGE_BYTES + CLASS_MAP_BYTES + LABELS_BYTES)
    assert (info.activation_bytes, info.weights_bytes) == (CONTEXT_BYTES, weights)
    assert info.device_runner_bytes == buffers + CONTEXT_BYTES + weights
    assert info.device_used_bytes is not None  # cudaMemGetInfo's, kept apart and labelled
    assert any("device_used_bytes is cudaMemGetInfo" in note for note in info.notes)
    assert info.engine_file_bytes == runner.engine_path.stat().st_size
    assert info.params == CLASSES * 3  # the contract's
    assert (cuda._memory, cuda._host) == ({}, {})
    assert (runner.image.size, runner.labels.size) == (0, 0)
    assert not cuda._closed  # an api given to the runner stays open


def test_the_report_shows_both_device_figures_by_plain_names(tmp_path, fake_gpu):
    from tempseg.data.frames import Frame
    from tempseg.runtime.loop import LoopOptions, run_loop
    from tempseg.runtime.report import build_report

    runner, _ = make_fake_runner(tmp_path, "rtx", store={"device_memory": 3 << 20})
    video = [Frame(np.full((H, W, 3), 10 * i, np.uint8), None, i, "s") for i in range(2)]
    options = LoopOptions(warmup=0, progress=False, accuracy=False, consistency=False)
    with runner:
        result = run_loop(runner, video, options, source_fps=10.0)
        info = runner.memory()
    lines = format_report(build_report(runner.contract, "tensorrt_rtx", "gpu", result, info, source="t")).splitlines()
    device, used = [line for line in lines if line.startswith(("  device ", "  GPU in use "))]
    assert device == "  device        3.0 MiB held by the runner (buffers + TensorRT's contexts and weights)"
    assert re.fullmatch(
        r"  GPU in use    [\d.]+ \w+ \(cudaMemGetInfo: whole GPU, CUDA context and other processes\)", used
    )


# ---- CUDA's capture rules and the state ping-pong, kept by the fakes -------------------------------------


def _cuda_errors(err: BaseException | None) -> list[str]:
    """CUDA error names along an exception's chain (the end of a capture raises over what broke it)."""
    names = []
    while err is not None:
        names.append(err.error if isinstance(err, CudaError) else type(err).__name__)
        err = err.__context__
    return names


def _record_and_wait(cuda: FakeCuda, stream: Stream) -> None:
    event = cuda.create_event()
    event.record(stream)  # recorded in the capture: a graph node, not a point in time to wait for
    event.synchronize()


# work the runner must never do inside a capture: (calls it, what CUDA answers)
CAPTURE_VIOLATIONS = {
    "stream synchronize": (lambda cuda, stream, spare: stream.synchronize(), CAPTURE_UNSUPPORTED),
    "malloc": (lambda cuda, stream, spare: cuda.malloc(64), CAPTURE_UNSUPPORTED),
    "free": (lambda cuda, stream, spare: cuda.free(spare[0]), CAPTURE_UNSUPPORTED),
    "pinned alloc": (lambda cuda, stream, spare: cuda.host_array((4,), np.float32), CAPTURE_UNSUPPORTED),
    "pinned free": (lambda cuda, stream, spare: cuda.free_host(spare[1]), CAPTURE_UNSUPPORTED),
    "captured event synchronize": (lambda cuda, stream, spare: _record_and_wait(cuda, stream), CAPTURED_EVENT),
}


@pytest.mark.parametrize("violation", CAPTURE_VIOLATIONS)
def test_a_capture_that_synchronizes_or_allocates_is_refused_as_cuda_refuses_it(
    tmp_path, fake_gpu, monkeypatch, violation
):
    plant, error = CAPTURE_VIOLATIONS[violation]
    runner, cuda = make_fake_runner(tmp_path, cuda_graphs=True)
    spare = (cuda.malloc(64), cuda.host_array((4,), np.float32))  # made before the capture, for the frees
    capture = cuda.capture_graph
    monkeypatch.setattr(
        cuda, "capture_graph", lambda stream, enqueue: capture(stream, lambda: plant(cuda, stream, spare) or enqueue())
    )
    with pytest.raises(CudaError) as err:
        runner.activate()
    assert _cuda_errors(err.value)[0] == error  # the cause, not the invalidated capture it leaves behind
    assert not [e for e in cuda._log if e[0] == "capture"]  # no graph came of it


def test_capturing_before_tensorrts_first_run_is_refused(tmp_path, fake_gpu, monkeypatch):
    """TensorRT's first execute does deferred setup (allocations, a sync) that a capture cannot hold: the warm-up
    run before each capture is what makes the capture legal."""

    def cold_capture(engine: trt_engine.Engine, cuda: CudaApi, stream: Stream) -> None:
        for parity in (0, 1):
            engine.bind(engine.state_bindings[parity])
            engine.graphs.append(cuda.capture_graph(stream, lambda: engine.execute(stream)))

    monkeypatch.setattr(trt_engine.Engine, "capture", cold_capture)
    runner, _ = make_fake_runner(tmp_path, cuda_graphs=True)
    with pytest.raises(RuntimeError, match="execute_async_v3 failed") as err:
        runner.activate()
    assert not isinstance(err.value, CudaError)  # TensorRT's failure is raised, not the capture it invalidated


def test_a_memset_in_a_capture_is_replayed_every_frame(graph, tmp_path, fake_gpu, monkeypatch):
    """cudaMemsetAsync on the capturing stream is legal: it becomes a node of the graph and zeroes at every
    replay, not once. A reset captured with the frame wipes the carried state each frame: the labels show it."""
    images = frames(5, seed=2)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, cuda_graphs=True)
    capture, parities = cuda.capture_graph, iter((0, 1))  # the runner captures parity 0, then parity 1

    def capture_with_reset(stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
        parity = next(parities)
        return capture(stream, lambda: runner._buffers.reset(parity, stream, [0]) or enqueue())

    monkeypatch.setattr(cuda, "capture_graph", capture_with_reset)
    with runner:
        labels = [labels for labels, _, _ in run_frames(runner, images)]
    assert [e[0] for e in cuda._log].count("captured_memset") == 2  # one node in each graph
    np.testing.assert_array_equal(labels[0], expected[0])  # the first frame reads a zero state anyway
    assert any((got != want).any() for got, want in zip(labels[1:], expected[1:], strict=True))


@pytest.mark.parametrize("graphs", [False, True])
def test_a_frame_that_reads_the_state_out_of_phase_is_caught(tmp_path, fake_gpu, monkeypatch, graphs):
    """Replaying the other parity's graph (its captured addresses read the older buffer), or binding the other
    parity, reads a stale state: real TensorRT would compute from it silently; the fake context refuses."""

    def wrong_parity(engine: trt_engine.Engine, stream: Stream, parity: int) -> None:
        if engine.graphs:
            engine.graphs[1 - parity].launch(stream)
        else:
            engine.bind(engine.state_bindings[1 - parity])
            engine.execute(stream)

    monkeypatch.setattr(trt_engine.Engine, "enqueue", wrong_parity)
    runner, _ = make_fake_runner(tmp_path, cuda_graphs=graphs)
    with runner, pytest.raises(AssertionError, match=r"stale state: state_in\.0 reads a buffer older"):
        run_frames(runner, frames(2))


# ---- a keyframe pair on the fake device ------------------------------------------------------------------

K, U = "keyframe", "update"


def test_pair_kinds_follow_the_schedule_and_a_reset_forces_a_keyframe(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path)
    images, flow = frames(10, seed=5), flows(10, seed=5)
    with runner:
        assert runner.keyframe_contract == pair_contracts()[1]
        assert runner.flow.shape == FLOW.shape
        assert runner.flow.ctypes.data in cuda._host  # pinned: the stream writes the flow where the H2D reads it
        flow_ptr = runner._device["flow"].ptr
        cuda._log.clear()
        kinds, _ = run_pair(runner, images, flow, reset_before=(8,))
        log = list(cuda._log)
    assert kinds == [K, U, U, K, U, U, K, U, K, U]  # every 3 frames, and the frame after the reset at 8
    for t, (kind, ops) in enumerate(zip(kinds, frame_slices(log), strict=True)):
        (bound,) = [e[1] for e in ops if e[0] == "execute"]
        flow_in = [e for e in ops if e[0] == "htod" and e[1] == flow_ptr]
        if kind == K:  # the keyframe context: image in, no flow, writes the state without reading one
            assert (set(bound), flow_in) == ({"image", "logits", "labels", "state_out.0"}, []), t
        else:
            assert set(bound) == {"image", "flow", "logits", "labels", "state_in.0", "state_out.0"}, t
            assert len(flow_in) == 1, t  # the flow goes in with the image, on update frames only
            assert [e[0] for e in ops].index("htod") < [e[0] for e in ops].index("execute")


@pytest.mark.parametrize(("kind", "graphs"), [("trt86", False), ("trt10", False), ("trt10", True), ("rtx", False)])
def test_pair_labels_match_the_onnxruntime_pair_frame_by_frame(pair_graphs, tmp_path, fake_gpu, kind, graphs):
    images, flow, resets = frames(11, seed=6), flows(11, seed=6), (7,)
    update_onnx, keyframe_onnx = pair_graphs
    with OnnxRuntimeRunner(pair_contracts()[0], update_onnx, keyframe=keyframe_onnx) as ort:
        ort_kinds, expected = run_pair(ort, images, flow, resets)
    runner, cuda = make_fake_pair(tmp_path, kind, cuda_graphs=graphs)
    with runner:
        captures = sum(1 for e in cuda._log if e[0] == "capture")
        start = runner.state_addresses()
        kinds, labels = run_pair(runner, images, flow, resets)
        end = runner.state_addresses()
    assert kinds == ort_kinds == [K, U, U, K, U, U, K, K, U, U, K]
    for t in range(len(images)):
        np.testing.assert_array_equal(labels[t], expected[t], err_msg=f"frame {t} ({kinds[t]})")
    assert captures == (4 if graphs else 0)  # standard TensorRT: one graph per (kind, parity)
    assert start != end  # 11 frames: one state set, its parity flipped by every frame whichever graph ran


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"keyframe engine not found \(update engine fp32.engine runs only with it\)"),
        ("state shape", r"keyframe graph disagrees with the update graph on state state_out.0"),
        ("altered", r"engine sha256 differs"),
        ("not a keyframe", r"not a keyframe graph \(role 'update'\)"),
    ],
)
def test_pair_refuses_a_missing_or_mismatched_keyframe_engine_before_deserializing(tmp_path, fake_gpu, damage, message):
    keyframe = pair_contracts()[1]
    if damage == "state shape":
        shape = (1, CLASSES, H // 2, W // 2)
        keyframe = keyframe.with_changes(states=(StateSpec("state_in.0", "state_out.0", shape, "float32"),))
    elif damage == "not a keyframe":
        keyframe = pair_contracts()[0]
    runner, cuda = make_fake_pair(tmp_path, keyframe=keyframe)
    path = tmp_path / "keyframe.fp32.engine"
    if damage == "missing":
        path.unlink()
    elif damage == "altered":
        path.write_bytes(path.read_bytes().replace(b"tiny_pair", b"tiny_pain"))
    with pytest.raises(UserError, match=message) as err:
        runner.activate()
    assert err.value.path == str(path)  # names the keyframe file, in one line
    assert "\n" not in str(err.value)
    assert runner._given_trt.module._store["deserialized"] == 0  # neither engine was deserialized
    assert (cuda._memory, cuda._host, cuda._log) == ({}, {}, [])  # nothing allocated


def test_pair_memory_counts_both_engines_and_everything_is_freed(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path, "rtx", store={"device_memory": CONTEXT_BYTES})
    engines = [tmp_path / "fp32.engine", tmp_path / "keyframe.fp32.engine"]
    with runner:
        info = runner.memory()
        run_pair(runner, frames(2), flows(2))
    weights = (CLASSES * 3 + 1 + CLASSES) * 4 + CLASSES * 3 * 4  # update: conv, mix, gain; keyframe: its conv
    io = IMAGE_BYTES + 2 * H * W * 4 + CLASS_MAP_BYTES + LABELS_BYTES  # the flow buffer too
    assert info.engine_file_bytes == sum(p.stat().st_size for p in engines)
    assert (info.activation_bytes, info.weights_bytes) == (2 * CONTEXT_BYTES, weights)  # both contexts, both engines
    assert (info.io_bytes, info.state_bytes) == (io, 2 * CLASS_MAP_BYTES)  # one set of state pairs, both contexts
    assert info.device_runner_bytes == io + 2 * CLASS_MAP_BYTES + 2 * CONTEXT_BYTES + weights
    assert any("both engines" in note for note in info.notes)
    assert (cuda._memory, cuda._host) == ({}, {})
    assert runner.flow is None
    for engine in engines:  # TensorRT-RTX: a JIT cache per engine, saved after the run
        assert engine.with_name(engine.name + ".runtime_cache").read_bytes() == b"jit-kernels"


def build_pair(pair_graphs: tuple[Path, Path], out: Path, flavour: str) -> Path:
    """The pair's engines as `python -m tempseg.engine` builds them: keyframe.fp32.engine first, then fp32.engine
    naming it."""
    from tempseg.engine.__main__ import main

    argv = ["--onnx", str(pair_graphs[0]), "--out", str(out), "--flavour", flavour, "--no-timing-cache"]
    assert main([*argv, "--no-inspect"]) == 0
    return out


@pytest.fixture(scope="module")
def rtx_pair(pair_graphs, tmp_path_factory) -> Path:
    """Real TensorRT-RTX engines of the test pair, built on the CPU by engine/."""
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
    return build_pair(pair_graphs, tmp_path_factory.mktemp("rtx_pair") / "fp32.engine", "tensorrt_rtx")


@pytest.mark.rtx
@pytest.mark.parametrize("damage", [None, "missing", "truncated"])
def test_a_real_pair_is_checked_before_deserializing(rtx_pair, no_deserialize, tmp_path, damage):
    for name in ("fp32.engine", "keyframe.fp32.engine"):
        for path in (rtx_pair.with_name(name), sidecar_path(rtx_pair.with_name(name))):
            (tmp_path / path.name).write_bytes(path.read_bytes())
    engine, keyframe = tmp_path / "fp32.engine", tmp_path / "keyframe.fp32.engine"
    contract = sidecar_contract(read_sidecar(engine))
    assert contract.schedule["keyframe_graph"] == keyframe.name  # the update engine's record names its pair
    if damage == "missing":
        keyframe.unlink()
    elif damage == "truncated":
        keyframe.write_bytes(keyframe.read_bytes()[:100])
    runner = TensorRTRunner(contract, engine, flavour="tensorrt_rtx")
    if damage is None:  # both records pass every check: what stops it here is the missing GPU, after the checks
        if cuda_gpu() is not None:
            pytest.skip("a GPU is visible")
        with pytest.raises(UserError, match="tensorrt_rtx needs an NVIDIA GPU and none is visible"):
            runner.activate()
    else:
        message = "keyframe engine not found" if damage == "missing" else "engine size differs"
        with pytest.raises(UserError, match=message) as err:
            runner.activate()
        assert err.value.path == str(keyframe)
    assert no_deserialize == []


# ---- the project's graphs through the fake runner: every precision and family ---------------------------

TINY_GRAPHS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}  # conftest's tiny_run
LMA = "fcresnet18x0.25_lma2r1"  # memory attention: two states (keys with validity planes, values)
ACCEL = "fcresnet18x0.25_accel18x0.25"  # the smallest Accel pair: update and reference both fcresnet18x0.25


def _exported(name: str, folder: Path, *, keyframe_every: int = 3) -> Path:
    """`name` with random weights exported as the export stage does, at the tiny run's size: model.onnx and, for
    a keyframe model, keyframe.onnx beside it (what its contract names)."""
    from tempseg.export.onnx_graph import build_contract, export_fp32, save_onnx
    from tempseg.models.contract import keyframe_contract
    from tests.conftest import TINY_HW, make_tiny_model

    model = make_tiny_model(name)
    if name == LMA:  # off the memory's identity start, so what it reads reaches the labels
        import torch

        with torch.no_grad():
            for param in model.memory.parameters():
                param.add_(0.05 * torch.randn_like(param))
    contract = build_contract(model, name, height=TINY_HW[0], width=TINY_HW[1], keyframe_every=keyframe_every)
    save_onnx(export_fp32(model, contract), folder / "model.onnx")
    if contract.role == "update":
        save_onnx(export_fp32(model, keyframe_contract(contract)), folder / "keyframe.onnx")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def lma_graph(tmp_path_factory) -> Path:
    return _exported(LMA, tmp_path_factory.mktemp("lma"))


@pytest.fixture(scope="module")
def accel_graphs(tmp_path_factory) -> tuple[Path, Path]:
    update = _exported(ACCEL, tmp_path_factory.mktemp("accel"))
    return update, update.with_name("keyframe.onnx")


def _onnxruntime_stream(
    graph: Path, images: list[np.ndarray], flow: list[np.ndarray] | None = None, resets: tuple[int, ...] = ()
) -> tuple[list[str], list[np.ndarray]]:
    with OnnxRuntimeRunner(read_onnx_contract(graph), graph) as ort:
        return run_stream(ort, images, flow, resets)


def _assert_same_labels(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for t, (labels, want) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_array_equal(labels, want, err_msg=f"frame {t}")


@pytest.mark.parametrize("precision", TINY_GRAPHS)
def test_every_precision_of_the_tiny_model_matches_onnxruntime_frame_by_frame(tiny_run, tmp_path, fake_gpu, precision):
    """FP16 has half state I/O: half buffers, NaN checks of a half mirror, a reset of a half slot."""
    graph = tiny_run / TINY_GRAPHS[precision]
    contract = read_onnx_contract(graph)
    images, resets = frames(6, seed=9, shape=contract.image.shape), (4,)
    _, expected = _onnxruntime_stream(graph, images, resets=resets)
    runner, _ = make_fake_runner(tmp_path, graph=graph, nan_check_every=2)
    with runner:
        state, spec = runner._states[0], contract.states[0]
        assert spec.dtype == ("float16" if precision == "fp16" else "float32")
        assert [b.nbytes for b in state.buffers] == [spec.nbytes] * 2
        assert state.mirror.dtype == np.dtype(spec.dtype)
        _, labels = run_stream(runner, images, reset_before=resets)
        assert runner.state_is_finite()  # checked on frames 2, 4 and 6
    _assert_same_labels(labels, expected)


def test_a_nan_in_a_half_state_is_seen_and_a_reset_zeroes_the_half_slot(tiny_run, tmp_path, fake_gpu):
    graph = tiny_run / TINY_GRAPHS["fp16"]
    contract = read_onnx_contract(graph)
    images = frames(3, seed=10, shape=contract.image.shape)
    _, expected = _onnxruntime_stream(graph, images)
    runner, cuda = make_fake_runner(tmp_path, graph=graph, nan_check_every=1)
    with runner:
        runner.image[...] = np.nan
        runner.infer()
        assert not runner.state_is_finite()  # the half mirror holds the NaN
        runner.reset_state()
        current = cuda._array(runner.state_addresses()[0], contract.states[0])
        assert current.dtype == np.float16
        assert not current.any()  # the whole half slot zeroed
        assert runner.state_is_finite()
        _, labels = run_stream(runner, images)
    _assert_same_labels(labels, expected)  # after the reset the stream starts afresh


def test_a_memory_attention_model_carries_both_states_as_onnxruntime_does(lma_graph, tmp_path, fake_gpu):
    contract = read_onnx_contract(lma_graph)
    assert len(contract.states) == 2
    images, resets = frames(6, seed=11, shape=contract.image.shape), (4,)
    _, expected = _onnxruntime_stream(lma_graph, images, resets=resets)
    runner, cuda = make_fake_runner(tmp_path, graph=lma_graph, cuda_graphs=True)
    with runner:
        start = runner.state_addresses()
        _, labels = run_stream(runner, images, reset_before=resets)
        assert runner.state_addresses() == start  # an even number of frames: both pairs back where they began
    assert len(set(start)) == 2
    assert [e[0] for e in cuda._log].count("capture") == 2  # one graph per parity, both states in each
    _assert_same_labels(labels, expected)


def test_an_accel_pair_matches_the_onnxruntime_pair_frame_by_frame(accel_graphs, tmp_path, fake_gpu):
    """Two engines over one state, the flow uploaded on update frames only, a keyframe after the reset."""
    update = read_onnx_contract(accel_graphs[0])
    assert update.flow is not None
    images, resets = frames(8, seed=12, shape=update.image.shape), (5,)
    flow = flows(8, seed=12, shape=update.flow.shape)
    ort_kinds, expected = _onnxruntime_stream(accel_graphs[0], images, flow, resets)
    runner, cuda = make_fake_pair(tmp_path, graphs=accel_graphs, cuda_graphs=True)
    with runner:
        flow_ptr = runner._device["flow"].ptr
        kinds, labels = run_stream(runner, images, flow, resets)
    assert kinds == ort_kinds == [K, U, U, K, U, K, U, U]
    assert sum(1 for e in cuda._log if e[0] == "htod" and e[1] == flow_ptr) == kinds.count(U)
    assert [e[0] for e in cuda._log].count("capture") == 4  # (keyframe, update) x parity
    _assert_same_labels(labels, expected)


# ---- GPU only ---------------------------------------------------------------------------------------------


def _cuda_api(name: str) -> CudaApi:
    if cuda_gpu() is None:
        pytest.skip("needs an NVIDIA GPU: real CUDA buffers need a device (none visible)")
    if name == "pycuda":
        pytest.importorskip("pycuda.driver", reason="pycuda not installed (it compiles against a CUDA toolkit)")
        return rc.PyCudaApi()
    pytest.importorskip("cuda", reason="cuda-python not installed")
    return rc.CudaPythonApi()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda-python", "pycuda"])
def test_cuda_buffers_round_trip_on_the_gpu(name):
    api = _cuda_api(name)
    try:
        stream, start, end = api.create_stream(), api.create_event(), api.create_event()
        host = api.host_array((4, 256), np.float32)
        back = api.host_array((4, 256), np.float32)
        host[...] = np.arange(host.size, dtype=np.float32).reshape(host.shape)
        free_before, total = api.mem_get_info()
        with api.device_buffer(host.nbytes) as device:
            start.record(stream)
            api.memcpy_htod_async(device.ptr, host, stream)
            api.memset_async(device.ptr, 0, host[0].nbytes, stream)  # zero the first row
            api.memcpy_dtoh_async(back, device.ptr, stream)
            end.record(stream)
            stream.synchronize()
            assert 0 < free_before <= total
        expected = host.copy()
        expected[0] = 0
        np.testing.assert_array_equal(back, expected)
        assert start.elapsed_ms(end) >= 0.0
        for array in (host, back):
            api.free_host(array)
        for handle in (start, end, stream):
            handle.close()
    finally:
        api.close()


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_engine_runs_on_the_gpu_and_matches_onnxruntime(graph, tmp_path, graphs, trt_on_gpu):
    trt = trt_on_gpu
    if graphs and importlib.util.find_spec("cuda") is None:
        pytest.skip("CUDA graphs need cuda-python")
    from tempseg.engine.build import BuildOptions, build_engine

    engine = tmp_path / "fp32.engine"
    build_engine(trt, graph[0], engine, BuildOptions(timing_cache=None))
    images = frames(8, seed=3)
    expected = ort_labels(graph, images)
    with TensorRTRunner(graph[1], engine, flavour=trt.flavour, trt=trt, cuda_graphs=graphs) as runner:
        results = run_frames(runner, images)
        info = runner.memory()
        assert runner.state_is_finite()
    for t, (labels, _, times) in enumerate(results):
        assert (labels == expected[t]).mean() > 0.99, t  # TF32/fused kernels may flip near-ties
        assert min(times.h2d, times.compute, times.d2h) >= 0.0
    addresses = [a for _, a, _ in results]
    assert addresses[0] == addresses[2] != addresses[1] == addresses[3]
    assert info.activation_bytes is not None
    assert info.device_used_bytes > 0


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_a_pair_runs_on_the_gpu_and_matches_the_onnxruntime_pair(pair_graphs, tmp_path, graphs, trt_on_gpu):
    trt = trt_on_gpu
    if graphs and importlib.util.find_spec("cuda") is None:
        pytest.skip("CUDA graphs need cuda-python")
    engine = build_pair(pair_graphs, tmp_path / "fp32.engine", trt.flavour)
    images, flow, resets = frames(11, seed=7), flows(11, seed=7), (7,)
    with OnnxRuntimeRunner(pair_contracts()[0], pair_graphs[0], keyframe=pair_graphs[1]) as ort:
        ort_kinds, expected = run_pair(ort, images, flow, resets)
    contract = sidecar_contract(read_sidecar(engine))
    with TensorRTRunner(contract, engine, flavour=trt.flavour, trt=trt, cuda_graphs=graphs) as runner:
        kinds, labels = run_pair(runner, images, flow, resets)
        info = runner.memory()
    assert kinds == ort_kinds
    for t in range(len(images)):
        assert (labels[t] == expected[t]).mean() > 0.99, (t, kinds[t])  # TF32/fused kernels may flip near-ties
    assert info.engine_file_bytes == engine.stat().st_size + engine.with_name("keyframe.fp32.engine").stat().st_size
