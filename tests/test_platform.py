"""common/platform.py: the one answer to "which backend, is there a GPU", and the Makefile asking it.

TensorRT flavours are faked in sys.modules (in-process) or on PYTHONPATH (for make's Python processes);
the GPU is a fake libcuda.so.1 compiled here (skips where there is no C compiler), which also runs the
ctypes driver probe for real on a machine without a GPU.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import platform as stdlib_platform
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from tempseg.common import platform
from tempseg.common.errors import UserError
from tempseg.common.platform import GpuInfo, Platform, auto_backend, pip_requirement

ROOT = Path(__file__).resolve().parents[1]
RTX_GPU = GpuInfo("Fake RTX 4090", "8.9", 24 << 30)
HOPPER = GpuInfo("Fake H200", "9.0", 141 << 30)
X86_LINUX = stdlib_platform.system() == "Linux" and stdlib_platform.machine() == "x86_64"

FAKE_LIBCUDA = r"""
#include <stddef.h>
#include <string.h>
int cuInit(unsigned int flags) { return 0; }
int cuDeviceGetCount(int *count) { *count = COUNT; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    *value = attribute == 75 ? MAJOR : attribute == 76 ? MINOR : 0;
    return 0;
}
int cuDeviceGetName(char *name, int length, int device) { strncpy(name, "Fake GPU", length); return 0; }
int cuDeviceTotalMem_v2(size_t *bytes, int device) { *bytes = (size_t)8 << 30; return 0; }
"""


# ---- fakes ------------------------------------------------------------------------------------------------


def fake_tensorrt(name: str, *capabilities: str) -> types.ModuleType:
    """A module that passes for TensorRT: a version, an ILogger, and TensorRT-RTX's ComputeCapability members."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() accepts it as installed
    module.__version__ = "1.7.0+fake" if name == "tensorrt_rtx" else "10.3.0+fake"
    module.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    module.ComputeCapability = type("ComputeCapability", (), {"SM" + c.replace(".", ""): c for c in capabilities})
    return module


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """machine(flavours=..., gpu=..., binding=...): fake what imports and what the driver reports."""

    def setup(
        *, flavours: dict[str, types.ModuleType], gpu: GpuInfo | None, binding: str | None = "cuda-python"
    ) -> None:
        for name in platform.FLAVOURS:
            monkeypatch.setitem(sys.modules, name, flavours.get(name))  # None makes `import name` fail
        monkeypatch.setattr(platform, "cuda_gpu", lambda: gpu)
        monkeypatch.setattr(platform, "cuda_binding", lambda: binding)

    return setup


def compile_libcuda(folder: Path, *, count: int = 1, capability: str = "8.6") -> Path:
    """A libcuda.so.1 that reports `count` devices of `capability`; skips the test without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or sys.platform != "linux":
        pytest.skip("needs a C compiler on Linux to fake the CUDA driver")
    major, minor = capability.split(".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fake.c").write_text(FAKE_LIBCUDA)
    defines = [f"-DCOUNT={count}", f"-DMAJOR={major}", f"-DMINOR={minor}"]
    out = folder / "libcuda.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", *defines, "-o", out, folder / "fake.c"], check=True, timeout=60)
    return out


def fake_site(folder: Path, *, rtx: str | None, tensorrt: bool = False) -> Path:
    """A PYTHONPATH folder for make's Python processes, shadowing what is installed: a tensorrt_rtx that runs on
    compute capability `rtx` (None: refuses to import), a tensorrt that imports or refuses to, and cuda-python."""
    members = f"class ComputeCapability:\n    SM{(rtx or '').replace('.', '')} = 1\n"  # SM86 = 1 for "8.6"
    for name, body in (
        ("tensorrt_rtx", f"__version__ = '1.7.0+fake'\n{members}" if rtx else None),
        ("tensorrt", "__version__ = '10.3.0+fake'\n" if tensorrt else None),
        ("cuda", ""),
        ("cuda/bindings", ""),
        ("cuda/bindings/runtime", ""),
    ):
        package = folder / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(body if body is not None else f"raise ImportError('fake: no {name}')\n")
    return folder


def make(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository, without what a calling make (`make test`) put in the environment."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    clean.update(env or {})
    return subprocess.run(
        ["make", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=timeout, check=False
    )


def deployed_run(runs: Path, model: str = "m") -> Path:
    """A run directory as copied for deployment: graphs (their contents never read by `make -n`), no checkpoint."""
    run = runs / model
    run.mkdir(parents=True)
    for name in ("model.onnx", "model.fp16.onnx"):
        (run / name).write_bytes(b"graph")
    return run


def ready_venv(folder: Path) -> Path:
    """A VENV whose install stamp is newer than pyproject.toml, so make installs nothing into it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".installed").touch()
    return folder


