"""Which backend, is there a GPU: the one place that asks what this machine can run.

- which TensorRT flavours import (`tensorrt`, `tensorrt_rtx`), in the order `auto` prefers them;
- the CUDA GPU: device 0 from the driver (ctypes on libcuda, so no CUDA binding is needed), with its compute
  capability, and whether each flavour's engines run on it (TensorRT-RTX lists the GPUs it runs on);
- the CUDA binding the TensorRT runner reaches the GPU through (cuda-python, else pycuda);
- what `--backend auto` runs (`auto_backend`), and what a new venv needs (`venv_options`, `pip_requirement`);
- the versions of what is installed, for a results file (`versions`).

runtime/session.py, runtime/cuda.py, engine/trt.py and the Makefile (`python -m tempseg.common.platform QUERY`) ask here
instead of deciding for themselves. It lives in common/ because engine/ asks too and must not import runtime/.
Standard library only, every optional import lazy, and nothing raises on a machine without TensorRT, CUDA or a
GPU: the Makefile runs it under the system Python before .venv exists (Python 3.10 on JetPack 6), without torch.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib
import importlib.metadata
import platform as _stdlib_platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

# auto's order: the standard TensorRT runs on every GPU it was built on; TensorRT-RTX only on the ones it lists
FLAVOURS = ("tensorrt", "tensorrt_rtx")
# CUDA bindings in the order the TensorRT runner uses them, each with the modules that provide it
BINDINGS = (("cuda-python", ("cuda.bindings.runtime", "cuda.cudart")), ("pycuda", ("pycuda.driver",)))
FALLBACK = "onnxruntime"  # what auto runs where no engine can run
NO_GPU = "no NVIDIA GPU is visible"
LIBCUDA = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")


@dataclass(frozen=True)
class GpuInfo:
    """CUDA device 0 as the driver reports it."""

    name: str
    compute_capability: str  # "8.9"
    total_memory_bytes: int | None


@dataclass(frozen=True)
class Platform:
    """What this machine can run; `probe()` fills it."""

    tensorrt: dict[str, str]  # flavour -> version, for each flavour that imports, in FLAVOURS order
    missing: dict[str, str]  # flavour -> why it does not import (the first line of its error)
    unsupported: dict[str, str]  # importable flavour -> why its engines cannot run on `gpu`
    gpu: GpuInfo | None  # None: no NVIDIA driver or no device
    binding: str | None  # "cuda-python" | "pycuda"; None: neither imports

    def runnable(self) -> list[str]:
        """The flavours whose engines run here, in auto's order: they import, run on the GPU, and a binding imports."""
        if self.binding is None:
            return []
        return [flavour for flavour in self.tensorrt if flavour not in self.unsupported]

    def why_not(self) -> str:
        """Why no engine runs here (for the log line of `auto`)."""
        if self.gpu is None:
            return NO_GPU
        if not self.tensorrt:
            return "no TensorRT imports (" + "; ".join(f"{k}: {v}" for k, v in self.missing.items()) + ")"
        if len(self.unsupported) == len(self.tensorrt):
            return "; ".join(self.unsupported.values())
        return "no CUDA binding imports (`pip install cuda-python`, or pycuda)"


def try_import(name: str) -> tuple[ModuleType | None, str]:
    """(module, "") when `name` imports; (None, the first line of why) when it does not. Never raises.

    A folder of that name with no __init__.py imports as an empty namespace package (type stubs such as
    tensorrt-stubs leave one): that is no module, and is reported so instead of failing later on a missing name.
    """
    try:
        module = importlib.import_module(name)
    except Exception as err:  # ImportError, OSError (a shared library missing), or a broken install of any kind
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, text if isinstance(err, ImportError) else f"{type(err).__name__}: {text}"
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.origin is None and spec.submodule_search_locations is not None:  # namespace
        where = ", ".join(spec.submodule_search_locations)
        return None, f"only a folder of that name without its module (type stubs?): {where}"
    return module, ""


