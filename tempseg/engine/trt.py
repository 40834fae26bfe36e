"""Compat layer over the two TensorRT flavours: `tensorrt` (8.6, 10.x incl. JetPack 6's 10.3, 11.x) and `tensorrt_rtx`.

Both are imported lazily (engine/ imports on a machine with neither) and their differences are
feature-detected with hasattr, never by comparing version strings. Also here: a logger that routes
TensorRT's messages into Python logging, and `dtype_name` (TensorRT DataType -> the contract's dtype names,
for the builder and the runtime alike). Which flavours there are, in which order `auto` takes them, and
the GPU (a driver-level probe that needs no CUDA binding) come from common/platform.py, the one place
that decides about the machine; `GpuInfo` and `cuda_gpu` are re-exported from there.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from tempseg.common.errors import UserError
from tempseg.common.platform import FLAVOURS, GpuInfo, try_import
from tempseg.common.platform import cuda_gpu as cuda_gpu  # re-exported: the one GPU probe
from tempseg.common.platform import gpu_support as _gpu_support

PREFERENCES = ("auto", *FLAVOURS)
INSTALL_HINTS = {
    "tensorrt": "`pip install tensorrt` (desktop NVIDIA GPU); on a Jetson it comes with JetPack "
    "(make a venv with --system-site-packages, as `make setup` does)",
    "tensorrt_rtx": "`pip install -e '.[rtx]'` for TensorRT-RTX (x86-64 Linux/Windows; builds engines without a GPU)",
}
# TensorRT DataType member name -> the numpy-style names of common/contract.py
DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8",
    "INT4": "int4",
    "FP4": "float4",
}
# TensorRT severities -> Python levels. TensorRT's INFO is chatty (a dozen lines per parse), so it is
# DEBUG unless --verbose asks for it; VERBOSE is dropped before formatting unless --verbose.
_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING}
_KEEP_MESSAGES = 5000  # recent messages kept for error reports and the build record (INFO and above)

log = logging.getLogger("tempseg.engine.trt")


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


def load_tensorrt(prefer: str = "auto", *, verbose: bool = False) -> TensorRT:
    """Import TensorRT: `auto` tries `tensorrt` then `tensorrt_rtx`; UserError with install commands if none imports."""
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, not {prefer!r}")
    names = FLAVOURS if prefer == "auto" else (prefer,)
    failures = []
    for name in names:  # common.platform's order, the one the runtime's and the Makefile's `auto` use
        module, why = try_import(name)
        if module is None:
            failures.append(f"{name}: {why}")
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


def dtype_name(dtype: Any) -> str:
    """TensorRT DataType -> 'float32', 'float16', ... (the member name lowercased if unknown)."""
    name = getattr(dtype, "name", str(dtype)).rsplit(".", 1)[-1]
    return DTYPES.get(name, name.lower())


def gpu_support(trt: TensorRT, gpu: GpuInfo | None) -> str | None:
    """Why engines of `trt` cannot run on `gpu`; None when they can (common.platform.gpu_support decides)."""
    return _gpu_support(trt.flavour, trt.module, gpu)