# ---- auto_backend: what --backend auto runs ---------------------------------------------------------------


def test_rtx_with_a_gpu_and_no_tensorrt_picks_tensorrt_rtx(machine, tmp_path):
    machine(flavours={"tensorrt_rtx": fake_tensorrt("tensorrt_rtx", "8.6", "8.9")}, gpu=RTX_GPU)
    backend, why = auto_backend(None)
    assert backend == "tensorrt_rtx"
    assert "Fake RTX 4090, compute capability 8.9, through cuda-python" in why
    engine = tmp_path / "fp16.engine"
    assert auto_backend(engine)[0] == "onnxruntime"  # not built yet: the runtime runs the graph
    engine.write_bytes(b"plan")
    assert auto_backend(engine)[0] == "tensorrt_rtx"


def test_no_gpu_means_onnxruntime_without_importing_tensorrt(monkeypatch, tmp_path):
    """No GPU answers before any TensorRT import (TensorRT-RTX's import alone costs ~100 MB of host memory)."""
    monkeypatch.setattr(platform, "cuda_gpu", lambda: None)
    monkeypatch.setattr(platform, "import_flavours", lambda *a: pytest.fail("TensorRT imported without a GPU"))
    (tmp_path / "fp16.engine").write_bytes(b"plan")
    assert auto_backend(tmp_path / "fp16.engine") == ("onnxruntime", "no NVIDIA GPU is visible")
    assert auto_backend(None) == ("onnxruntime", "no NVIDIA GPU is visible")


@pytest.mark.parametrize(
    ("flavours", "gpu", "binding", "expected", "why"),
    [
        ({"tensorrt_rtx": ("8.6", "8.9", "12.0")}, HOPPER, "cuda-python", "onnxruntime", "compute capability 9.0"),
        ({"tensorrt": (), "tensorrt_rtx": ("8.9",)}, HOPPER, "cuda-python", "tensorrt", "Fake H200"),
        ({"tensorrt": (), "tensorrt_rtx": ("8.9",)}, RTX_GPU, "pycuda", "tensorrt", "pycuda"),  # auto's order
        ({"tensorrt_rtx": ("8.9",)}, RTX_GPU, None, "onnxruntime", "no CUDA binding"),
        ({}, RTX_GPU, "cuda-python", "onnxruntime", "no TensorRT imports"),
        ({"tensorrt": ()}, None, "cuda-python", "onnxruntime", "no NVIDIA GPU"),
    ],
    ids=["rtx-on-hopper", "both-on-hopper", "both-on-rtx", "no-binding", "no-tensorrt", "no-gpu"],
)
def test_auto_backend(machine, flavours, gpu, binding, expected, why):
    machine(flavours={n: fake_tensorrt(n, *cc) for n, cc in flavours.items()}, gpu=gpu, binding=binding)
    backend, reason = auto_backend(None)
    assert (backend, why in reason) == (expected, True), reason


def test_load_tensorrt_takes_the_flavour_auto_takes(machine):
    """`python -m tempseg.engine` (load_tensorrt("auto")) builds for the flavour the runtime's auto then runs."""
    from tempseg.engine.trt import gpu_support, load_tensorrt

    machine(flavours={"tensorrt_rtx": fake_tensorrt("tensorrt_rtx", "8.9")}, gpu=RTX_GPU)
    trt = load_tensorrt("auto")
    assert trt.flavour == auto_backend(None)[0] == "tensorrt_rtx"
    assert gpu_support(trt, RTX_GPU) is None
    assert "does not run on compute capability 9.0 (Fake H200)" in gpu_support(trt, HOPPER)


def test_session_auto_follows_the_platform(machine, tmp_path):
    """runtime.session.select asks auto_backend: with an engine and a GPU it goes for the engine (here refused for
    want of a build record, which shows it was chosen); without a GPU, for the graph."""
    from tempseg.runtime.session import select

    machine(flavours={"tensorrt_rtx": fake_tensorrt("tensorrt_rtx", "8.9")}, gpu=RTX_GPU)
    (tmp_path / "fp16.engine").write_bytes(b"plan")
    with pytest.raises(UserError, match=r"no build record fp16\.engine\.json"):
        select(tmp_path, "fp16", "auto")
    machine(flavours={"tensorrt_rtx": fake_tensorrt("tensorrt_rtx", "8.9")}, gpu=None)
    with pytest.raises(UserError, match="no fp16 graph here"):
        select(tmp_path, "fp16", "auto")


