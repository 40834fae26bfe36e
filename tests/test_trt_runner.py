"""runtime/cuda.py and the TensorRT runner: what runs without a GPU, and the GPU checks (marker `gpu`).

CI has no GPU, so the runner is driven through `FakeCuda` (a CudaApi whose "device memory" is numpy arrays and
whose every call is logged) and a fake TensorRT whose execution context computes the test graph in numpy from
the addresses bound to it. The graph is a one-conv contract graph made with onnx.helper (no torch): its state
feeds back into the logits, so a wrong buffer swap changes the labels, which are compared with ONNX Runtime
frame by frame; a keyframe pair (an update graph reading image, flow and state, a keyframe graph reading
the image only) against ONNX Runtime's pair runner. Refusing engines is checked on a real TensorRT-RTX
engine (built on the CPU) before any deserialization. The `gpu` tests run the real thing and skip, with the
reason, where no GPU is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tempseg.common.contract import Contract, StateSpec, TensorSpec
from tempseg.common.errors import UserError
from tempseg.engine.sidecar import read_sidecar, sidecar_contract, sidecar_path
from tempseg.engine.trt import GpuInfo, cuda_gpu, load_tensorrt
from tempseg.runtime import cuda as rc
from tempseg.runtime.backends import trt_runner
from tempseg.runtime.backends.ort_runner import OnnxRuntimeRunner
from tempseg.runtime.backends.trt_runner import TensorRTRunner
from tempseg.runtime.cuda import CudaApi, CudaError, cuda_device_count
from tests.conftest import run_python
from tests.trt_fakes import (
    CLASSES,
    COST_MS,
    FAKE_GPU,
    FLOW,
    HAVE_RTX,
    FakeCuda,
    FakeCudart,
    H,
    W,
    fake_engine_file,
    fake_tensorrt,
    flows,
    frame_slices,
    frames,
    make_fake_pair,
    make_fake_runner,
    ort_labels,
    pair_contracts,
    run_frames,
    run_pair,
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
    kinds = [c[1] for c in api.rt.calls if c[0] == "cudaMemcpyAsync"]
    assert kinds == ["cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"]
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        api.malloc(2 << 20)
    with pytest.raises(ValueError, match="not an array from this api"):
        api.free_host(host[1:])
    for array in (host, back):
        api.free_host(array)
    assert api._pinned == {}


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
    contract, cuda = tiny_contract(), FakeCuda()
    wrong = contract.with_changes(labels=TensorSpec("labels", (1, H, W), "float32"))
    trt = fake_tensorrt(cuda, contract, engine_contract=wrong)
    runner = TensorRTRunner(contract, fake_engine_file(tmp_path / "a.engine", contract, trt), cuda=cuda, trt=trt)
    with pytest.raises(UserError, match=r"output 'labels' is \[1, 8, 8\] int32 in the metadata but .* float32"):
        runner.activate()
    trt = fake_tensorrt(cuda, contract, extra_outputs=[("debug", (1,), "float32")])
    runner = TensorRTRunner(contract, fake_engine_file(tmp_path / "b.engine", contract, trt), cuda=cuda, trt=trt)
    with pytest.raises(UserError, match=r"engine tensors \['debug'\] are not in the state contract"):
        runner.activate()
    assert cuda.memory == {}  # a failed activate() frees what it had allocated
    assert cuda.host == {}


# ---- the frame loop on the fake device --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["trt86", "trt10", "rtx"])
def test_labels_match_onnxruntime_and_state_buffers_alternate(graph, tmp_path, fake_gpu, kind):
    images = frames(6)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, kind)
    with runner:
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
    touched = [e[0] for e in cuda.log if e[0] in ("htod", "dtoh", "memset") and e[1] in pair]
    assert touched == ["memset"]  # zeroed at activation, never copied (6 frames: before the first NaN check, 10)
    bound = [(e[1], e[2]) for e in cuda.log if e[0] == "set_tensor_address" and e[1].startswith("state")]
    per_frame = bound[-2 * len(images) :]
    for t in range(len(images)):
        (n_in, a_in), (n_out, a_out) = per_frame[2 * t : 2 * t + 2]
        assert (n_in, n_out) == ("state_in.0", "state_out.0")
        assert (a_in, a_out) == (addresses[t][0], addresses[t + 1][0])  # frame t reads A, writes B; then swapped


def test_each_frame_is_h2d_execute_d2h_with_one_sync_and_exact_phase_times(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, nan_check_every=3)
    with runner:
        allocations = [sum(1 for e in cuda.log if e[0] == kind) for kind in ("malloc", "host_alloc")]
        cuda.log.clear()
        results = run_frames(runner, frames(3))
        image_ptr, labels_ptr = runner._device["image"].ptr, runner._device["labels"].ptr
        log = list(cuda.log)
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
        cuda.log.clear()
        runner.reset_state()
        current = runner.state_addresses()[0]
        assert cuda.log == [("memset", current, tiny_contract().states[0].nbytes)]
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
            cuda.log.clear()
            runner.image[...] = image
            runner.infer()
            copied.append(sum(1 for e in cuda.log if e[0] == "dtoh" and e[1] in pair))
            seen.append(runner.state_is_finite())
        assert copied == [0, 0, 1, 0, 0, 1, 0]
        assert seen == [True] * 5 + [False, False]  # seen at frame 6, two frames late; still known bad at 7
        assert not np.isfinite(cuda.array(runner.state_addresses()[0], tiny_contract().states[0])).all()
        runner.reset_state()
        assert runner.state_is_finite()
        runner.image[...] = images[7]
        runner.infer()
        assert runner.state_is_finite()


def test_nan_check_every_must_be_at_least_one():
    with pytest.raises(ValueError, match="nan_check_every must be at least 1"):
        TensorRTRunner(tiny_contract(), "x.engine", nan_check_every=0)
    assert TensorRTRunner(tiny_contract(), "x.engine").nan_check_every == trt_runner.NAN_CHECK_EVERY == 10


def test_cuda_graphs_capture_one_graph_per_parity(graph, tmp_path, fake_gpu):
    images = frames(5, seed=2)
    expected = ort_labels(graph, images)
    runner, cuda = make_fake_runner(tmp_path, "trt10", cuda_graphs=True)
    with runner:
        captures = [e for e in cuda.log if e[0] == "capture"]
        graph_addresses = [(e[1]["state_in.0"], e[1]["state_out.0"]) for e in cuda.log if e[0] == "captured"]
        cuda.log.clear()
        results = run_frames(runner, images)
    assert len(captures) == 2
    assert graph_addresses[0] == graph_addresses[1][::-1]  # parity 0 and parity 1: the pair swapped
    for t, (labels, _, times) in enumerate(results):
        np.testing.assert_array_equal(labels, expected[t], err_msg=f"frame {t}")
        assert times.compute == COST_MS["launch"]
    assert not [e for e in cuda.log if e[0] in ("execute", "set_tensor_address")]  # replayed, not re-enqueued


def test_tensorrt_rtx_gets_its_runtime_cache_and_builtin_graphs(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, "rtx", cuda_graphs=True)
    store = runner._given_trt.module.store
    cache_file = tmp_path / "fp32.engine.runtime_cache"
    with runner:
        config = store["context_config"]
        assert config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
        assert "loaded" not in store
        assert not [e for e in cuda.log if e[0] == "capture"]  # TensorRT-RTX captures by itself
        run_frames(runner, frames(2))
    assert cache_file.read_bytes() == b"jit-kernels"  # saved after the run
    with runner:
        assert store["loaded"] == b"jit-kernels"  # and loaded on the next start


def test_memory_figures_and_everything_freed(tmp_path, fake_gpu):
    runner, cuda = make_fake_runner(tmp_path, "trt86")
    c = tiny_contract()
    with runner:
        info = runner.memory()
        assert runner.device_name == "Fake RTX"
    assert info.activation_bytes == 123_456  # TensorRT 8.6's device_memory_size
    assert info.state_bytes == 2 * c.state_bytes
    assert info.io_bytes == c.image.nbytes + c.logits.nbytes + c.labels.nbytes
    assert info.device_used_bytes == info.state_bytes + info.io_bytes
    assert info.engine_file_bytes == runner.engine_path.stat().st_size
    assert (info.params, info.weights_bytes) == (CLASSES * 3, 36)  # contract extra; the build log's weights
    assert cuda.memory == {}
    assert cuda.host == {}
    assert (runner.image.size, runner.labels.size) == (0, 0)
    assert not cuda.closed  # an api given to the runner stays open


# ---- a keyframe pair on the fake device ------------------------------------------------------------------

K, U = "keyframe", "update"


def test_pair_kinds_follow_the_schedule_and_a_reset_forces_a_keyframe(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path)
    images, flow = frames(10, seed=5), flows(10, seed=5)
    with runner:
        assert runner.keyframe_contract == pair_contracts()[1]
        assert runner.flow.shape == FLOW.shape
        assert runner.flow.ctypes.data in cuda.host  # pinned: the stream writes the flow where the H2D reads it
        flow_ptr = runner._device["flow"].ptr
        cuda.log.clear()
        kinds, _ = run_pair(runner, images, flow, reset_before=(8,))
        log = list(cuda.log)
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
        captures = sum(1 for e in cuda.log if e[0] == "capture")
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
    assert runner._given_trt.module.store["deserialized"] == 0  # neither engine was deserialized
    assert (cuda.memory, cuda.host, cuda.log) == ({}, {}, [])  # nothing allocated


def test_pair_memory_counts_both_engines_and_everything_is_freed(tmp_path, fake_gpu):
    runner, cuda = make_fake_pair(tmp_path, "rtx")
    c = pair_contracts()[0]
    engines = [tmp_path / "fp32.engine", tmp_path / "keyframe.fp32.engine"]
    with runner:
        info = runner.memory()
        run_pair(runner, frames(2), flows(2))
    assert info.engine_file_bytes == sum(p.stat().st_size for p in engines)
    assert (info.activation_bytes, info.weights_bytes) == (2 * 123_456, 2 * 36)  # both contexts, both engines
    assert info.io_bytes == c.image.nbytes + FLOW.nbytes + c.logits.nbytes + c.labels.nbytes
    assert info.state_bytes == 2 * c.state_bytes  # one set of state pairs, shared by both contexts
    assert info.device_used_bytes == info.state_bytes + info.io_bytes
    assert any("both engines" in note for note in info.notes)
    assert (cuda.memory, cuda.host) == ({}, {})
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
