"""Compat layer over the two TensorRT flavours: `tensorrt` (8.6, 10.x incl. JetPack 6's 10.3, 11.x) and `tensorrt_rtx`.

Both are imported lazily (engine/ imports on a machine with neither) and their differences are
feature-detected with hasattr, never by comparing version strings. Also here: a logger that routes
TensorRT's messages into Python logging, and a driver-level GPU probe (ctypes on libcuda, so it
needs no CUDA binding and never raises on a machine without a GPU).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

from common.errors import UserError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
PREFERENCES = ("auto", *FLAVOURS)
INSTALL_HINTS = {
    "tensorrt": "`pip install tensorrt` (desktop NVIDIA GPU); on a Jetson it comes with JetPack "
    "(make a venv with --system-site-packages, as `make setup` does)",
    "tensorrt_rtx": "`pip install -e '.[rtx]'` for TensorRT-RTX (x86-64 Linux/Windows; builds engines without a GPU)",
}
# TensorRT severities -> Python levels. TensorRT's INFO is chatty (a dozen lines per parse), so it is
# DEBUG unless --verbose asks for it; VERBOSE is dropped before formatting unless --verbose.
_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING}
_KEEP_MESSAGES = 5000  # recent messages kept for error reports and the build record (INFO and above)

log = logging.getLogger("engine.trt")


@dataclass(frozen=True)
class TensorRT:
    """An imported TensorRT flavour and the logger every builder/runtime/parser of it must share."""

    module: Any  # the `tensorrt` or `tensorrt_rtx` module
    flavour: str  # "tensorrt" | "tensorrt_rtx"
    version: str  # module.__version__, e.g. "10.3.0" or "1.7.1.116"
    logger: Any  # an ILogger subclass instance (see make_logger); kept alive as long as this object

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "tensorrt_rtx"


@dataclass(frozen=True)
class GpuInfo:
    """CUDA device 0 as the driver reports it."""

    name: str
    compute_capability: str  # "8.9"
    total_memory_bytes: int | None


def load_tensorrt(prefer: str = "auto", *, verbose: bool = False) -> TensorRT:
    """Import TensorRT: `auto` tries `tensorrt` then `tensorrt_rtx`; UserError with install commands if none imports."""
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, not {prefer!r}")
    names = FLAVOURS if prefer == "auto" else (prefer,)
    failures = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as err:  # OSError: bindings present but a shared library is missing
            failures.append(f"{name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            continue
        version = str(getattr(module, "__version__", "unknown"))
        log.debug("using %s %s", name, version)
        return TensorRT(module=module, flavour=name, version=version, logger=make_logger(module, verbose=verbose))
    hints = "; or ".join(INSTALL_HINTS[n] for n in names)
    raise UserError(f"TensorRT is not importable ({'; '.join(failures)}). Install it: {hints}")


def make_logger(module: Any, *, verbose: bool = False) -> Any:
    """A `module.ILogger` that forwards to logging 'engine.trt' and keeps recent messages in `.messages`."""

    class Logger(module.ILogger):
        def __init__(self) -> None:
            module.ILogger.__init__(self)
            self.verbose = verbose
            self.messages: deque[tuple[str, str]] = deque(maxlen=_KEEP_MESSAGES)  # (severity name, text)

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity)).rsplit(".", 1)[-1]
            if name == "VERBOSE" and not self.verbose:
                return
            if name != "VERBOSE":
                self.messages.append((name, msg))
            level = _LEVELS.get(name, logging.INFO if self.verbose and name == "INFO" else logging.DEBUG)
            log.log(level, "[TRT] %s", msg)

        def errors(self) -> list[str]:
            """ERROR / INTERNAL_ERROR messages kept since the last clear()."""
            return [text for sev, text in self.messages if sev in ("ERROR", "INTERNAL_ERROR")]

        def clear(self) -> None:
            self.messages.clear()

    return Logger()


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
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def gpu_support(trt: TensorRT, gpu: GpuInfo | None) -> str | None:
    """Why engines of `trt` cannot run on `gpu`; None when they can.

    TensorRT-RTX runs only on the compute capabilities its ComputeCapability enum lists (1.7: 7.5,
    8.0, 8.6, 8.9, 12.x; no Hopper). Standard TensorRT runs on the GPU it was built on.
    """
    if gpu is None:
        return "no NVIDIA GPU is visible"
    if trt.is_rtx and not hasattr(trt.module.ComputeCapability, "SM" + gpu.compute_capability.replace(".", "")):
        return f"TensorRT-RTX {trt.version} does not run on compute capability {gpu.compute_capability} ({gpu.name})"
    return None