def test_platform_runnable_needs_import_gpu_and_binding():
    gpu_ok = Platform({"tensorrt": "10", "tensorrt_rtx": "1.7"}, {}, {"tensorrt_rtx": "no 9.0"}, HOPPER, "pycuda")
    assert gpu_ok.runnable() == ["tensorrt"]
    assert Platform({"tensorrt": "10"}, {}, {}, HOPPER, None).runnable() == []


# ---- the probes themselves --------------------------------------------------------------------------------


def test_gpu_probe_reads_the_driver(monkeypatch, tmp_path):
    """The ctypes probe against a fake libcuda: name, compute capability, memory; no library or no device: None."""
    monkeypatch.setattr(platform, "LIBCUDA", (str(compile_libcuda(tmp_path / "one", capability="8.6")),))
    platform.cuda_gpu.cache_clear()
    try:
        assert platform.cuda_gpu() == GpuInfo("Fake GPU", "8.6", 8 << 30)
        platform.cuda_gpu.cache_clear()
        monkeypatch.setattr(platform, "LIBCUDA", (str(compile_libcuda(tmp_path / "none", count=0)),))
        assert platform.cuda_gpu() is None
        platform.cuda_gpu.cache_clear()
        monkeypatch.setattr(platform, "LIBCUDA", (str(tmp_path / "missing.so"),))
        assert platform.cuda_gpu() is None
    finally:
        platform.cuda_gpu.cache_clear()  # the next caller probes the real driver again


def test_imports_that_fail_are_reported_not_raised(monkeypatch):
    broken = types.ModuleType("tensorrt_rtx")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", broken)
    found, missing = platform.import_flavours()
    assert found == {"tensorrt_rtx": broken}
    assert list(missing) == ["tensorrt"]

    def missing_library(name: str) -> types.ModuleType:
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(platform, "importlib", types.SimpleNamespace(import_module=missing_library))
    why = "OSError: libnvinfer.so.10: cannot open shared object file"
    assert platform.try_import("tensorrt") == (None, why)  # bindings without their library: reported, not raised


