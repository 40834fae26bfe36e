"""ONNX -> TensorRT engine in small steps, each one job: network from ONNX -> config -> engine -> save.

Precision lives in the graph, not in builder flags: export/ writes an FP16 graph and calibration/ a Q/DQ
(explicitly quantized) INT8 graph, because TensorRT 11 and TensorRT-RTX have no FP16/INT8 builder flags.
The network is strongly typed where the flag exists (TensorRT 10/11; TensorRT-RTX always is), so FP16
tensors and Q/DQ nodes decide the kernels. Only on
TensorRT 8.6, which has no strongly typed mode, are BuilderFlag.FP16 / INT8 set from the contract's
precision. Everything that differs between versions is feature-detected (hasattr).

What the CPU tests cannot run: the standard `tensorrt` path as a whole (its builder needs a GPU), and
deserializing any engine (EngineInspector layer info, device memory); they run on an NVIDIA GPU only (tests
marked `gpu`, `make gpu-check`). TensorRT-RTX builds on the CPU, so its builds are tested everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tempseg.common.contract import Contract, TensorSpec, check_against_io, read_onnx_contract
from tempseg.common.errors import UserError
from tempseg.common.io import atomic_write
from tempseg.engine.sidecar import make_sidecar, sidecar_path, write_sidecar
from tempseg.engine.trt import TensorRT, cuda_gpu, dtype_name

log = logging.getLogger("tempseg.engine")

DEFAULT_TIMING_CACHE = Path("runs/timing.cache")
# TensorRT-RTX targets when no GPU tells us better: the RTX generations its docs list as the default
# portable set (Ampere 8.6, Ada 8.9, Blackwell 12.0). Turing (7.5) must be asked for explicitly.
DEFAULT_RTX_TARGETS = ("8.6", "8.9", "12.0")
PROFILING = ("detailed", "layer_names_only", "none")
# Lines of TensorRT's INFO build log that carry memory figures (no API gives them without a GPU).
_MEMORY_LINES = {
    "activation_bytes": re.compile(r"Total Activation Memory: (\d+) bytes"),
    "weights_bytes": re.compile(r"Total Weights Memory: (\d+) bytes"),
    "device_persistent_bytes": re.compile(r"Total Device Persistent Memory: (\d+) bytes"),
    "host_persistent_bytes": re.compile(r"Total Host Persistent Memory: (\d+) bytes"),
}


@dataclass(frozen=True)
class BuildOptions:
    """How to build; every field is recorded in the sidecar."""

    workspace_mib: int | None = None  # WORKSPACE memory-pool limit in MiB; None: TensorRT's default (the GPU's memory)
    opt_level: int | None = None  # builder_optimization_level 0-5; None: TensorRT's default (3); higher builds longer
    timing_cache: Path | None = DEFAULT_TIMING_CACHE  # loaded if present, merged and saved after; shared by builds
    profiling_verbosity: str = "detailed"  # detailed | layer_names_only | none: what EngineInspector/profilers show
    compute_capabilities: tuple[
        str, ...
    ] = ()  # TensorRT-RTX targets ("8.9", "current"); (): this GPU, else 8.6/8.9/12.0
    verbose: bool = False  # forward TensorRT's INFO and VERBOSE messages to the log
    inspect: bool = True  # deserialize after the build for layer info and device memory (only where a GPU is)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timing_cache"] = None if self.timing_cache is None else str(self.timing_cache)
        data["compute_capabilities"] = list(self.compute_capabilities)
        return data


@dataclass
class BuildConfig:
    """An IBuilderConfig and what was set on it (for the sidecar)."""

    config: Any
    strongly_typed: bool
    flags: list[str]  # BuilderFlags set
    compute_capabilities: list[str]  # what the engine targets ([] where unknown)
    compute_capability_source: str  # requested | this GPU | portable default | build GPU | unknown
    timing_cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    sidecar_path: Path
    engine_bytes: int
    sha256: str
    build_seconds: float  # parse + build, the TensorRT part only
    sidecar: dict[str, Any]


# ---- step 1: network from ONNX ----------------------------------------------------------------------


def network_from_onnx(trt: TensorRT, path: str | os.PathLike[str]) -> tuple[Any, Any, Any]:
    """Parse an ONNX file into (builder, network, parser); UserError with all of the parser's errors."""
    mod = trt.module
    try:
        builder = mod.Builder(trt.logger)
    except (TypeError, RuntimeError) as err:  # the standard TensorRT's builder needs a CUDA GPU
        raise UserError(f"{trt.flavour} {trt.version} could not create a builder (no usable GPU?): {err}") from None
    with _quiet_deprecations():
        network = builder.create_network(network_flags(trt))
    parser = mod.OnnxParser(network, trt.logger)
    # parse_from_file (not parse(bytes)) so external-data weights resolve relative to the file
    if not parser.parse_from_file(os.fspath(path)):
        raise UserError(f"TensorRT's ONNX parser failed: {parser_errors(parser)}", path)
    inputs, outputs = network_io(network)
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs.values():
            log.info("network %-6s %-12s %s %s", kind, spec.name, list(spec.shape), spec.dtype)
    return builder, network, parser