def versions(names: Sequence[str]) -> dict[str, str | None]:
    """The installed version of each of `names`, for a results file: a distribution's (`opencv-python-headless`,
    `cuda-bindings`), else, where no distribution has the name, the `__version__` of the module it names (imported
    only then: `onnxruntime` as onnxruntime-gpu installs it, `tensorrt_rtx` from tensorrt_rtx_cu13); None where
    neither is installed."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            module = try_import(name)[0]
            found[name] = getattr(module, "__version__", None) if module else None
    return found


def import_flavours(names: Sequence[str] = FLAVOURS) -> tuple[dict[str, ModuleType], dict[str, str]]:
    """The TensorRT flavours of `names` that import (name -> module, in order) and why the others do not."""
    found, missing = {}, {}
    for name in names:
        module, why = try_import(name)
        if module is None:
            missing[name] = why
        else:
            found[name] = module
    return found, missing


def cuda_binding() -> str | None:
    """The CUDA binding the TensorRT runner uses: "cuda-python", else "pycuda"; None when neither imports."""
    for binding, modules in BINDINGS:
        if any(try_import(module)[0] is not None for module in modules):
            return binding
    return None


@functools.lru_cache(maxsize=1)
def cuda_gpu() -> GpuInfo | None:
    """CUDA device 0 from the driver API (libcuda via ctypes), or None where there is no driver or GPU."""
    lib = _load_libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return None
    count, device = ctypes.c_int(0), ctypes.c_int(0)
    if (
        lib.cuDeviceGetCount(ctypes.byref(count)) != 0
        or count.value < 1
        or lib.cuDeviceGet(ctypes.byref(device), 0) != 0
    ):
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h, stable since CUDA 5)
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, device)
    total = ctypes.c_size_t(0)
    has_total = hasattr(lib, "cuDeviceTotalMem_v2") and lib.cuDeviceTotalMem_v2(ctypes.byref(total), device) == 0
    return GpuInfo(
        name.value.decode(errors="replace"), f"{major.value}.{minor.value}", total.value if has_total else None
    )


def _load_libcuda() -> Any:
    """The CUDA driver library, or None (no NVIDIA driver: a CPU-only machine)."""
    for name in LIBCUDA:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def gpu_support(flavour: str, module: Any, gpu: GpuInfo | None) -> str | None:
    """Why engines of `flavour` (its imported `module`) cannot run on `gpu`; None when they can.

    TensorRT-RTX runs only on the compute capabilities its ComputeCapability enum lists (1.7: 7.5, 8.0, 8.6,
    8.9, 12.x; no Hopper). Standard TensorRT runs on the GPU it was built on.
    """
    if gpu is None:
        return NO_GPU
    members = getattr(module, "ComputeCapability", None)
    if flavour == "tensorrt_rtx" and not hasattr(members, "SM" + gpu.compute_capability.replace(".", "")):
        version = getattr(module, "__version__", "")
        return f"TensorRT-RTX {version} does not run on compute capability {gpu.compute_capability} ({gpu.name})"
    return None


def probe() -> Platform:
    """Import the TensorRT flavours and a CUDA binding, and ask the driver for the GPU."""
    found, missing = import_flavours()
    gpu = cuda_gpu()
    unsupported = {name: why for name, module in found.items() if (why := gpu_support(name, module, gpu))}
    versions = {name: str(getattr(module, "__version__", "unknown")) for name, module in found.items()}
    return Platform(versions, missing, unsupported, gpu, cuda_binding())


def auto_backend(engine: Path | None = None, info: Platform | None = None) -> tuple[str, str]:
    """What `--backend auto` runs, and why: the first runnable TensorRT flavour when the engine exists, else
    onnxruntime. `engine`: <run dir>/<precision>.engine; None asks what auto runs once it is built (make asks
    that before building it). `info`: a probe already made (default: probe now).

    No engine or no GPU answers before TensorRT is imported: importing TensorRT-RTX alone adds ~100 MB to the
    host memory that an ONNX Runtime run then reports.
    """
    if info is None and cuda_gpu() is None:
        return FALLBACK, NO_GPU
    if engine is not None and not engine.is_file():
        return FALLBACK, f"there is no engine {engine}; `make engine` builds one"
    info = info or probe()
    runnable = info.runnable()
    if not runnable:
        return FALLBACK, info.why_not()
    flavour, gpu = runnable[0], info.gpu
    where = f"{gpu.name}, compute capability {gpu.compute_capability}" if gpu else "the GPU"
    return flavour, f"{flavour} {info.tensorrt[flavour]} on {where}, through {info.binding}"


# ---- what a new venv needs (the Makefile asks the system Python, before .venv exists) ----------------------


def venv_options() -> str:
    """`--system-site-packages` where this Python imports TensorRT (JetPack installs it there), else ""."""
    return "--system-site-packages" if import_flavours()[0] else ""


def wants_rtx_extra(system: str | None = None) -> bool:
    """The rtx extra where TensorRT-RTX has wheels (x86-64 Linux) and this Python has no TensorRT of its own."""
    system = system or f"{_stdlib_platform.system()} {_stdlib_platform.machine()}"
    return system == "Linux x86_64" and not import_flavours()[0]


def pip_requirement(extras: str, *, rtx: bool) -> str:
    """The editable target for pip: "." for no extras, ".[a,b]" otherwise (pip refuses ".[]" and ".[,rtx]")."""
    names = [name.strip() for name in extras.split(",") if name.strip()]
    if rtx and "rtx" not in names:
        names.append("rtx")
    return f".[{','.join(names)}]" if names else "."


# ---- command line -------------------------------------------------------------------------------------------


def describe(info: Platform) -> str:
    """The probe as a few lines, for people."""
    gpu = info.gpu
    lines = [
        "tensorrt: " + (", ".join(f"{k} {v}" for k, v in info.tensorrt.items()) or "none"),
        *(f"  {k} does not import: {v}" for k, v in info.missing.items()),
        "gpu: " + (f"{gpu.name}, compute capability {gpu.compute_capability}" if gpu else "none"),
        *(f"  {k}: {v}" for k, v in info.unsupported.items() if gpu is not None),
        f"cuda binding: {info.binding or 'none'}",
        "auto: {} ({})".format(*auto_backend(None, info)),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tempseg.common.platform", description=__doc__.split("\n")[0] if __doc__ else None
    )
    sub = p.add_subparsers(dest="query")
    auto = sub.add_parser("auto-backend", help="the backend `--backend auto` runs")
    auto.add_argument("--engine", type=Path, help="the engine it would run (default: assume it gets built)")
    sub.add_parser("venv-options", help="options for `python -m venv` (this Python is the system one)")
    pip = sub.add_parser("pip-requirement", help="the editable pip target for EXTRAS (+ rtx where it is needed)")
    pip.add_argument("--extras", default="", help="comma-separated extras of pyproject.toml, may be empty")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.query == "auto-backend":
        print(auto_backend(args.engine)[0])
    elif args.query == "venv-options":
        print(venv_options())
    elif args.query == "pip-requirement":
        print(pip_requirement(args.extras, rtx=wants_rtx_extra()))
    else:
        print(describe(probe()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