def test_versions_of_distributions_else_modules_else_none(monkeypatch, tmp_path):
    """A results file's versions: a distribution's by its name (opencv-python-headless), else the __version__ of the
    module the name imports (tensorrt_rtx, which tensorrt_rtx_cu13 installs), None where neither is there."""
    for name, body in (("tempseg_fake_rtx", "__version__ = '1.7.0+fake'\n"), ("tempseg_fake_bare", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["tempseg-no-such-package", "numpy", "tempseg_fake_rtx", "tempseg_fake_bare"]
    found = platform.versions(names)
    assert list(found) == names  # every key, in the order asked
    assert found == {
        "tempseg-no-such-package": None,
        "numpy": importlib.metadata.version("numpy"),
        "tempseg_fake_rtx": "1.7.0+fake",
        "tempseg_fake_bare": None,
    }
    for name in ("tempseg_fake_rtx", "tempseg_fake_bare"):
        sys.modules.pop(name, None)


def test_results_files_take_their_versions_from_here():
    from bench import gpu_check, memory_attention

    assert gpu_check.versions is memory_attention.versions is platform.versions
    assert "cuda-bindings" in gpu_check.VERSIONS  # distribution names
    assert memory_attention.VERSIONS == ("onnxruntime", "onnx", "torch", "tensorrt_rtx")  # the keys it records


def test_cuda_binding_follows_the_runner_order(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    assert platform.cuda_binding() is None
    monkeypatch.setitem(sys.modules, "pycuda.driver", types.ModuleType("pycuda.driver"))
    assert platform.cuda_binding() == "pycuda"
    monkeypatch.setitem(sys.modules, "cuda.cudart", types.ModuleType("cuda.cudart"))
    assert platform.cuda_binding() == "cuda-python"


# ---- what a new venv needs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extras", "rtx", "expected"),
    [
        ("", False, "."),
        ("", True, ".[rtx]"),
        ("train,dev", True, ".[train,dev,rtx]"),
        ("train,dev", False, ".[train,dev]"),
        (" , ", False, "."),
        ("rtx", True, ".[rtx]"),
        ("dev,", True, ".[dev,rtx]"),
    ],
)
def test_pip_requirement_is_never_an_empty_or_leading_comma_extra(extras, rtx, expected):
    assert pip_requirement(extras, rtx=rtx) == expected


def test_venv_needs_follow_the_system_tensorrt(machine):
    machine(flavours={"tensorrt": fake_tensorrt("tensorrt")}, gpu=None)  # JetPack: TensorRT in the system Python
    assert platform.venv_options() == "--system-site-packages"
    assert not platform.wants_rtx_extra("Linux x86_64")
    machine(flavours={}, gpu=None)
    assert platform.venv_options() == ""
    assert platform.wants_rtx_extra("Linux x86_64")
    assert not platform.wants_rtx_extra("Linux aarch64")  # TensorRT-RTX has no ARM wheels


def test_command_line_answers_one_line(machine, capsys):
    machine(flavours={"tensorrt_rtx": fake_tensorrt("tensorrt_rtx", "8.9")}, gpu=RTX_GPU)
    assert platform.main(["auto-backend"]) == 0
    assert capsys.readouterr().out == "tensorrt_rtx\n"
    assert platform.main(["pip-requirement", "--extras", ""]) == 0
    assert capsys.readouterr().out == ".\n"  # no rtx extra where a TensorRT already imports
    assert platform.main([]) == 0
    assert "auto: tensorrt_rtx" in capsys.readouterr().out


# ---- the Makefile asks the same function ------------------------------------------------------------------


def fake_machine_env(tmp_path: Path, *, capability: str | None, rtx: str | None) -> dict[str, str]:
    """Environment for make: the fake site first on PYTHONPATH; a fake driver (None: one reporting no device)."""
    lib = compile_libcuda(tmp_path / "lib", count=0 if capability is None else 1, capability=capability or "8.6")
    site = fake_site(tmp_path / "site", rtx=rtx)
    return {"PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(lib.parent)}


@pytest.mark.parametrize(
    ("capability", "rtx", "builds"),
    [("8.6", "8.6", True), (None, "8.6", False), ("9.0", "8.6", False), ("8.6", None, False)],
    ids=["rtx-gpu-no-tensorrt", "no-gpu", "gpu-rtx-does-not-run-on", "gpu-without-tensorrt"],
)
def test_make_run_auto_builds_the_engine_where_auto_runs_it(tmp_path, capability, rtx, builds):
    """`make -n run BACKEND=auto` (make runs the line that asks common.platform, and the sub-make under -n):
    the engine is built exactly where the runtime's auto would run it."""
    run = deployed_run(tmp_path / "runs")
    env = fake_machine_env(tmp_path, capability=capability, rtx=rtx)
    venv = ready_venv(tmp_path / "venv")
    args = ("-n", "run", "MODEL=m", f"RUNS={run.parent}", f"VENV={venv}", f"PY={sys.executable}", "BACKEND=auto")
    result = make(*args, env=env)
    assert result.returncode == 0, result.stderr
    build = f'-m tempseg.engine --onnx "{run}/model.fp16.onnx" --out "{run}/fp16.engine"'
    assert (build in result.stdout) is builds, result.stdout
    assert ("backend auto -> tensorrt_rtx: make engine" in result.stdout) is builds
    assert "-m tempseg.train" not in result.stdout  # a deployed run directory: no checkpoint, graphs as they are
    assert "-m tempseg.export" not in result.stdout
    assert result.stdout.rstrip().endswith('--backend "auto" --source "synthetic" --frames "300"')


@pytest.mark.parametrize(("tensorrt", "extras"), [(True, "train,dev"), (False, "train,dev"), (False, "")])
def test_make_venv_is_configured_by_the_system_python(tmp_path, tensorrt, extras):
    """The venv step (shown by -n, before any .venv exists) asks $(PYTHON): --system-site-packages where it has
    TensorRT, the rtx extra on x86-64 Linux without it, and a pip target pip accepts."""
    site = fake_site(tmp_path / "site", rtx=None, tensorrt=tensorrt)
    venv = tmp_path / "venv"
    result = make(
        "-n", "setup", f"VENV={venv}", f"PYTHON={sys.executable}", f"EXTRAS={extras}", env={"PYTHONPATH": str(site)}
    )
    assert result.returncode == 0, result.stderr
    assert ("-m venv --system-site-packages" in result.stdout) is tensorrt
    target = pip_requirement(extras, rtx=X86_LINUX and not tensorrt)
    assert f'-m pip install -q -e "{target}"' in result.stdout, result.stdout
    assert not venv.exists()


def test_a_folder_of_type_stubs_is_not_taken_for_tensorrt(monkeypatch, tmp_path):
    """tensorrt-stubs in site-packages leaves a `tensorrt/` folder of .pyi files: it imports as an empty namespace
    package, which must read as "not installed", not as a TensorRT that later lacks ILogger."""
    stubs = tmp_path / "tensorrt"
    stubs.mkdir()
    (stubs / "__init__.pyi").write_text("class ILogger: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    module, why = platform.try_import("tensorrt")
    assert module is None
    assert "without its module" in why
    assert str(stubs) in why