def network_flags(trt: TensorRT) -> int:
    """STRONGLY_TYPED where it exists (TensorRT 10+, RTX); else EXPLICIT_BATCH, which 8.x needs for ONNX."""
    flag = trt.module.NetworkDefinitionCreationFlag
    if hasattr(flag, "STRONGLY_TYPED"):
        return 1 << int(flag.STRONGLY_TYPED)
    if hasattr(flag, "EXPLICIT_BATCH"):
        return 1 << int(flag.EXPLICIT_BATCH)
    return 0


def parser_errors(parser: Any) -> str:
    """All of the parser's errors on one line: description, node index, name and operator where reported."""
    items = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = [f"node {err.node()}"] if err.node() >= 0 else []
        # node_name / node_operator exist from TensorRT 10; 8.6 reports the node index only
        for attr in ("node_name", "node_operator"):
            value = getattr(err, attr, None)
            if value is not None and value():
                where.append(str(value()))
        code = getattr(err.code(), "name", err.code())
        items.append(f"[{i + 1}] {err.desc().strip()} ({', '.join(where) or 'no node'}; {code})")
    return (f"{len(items)} error(s): " + " | ".join(items)) if items else "no error reported"


def network_io(network: Any) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """The network's inputs and outputs as TensorSpecs (contract dtype names)."""

    def spec(tensor: Any) -> TensorSpec:
        return TensorSpec(tensor.name, tuple(int(d) for d in tensor.shape), dtype_name(tensor.dtype))

    inputs = [spec(network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [spec(network.get_output(i)) for i in range(network.num_outputs)]
    return {s.name: s for s in inputs}, {s.name: s for s in outputs}


def network_layers(network: Any) -> list[dict[str, str]]:
    """Layers of the network definition (before TensorRT's fusions): name, type, first output's dtype."""
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        out = layer.get_output(0) if layer.num_outputs else None
        dtype = dtype_name(out.dtype) if out is not None else ""
        layers.append({"name": layer.name, "type": getattr(layer.type, "name", str(layer.type)), "precision": dtype})
    return layers


# ---- step 2: builder config -------------------------------------------------------------------------


def create_config(
    trt: TensorRT, builder: Any, network: Any, options: BuildOptions, *, precision: str = "fp32"
) -> BuildConfig:
    """An IBuilderConfig with the options applied; what TensorRT lacks is logged, never silently dropped."""
    mod, config = trt.module, builder.create_builder_config()
    if options.workspace_mib is not None:
        _set_workspace(config, mod, int(options.workspace_mib) << 20)
    if options.opt_level is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise UserError(f"{trt.flavour} {trt.version} has no builder optimization level; drop --opt-level")
        config.builder_optimization_level = int(options.opt_level)
    verbosity = getattr(mod.ProfilingVerbosity, options.profiling_verbosity.upper(), None)
    if verbosity is None:
        log.warning(
            "%s %s has no profiling verbosity %s; keeping its default",
            trt.flavour,
            trt.version,
            options.profiling_verbosity,
        )
    else:
        config.profiling_verbosity = verbosity
    strongly_typed = is_strongly_typed(trt, network)
    flags = [] if strongly_typed else _set_precision_flags(trt, config, precision)
    targets, source = _set_compute_capabilities(trt, config, options.compute_capabilities)
    result = BuildConfig(config, strongly_typed, flags, targets, source)
    result.timing_cache = load_timing_cache(trt, config, options.timing_cache)
    return result


def _set_workspace(config: Any, mod: Any, nbytes: int) -> None:
    """Memory-pool API (8.4+, RTX); max_workspace_size on older bindings."""
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(mod.MemoryPoolType.WORKSPACE, nbytes)
    else:
        config.max_workspace_size = nbytes


def is_strongly_typed(trt: TensorRT, network: Any) -> bool:
    """Whether the network decides precisions by its tensor types (TensorRT 10+ with the flag, 11, RTX)."""
    flag = getattr(trt.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return flag is not None and hasattr(network, "get_flag") and bool(network.get_flag(flag))


def _set_precision_flags(trt: TensorRT, config: Any, precision: str) -> list[str]:
    """TensorRT 8.6 (no strongly typed mode): allow the kernels the graph's precision needs."""
    wanted = {"fp16": ["FP16"], "int8": ["INT8"]}.get(precision, [])
    set_flags = []
    for name in wanted:
        member = getattr(trt.module.BuilderFlag, name, None)
        if member is None:
            log.warning("%s %s has neither strongly typed networks nor BuilderFlag.%s", trt.flavour, trt.version, name)
            continue
        config.set_flag(member)
        set_flags.append(name)
    return set_flags


def _set_compute_capabilities(trt: TensorRT, config: Any, requested: tuple[str, ...]) -> tuple[list[str], str]:
    """TensorRT-RTX: set the target GPUs. Standard TensorRT builds for the GPU it runs on."""
    gpu = cuda_gpu()
    if not trt.is_rtx or not hasattr(config, "set_compute_capability"):
        if requested:
            raise UserError(f"--compute-capability is for TensorRT-RTX; {trt.flavour} builds for the GPU it runs on")
        return ([gpu.compute_capability], "build GPU") if gpu else ([], "unknown")
    enum = trt.module.ComputeCapability
    if requested:
        targets, source = list(requested), "requested"
    elif gpu is not None and hasattr(enum, _sm_name(gpu.compute_capability)):
        targets, source = [gpu.compute_capability], "this GPU"
    else:
        targets, source = [t for t in DEFAULT_RTX_TARGETS if hasattr(enum, _sm_name(t))], "portable default"
    members = [_capability_member(trt, t, gpu) for t in targets]
    config.num_compute_capabilities = len(members)
    for i, member in enumerate(members):
        config.set_compute_capability(member, i)
    # "current" is resolved to the GPU's own number so the sidecar says what the engine runs on
    return [gpu.compute_capability if t == "current" and gpu else t for t in targets], source


def _sm_name(capability: str) -> str:
    return "SM" + capability.replace(".", "")


def _capability_member(trt: TensorRT, capability: str, gpu: Any) -> Any:
    enum = trt.module.ComputeCapability
    if capability == "current":
        if gpu is None:  # checked on TensorRT-RTX 1.7: CURRENT fails the build with a CUDA error on a CPU-only host
            raise UserError("compute capability 'current' needs a GPU on this machine; name the targets, e.g. 8.9")
        return enum.CURRENT
    member = getattr(enum, _sm_name(capability), None) if re.fullmatch(r"\d+\.\d", capability) else None
    if member is None:
        valid = [f"{m[2:-1]}.{m[-1]}" for m in enum.__members__ if re.fullmatch(r"SM\d+", m)]
        targets = ", ".join([*valid, "current"])
        raise UserError(f"compute capability {capability!r} is not a {trt.flavour} {trt.version} target ({targets})")
    return member


# ---- timing cache -------------------------------------------------------------------------------------


def timing_cache_supported(trt: TensorRT) -> bool:
    """Standard TensorRT only: TensorRT-RTX deprecated the timing cache (1.2) as a no-op that forces a GPU query."""
    return not trt.is_rtx


def load_timing_cache(trt: TensorRT, config: Any, path: Path | None) -> dict[str, Any]:
    """Attach the cache at `path` (or a new one) to `config`; returns its record for the sidecar."""
    if path is None:
        return {"path": None, "used": False, "note": "disabled"}
    if not timing_cache_supported(trt) or not hasattr(config, "create_timing_cache"):
        return {"path": str(path), "used": False, "note": f"not used by {trt.flavour} (timing caches are no-ops there)"}
    with _quiet_deprecations():
        return _attach_timing_cache(config, path)


def _attach_timing_cache(config: Any, path: Path) -> dict[str, Any]:
    data = path.read_bytes() if path.is_file() else b""
    cache = _create_cache(config, data)
    if cache is None:  # another TensorRT version or a damaged file: start afresh, the save replaces it
        log.warning("timing cache %s (%d bytes) is unusable here; starting a new one", path, len(data))
        data, cache = b"", _create_cache(config, b"")
    if not config.set_timing_cache(cache, False):  # False: refuse a cache made on another GPU model
        log.warning("timing cache %s was made for another device; starting a new one", path)
        data, cache = b"", _create_cache(config, b"")
        config.set_timing_cache(cache, False)
    if data:
        log.info("loaded timing cache %s (%d bytes)", path, len(data))
    return {"path": str(path), "used": True, "loaded_bytes": len(data)}


def save_timing_cache(trt: TensorRT, config: Any, record: dict[str, Any]) -> None:
    """Merge the file's current content (a parallel build may have saved) into ours and write it atomically."""
    if not record.get("used"):
        return
    path = Path(record["path"])
    with _quiet_deprecations():
        cache = config.get_timing_cache()
        if path.is_file():
            other = _create_cache(config, path.read_bytes())
            if other is not None:
                cache.combine(other, False)
        data = bytes(memoryview(cache.serialize()))
    with atomic_write(path) as handle:
        handle.write(data)
    record["saved_bytes"] = len(data)
    log.info("saved timing cache %s (%d bytes)", path, len(data))


def _create_cache(config: Any, data: bytes) -> Any:
    try:
        return config.create_timing_cache(data)
    except (RuntimeError, TypeError):  # bytes TensorRT cannot read
        return None


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Calls made knowingly that a flavour marks deprecated (RTX: timing cache; TensorRT 11: STRONGLY_TYPED)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# ---- step 3: engine from network ------------------------------------------------------------------


def engine_from_network(
    trt: TensorRT,
    builder: Any,
    network: Any,
    options: BuildOptions,
    *,
    precision: str = "fp32",
    config: BuildConfig | None = None,
) -> bytes:
    """Build the serialized engine (plan); UserError with TensorRT's own errors when it cannot."""
    config = config or create_config(trt, builder, network, options, precision=precision)
    trt.logger.clear()
    with _quiet_deprecations():
        plan = builder.build_serialized_network(network, config.config)
    if plan is None:
        errors = trt.logger.errors()[-5:] or ["no error message (run with --verbose)"]
        raise UserError(
            f"{trt.flavour} {trt.version} could not build the engine: {' | '.join(e.strip() for e in errors)}"
        )
    save_timing_cache(trt, config.config, config.timing_cache)
    return bytes(memoryview(plan))


def build_log_memory(trt: TensorRT) -> dict[str, int]:
    """Memory figures from the last build's INFO log (activation, weights, persistent), where printed."""
    found = {}
    for _, text in trt.logger.messages:
        for key, pattern in _MEMORY_LINES.items():
            match = pattern.search(text)
            if match:
                found[key] = int(match[1])
    return found


# ---- step 4: save -----------------------------------------------------------------------------------


def save_engine(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write the plan atomically (temp file + rename)."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


# ---- GPU only: deserialize and inspect ------------------------------------------------------------


def inspect_engine(trt: TensorRT, data: bytes) -> dict[str, Any]:
    """Layer information (EngineInspector, JSON) and device memory of a plan; needs a GPU (not run by the CPU tests)."""
    if cuda_gpu() is None:
        return {"ok": False, "reason": "no CUDA GPU on the build machine: the engine cannot be deserialized here"}
    runtime = trt.module.Runtime(trt.logger)  # kept referenced until the engine is done with
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        errors = trt.logger.errors()[-2:]
        return {"ok": False, "reason": f"deserialization failed on this GPU: {' | '.join(errors) or 'no message'}"}
    memory = getattr(engine, "device_memory_size_v2", None)  # TensorRT 10+/RTX; 8.6 has device_memory_size
    memory = engine.device_memory_size if memory is None and hasattr(engine, "device_memory_size") else memory
    info: Any = None
    if hasattr(engine, "create_engine_inspector"):
        text = engine.create_engine_inspector().get_engine_information(trt.module.LayerInformationFormat.JSON)
        try:
            info = json.loads(text)
        except ValueError:
            info = {"text": text}
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    del engine, runtime
    return {"ok": True, "device_memory_bytes": None if memory is None else int(memory), "layers": layers}


# ---- the whole stage ----------------------------------------------------------------------------------


def build_engine(
    trt: TensorRT,
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    options: BuildOptions = BuildOptions(),
    *,
    contract: Contract | None = None,
) -> BuildResult:
    """ONNX -> engine + sidecar. The network's I/O must match the ONNX contract (UserError otherwise)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    contract = contract or read_onnx_contract(onnx_path)
    trt.logger.verbose = options.verbose
    started = time.perf_counter()
    builder, network, _parser = network_from_onnx(trt, onnx_path)
    inputs, outputs = network_io(network)
    check_against_io(contract, inputs, outputs, str(onnx_path))
    config = create_config(trt, builder, network, options, precision=contract.precision)
    data = engine_from_network(trt, builder, network, options, precision=contract.precision, config=config)
    seconds = time.perf_counter() - started
    memory = build_log_memory(trt)
    inspected = inspect_engine(trt, data) if options.inspect else {"ok": False, "reason": "inspection disabled"}
    sha = hashlib.sha256(data).hexdigest()
    sidecar = make_sidecar(
        trt, contract, onnx_path=onnx_path, engine_name=engine_path.name, engine_bytes=len(data), engine_sha256=sha,
        options=options, config=config, build_seconds=seconds, io=(inputs, outputs), layers=network_layers(network),
        inspected=inspected, build_log_memory=memory,
    )  # fmt: skip
    # Sidecar first, engine second: a build killed in between leaves no new engine, so make rebuilds it,
    # and an older engine left beside the new sidecar fails check_engine's hash check.
    side = write_sidecar(sidecar_path(engine_path), sidecar)
    save_engine(data, engine_path)
    return BuildResult(engine_path, side, len(data), sha, seconds, sidecar)
