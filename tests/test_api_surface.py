"""The runner, the builder and the fakes held to the real APIs they stand for.

Real surfaces, read without a GPU and without importing TensorRT:
- TensorRT 10.x: tensorrt-stubs' .pyi files (TensorRT 10.13's Python API), read line by line because not every
  signature there is valid Python (ast.parse fails): classes, their defs, annotated names, :ivar lines;
- TensorRT-RTX: the installed tensorrt_rtx, introspected (module, classes, enum members);
- cuda-python: cuda.bindings.runtime, introspected (functions, cudaError_t and the other enums).
TensorRT 8.6 and 11 have no surface here: names only their branches use must exist in at least one of the above.

What is used is recorded, not guessed from source: the runner is driven through the fakes of every kind with
the fake TensorRT module wrapped in recording proxies (every attribute looked up, set or probed with
hasattr/getattr(..., default)); the builder is driven through the real TensorRT-RTX the same way, once as itself
and once down the standard TensorRT branches; CudaPythonApi through a recording stand-in for cuda-python.
A name used plainly must exist in the surface of the kind that used it; a probed name in at least one surface.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import enum
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import tests.trt_fakes as fakes
from tempseg.engine import build
from tempseg.engine.trt import TensorRT, gpu_support, load_tensorrt
from tempseg.runtime.backends import trt_runner
from tempseg.runtime.cuda import CudaPythonApi

MODULE = "module"  # the owner of module-level names
STUBS = "tensorrt-stubs"
CUDA = "cuda-python"
_REAL_HASATTR, _REAL_GETATTR = builtins.hasattr, builtins.getattr


# ---- real surfaces ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Surface:
    """One real API: names per class (MODULE: the module's) and what its methods return (class names)."""

    label: str
    members: Mapping[str, frozenset[str]]
    returns: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def has(self, owner: str, name: str) -> bool:
        return name in self.members.get(owner, frozenset())


def surface_key(flavour: str, version: str) -> str:
    """The surface a TensorRT of this flavour and version stands for: its flavour and major version."""
    return f"{flavour} {version.split('.')[0]}"


_CLASS = re.compile(r"^(\s*)class (\w+)(?:\((.*)\))?:")
_DEF = re.compile(r"^(\s*)def (\w+)\(")
_RETURNS = re.compile(r"\)\s*->\s*([\w.]+)\s*:\s*$")
_NAME = re.compile(r"^(\s*)(\w+)\s*[:=]")
_IMPORT = re.compile(r"^(?:from \S+ )?import (?:\S+ as )?(\w+)\s*$")
_IVAR = re.compile(r":ivar (\w+):")


def parse_stub(text: str, members: dict[str, set[str]], returns: dict[tuple[str, str], str]) -> dict[str, list[str]]:
    """Read a .pyi tolerantly, line by line, into `members`/`returns`; the bases of each class. Code examples
    inside docstrings are skipped; their :ivar lines count as names of the class."""
    stack: list[tuple[int, str]] = []  # (indent, class) of the classes the line is in
    bases: dict[str, list[str]] = {}
    in_doc = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_doc or stripped.startswith(('"""', 'r"""')):
            if stack:
                members[stack[-1][1]].update(_IVAR.findall(line))
            in_doc = in_doc != (line.count('"""') % 2 == 1)
            continue
        if not stripped or stripped.startswith(("#", "@")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        owner = stack[-1][1] if stack else MODULE
        if match := _CLASS.match(line):
            members[owner].add(match[2])
            members.setdefault(match[2], set())
            bases[match[2]] = [b.strip().rsplit(".", 1)[-1] for b in (match[3] or "").split(",") if b.strip()]
            stack.append((indent, match[2]))
        elif match := _DEF.match(line):
            members[owner].add(match[2])
            if returned := _RETURNS.search(line):
                returns.setdefault((owner, match[2]), returned[1].rsplit(".", 1)[-1])
        elif owner == MODULE and stripped.startswith("__all__"):
            members[MODULE].update(re.findall(r"'(\w+)'", line))
        elif owner == MODULE and (match := _IMPORT.match(stripped)):
            members[MODULE].add(match[1])
        elif match := _NAME.match(line):
            members[owner].add(match[2])
    return bases


def with_bases(members: dict[str, set[str]], bases: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    """Each class's names with those of its bases (within the same API)."""

    def names(cls: str, seen: frozenset[str] = frozenset()) -> set[str]:
        own = set(members.get(cls, ()))
        for base in bases.get(cls, []):
            if base in members and base not in seen:
                own |= names(base, seen | {cls})
        return own

    return {cls: frozenset(names(cls)) for cls in members}


def stub_files() -> tuple[Path, Path] | None:
    """tensorrt-stubs' tensorrt_bindings/tensorrt.pyi and tensorrt/__init__.pyi: from the folder beside the venv's
    packages where the Makefile installs them (off sys.path: a `tensorrt` folder of stubs on it would import as
    an empty TensorRT), else from an installed distribution."""
    roots = [Path(sys.prefix) / STUBS]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        roots.append(Path(str(importlib.metadata.distribution(STUBS).locate_file(""))))
    for root in roots:
        bindings, package = root / "tensorrt_bindings" / "tensorrt.pyi", root / "tensorrt" / "__init__.pyi"
        if bindings.is_file() and package.is_file():
            return bindings, package
    return None


def stub_surface(bindings: Path, package: Path) -> tuple[str, Surface]:
    members: dict[str, set[str]] = defaultdict(set)
    returns: dict[tuple[str, str], str] = {}
    bases = parse_stub(bindings.read_text(), members, returns)
    package_text = package.read_text()
    parse_stub(package_text, members, returns)
    version = re.search(r"^__version__: str = '([\d.]+)'", package_text, re.MULTILINE)
    assert version, f"no __version__ in {package}"
    label = f"TensorRT {version[1]} ({STUBS})"
    return surface_key("tensorrt", version[1]), Surface(label, with_bases(members, bases), returns)


def _public_dir(obj: object) -> frozenset[str]:
    return frozenset(n for n in dir(obj) if not n.startswith("_"))


def introspected_surface(module: ModuleType, label: str) -> Surface:
    """A binding module's names, each class's names (dir: inherited ones and enum members included) and the
    return types pybind11 writes into the docstrings (`-> tensorrt_rtx.ICudaEngine`, `-> nvinfer1::IRuntimeCache`)."""
    members: dict[str, frozenset[str]] = {MODULE: frozenset(dir(module))}
    returns: dict[tuple[str, str], str] = {}
    for name in dir(module):
        cls = _REAL_GETATTR(module, name)
        if not isinstance(cls, type):
            continue
        members[name] = frozenset(dir(cls))
        for attr in _public_dir(cls):
            doc = _REAL_GETATTR(_REAL_GETATTR(cls, attr, None), "__doc__", None) or ""
            found = [re.split(r"\.|::", t)[-1] for t in re.findall(r"\)\s*->\s*([\w.:]+)", doc)]
            if found:
                returns[(name, attr)] = found[-1]
    return Surface(label, members, returns)


@pytest.fixture(scope="module")
def tensorrt_surfaces() -> dict[str, Surface]:
    """TensorRT 10.x (stubs) and TensorRT-RTX, by surface_key."""
    files = stub_files()
    if files is None:
        pytest.skip(f"{STUBS} not installed (`make setup` puts it in {Path(sys.prefix) / STUBS})")
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx not installed (pip extra `rtx`)")
    rtx = importlib.import_module("tensorrt_rtx")
    key, stubs = stub_surface(*files)
    label = f"TensorRT-RTX {rtx.__version__} (introspected)"
    return {key: stubs, surface_key("tensorrt_rtx", rtx.__version__): introspected_surface(rtx, label)}


@pytest.fixture(scope="module")
def cuda_surface() -> dict[str, Surface]:
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("cuda-python (cuda.bindings.runtime) not installed")
    runtime = importlib.import_module("cuda.bindings.runtime")
    version = importlib.metadata.version("cuda-bindings")
    return {CUDA: introspected_surface(runtime, f"cuda-python {version} (cuda.bindings.runtime)")}


# ---- recording -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Use:
    """One lookup of `owner.name` by the code under test, in a drive that stands for `surface`."""

    owner: str
    name: str
    probe: bool  # hasattr() or getattr() with a default: feature detection
    found: bool
    surface: str
    drive: str


class Recorder:
    """Wraps API objects in proxies that record every name looked up on them."""

    def __init__(self, returns: Mapping[tuple[str, str], str], classes: Iterable[str]) -> None:
        self.returns, self.classes = returns, frozenset(classes)
        self.uses: list[Use] = []
        self.targets: list[tuple[str, str, object]] = []  # (owner, surface, wrapped object): the fakes met
        self.surface = self.drive = ""
        self.hidden: frozenset[tuple[str, str]] = frozenset()  # names made to look absent (another version)

    def wrap(self, target: object, owner: str, returns: str | None = None) -> Proxy:
        if returns is None:
            self.targets.append((owner, self.surface, target))
        return Proxy(target, owner, self, returns)

    def lookup(self, proxy: Proxy, name: str, *, probe: bool) -> Any:
        target, owner = proxy._target, proxy._owner
        found = (owner, name) not in self.hidden and _REAL_HASATTR(target, name)
        self.uses.append(Use(owner, name, probe, found, self.surface, self.drive))
        if not found:
            raise AttributeError(f"{owner} has no attribute {name!r}")
        value = _REAL_GETATTR(target, name)
        if owner == MODULE and name in self.classes:
            return self.wrap(value, name, returns=name if isinstance(value, type) else None)
        returned = self.returns.get((owner, name))
        return self.wrap(value, f"{owner}.{name}", returned) if returned and callable(value) else value

    def result(self, value: Any, owner: str) -> Any:
        """A call's result, wrapped where it is an API object (not a plain value, enum member or buffer)."""
        plain = (int, float, str, bytes, bytearray, tuple, list, dict, enum.Enum)
        if value is None or isinstance(value, plain) or _REAL_HASATTR(type(value), "__members__"):
            return value
        with contextlib.suppress(TypeError):
            memoryview(value)
            return value
        return self.wrap(value, owner)


def _unwrap(value: Any) -> Any:
    return value._target if isinstance(value, Proxy) else value


class Proxy:
    """An API object (or class, or method) as the code under test sees it; its Recorder notes every name."""

    __slots__ = ("_owner", "_recorder", "_returns", "_target")

    def __init__(self, target: object, owner: str, recorder: Recorder, returns: str | None) -> None:
        for slot, value in zip(self.__slots__, (owner, recorder, returns, target), strict=True):
            object.__setattr__(self, slot, value)

    def __getattr__(self, name: str) -> Any:
        return self._recorder.lookup(self, name, probe=False)

    def __setattr__(self, name: str, value: Any) -> None:
        self._recorder.uses.append(Use(self._owner, name, False, True, self._recorder.surface, self._recorder.drive))
        setattr(self._target, name, _unwrap(value))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = self._target(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()})  # type: ignore[operator]
        return self._recorder.result(value, self._returns or self._owner)

    def __eq__(self, other: object) -> bool:
        return self._target == _unwrap(other)

    def __hash__(self) -> int:
        return hash(self._target)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._target)  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(self._target)  # type: ignore[arg-type]

    def __int__(self) -> int:
        return int(self._target)  # type: ignore[call-overload]

    def __index__(self) -> int:
        return self._target.__index__()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<recorded {self._owner}: {self._target!r}>"


@contextlib.contextmanager
def probes_recorded() -> Iterator[None]:
    """hasattr() and getattr(obj, name, default) on a proxy recorded as probes (feature detection)."""

    def recorded_hasattr(obj: object, name: str) -> bool:
        if not isinstance(obj, Proxy):
            return _REAL_HASATTR(obj, name)
        try:
            obj._recorder.lookup(obj, name, probe=True)
        except AttributeError:
            return False
        return True

    def recorded_getattr(obj: object, name: str, *default: Any) -> Any:
        if not isinstance(obj, Proxy):
            return _REAL_GETATTR(obj, name, *default)
        try:
            return obj._recorder.lookup(obj, name, probe=bool(default))
        except AttributeError:
            if default:
                return default[0]
            raise

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "hasattr", recorded_hasattr)
        patch.setattr(builtins, "getattr", recorded_getattr)
        yield


def recorder_for(surfaces: Mapping[str, Surface]) -> Recorder:
    returns: dict[tuple[str, str], str] = {}
    classes: set[str] = set()
    for surface in surfaces.values():
        returns.update({k: v for k, v in surface.returns.items() if k not in returns})
        classes |= set(surface.members) - {MODULE}
    return Recorder(returns, classes)


# ---- checking ------------------------------------------------------------------------------------------------

Counts = dict[str, set[tuple[str, str]]]  # surface key -> (owner, name) checked against it


def check_uses(uses: Iterable[Use], surfaces: Mapping[str, Surface]) -> tuple[list[str], Counts]:
    """A plain use must exist in its drive's surface; a probe, or a use by a kind with no surface here (8.6,
    11), in at least one."""
    problems, checked = [], defaultdict(set)
    for use in sorted(set(uses), key=lambda u: (u.owner, u.name, u.drive)):
        key = (use.owner, use.name)
        if not use.probe and use.surface in surfaces:
            checked[use.surface].add(key)
            if not surfaces[use.surface].has(*key):
                problems.append(f"{use.owner}.{use.name} ({use.drive}): {surfaces[use.surface].label} has no such name")
            continue
        for name in surfaces:
            checked[name].add(key)
        if not any(s.has(*key) for s in surfaces.values()):
            how = "probed" if use.probe else f"used where no {use.surface} surface is installed"
            labels = ", ".join(s.label for s in surfaces.values())
            problems.append(f"{use.owner}.{use.name} ({use.drive}, {how}): in none of {labels}")
    return list(dict.fromkeys(problems)), checked


def uncovered_branches(uses: Iterable[Use], surfaces: Mapping[str, Surface]) -> list[str]:
    """Probed names a real surface has but no fake of that kind has: the runner's branch for that version is
    never run."""
    found: dict[tuple[str, str, str], bool] = {}
    for use in uses:
        if use.probe:
            key = (use.owner, use.name, use.surface)
            found[key] = found.get(key, False) or use.found
    return sorted(
        f"{owner}.{name}: {surfaces[surface].label} has it, no fake of that kind does"
        for (owner, name, surface), hit in found.items()
        if not hit and surface in surfaces and surfaces[surface].has(owner, name)
    )


def fake_objects(targets: Iterable[tuple[str, str, object]], classes: Iterable[str]) -> list[tuple[str, str, object]]:
    """The fakes the drives met, and the module-level attributes of a fake module named as real classes
    (TensorIOMode, DataType, ...), once each."""
    classes, seen, out = frozenset(classes), set(), []
    for owner, surface, target in targets:
        more = [(owner, target)]
        if owner == MODULE:
            more += [(n, _REAL_GETATTR(target, n)) for n in _public_dir(target) if n in classes]
        for name, obj in more:
            if (id(obj), surface) not in seen:
                seen.add((id(obj), surface))
                out.append((name, surface, obj))
    return out


def check_fakes(
    fakes_met: Iterable[tuple[str, str, object]], surfaces: Mapping[str, Surface]
) -> tuple[list[str], Counts]:
    """Every public name of a fake exists on the real class it stands for, in its kind's surface (in at least
    one where its kind has no surface here)."""
    problems, checked = [], defaultdict(set)
    for owner, surface, obj in fakes_met:
        where = {surface: surfaces[surface]} if surface in surfaces else surfaces
        for name in sorted(_public_dir(obj)):
            for key in where:
                checked[key].add((owner, name))
            if not any(s.has(owner, name) for s in where.values()):
                labels = ", ".join(s.label for s in where.values())
                problems.append(f"{type(obj).__name__}.{name} (as {owner}, {surface}): not in {labels}")
    return list(dict.fromkeys(problems)), checked


# ---- driving ---------------------------------------------------------------------------------------------------


def fake_kinds() -> list[str]:
    """The fake TensorRT kinds trt_fakes offers: its KINDS where it names them, else the `kind` parameters'
    defaults and the strings its code compares `kind` with."""
    named = _REAL_GETATTR(fakes, "KINDS", None)
    if named:
        return list(named)
    kinds: list[str] = []
    for _, function in inspect.getmembers(fakes, inspect.isfunction):
        default = inspect.signature(function).parameters.get("kind")
        if default is not None and isinstance(default.default, str):
            kinds.append(default.default)
    for node in ast.walk(ast.parse(inspect.getsource(fakes))):
        if isinstance(node, ast.Compare) and any(_is_kind(n) for n in [node.left, *node.comparators]):
            kinds += [c.value for n in node.comparators for c in ast.walk(n) if isinstance(c, ast.Constant)]
    return sorted({k for k in kinds if isinstance(k, str)})


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "kind") or (
        isinstance(node, ast.Attribute) and node.attr == "kind"
    )


def run_runner(make: Callable[..., tuple[Any, Any]], folder: Path, kind: str, cuda_graphs: bool) -> None:
    """Two starts (the second finds the runtime cache the first saved), a few frames, every report."""
    runner, _ = make(folder, kind, cuda_graphs=cuda_graphs)
    for _ in range(2):
        with runner:
            for _ in range(3):
                runner.infer()
            runner.reset_state()
            runner.reset_state([0])  # one slot: a memset inside the state buffer
            runner.state_is_finite()
            runner.memory()
            _ = runner.device_name


def record_runner(recorder: Recorder, folder: Path) -> list[str]:
    """Drive the runner through the fakes of every kind, single engine and pair, with and without CUDA graphs;
    the drives' names."""
    original = fakes.fake_tensorrt

    def recorded_fake_tensorrt(*args: Any, **kwargs: Any) -> TensorRT:
        trt = original(*args, **kwargs)
        recorder.surface = surface_key(trt.flavour, trt.version)
        return dataclasses.replace(trt, module=recorder.wrap(trt.module, MODULE))

    drives = []
    with pytest.MonkeyPatch.context() as patch, probes_recorded():
        patch.setattr(fakes, "fake_tensorrt", recorded_fake_tensorrt)
        patch.setattr(trt_runner, "cuda_gpu", lambda: fakes.FAKE_GPU)
        for kind in fake_kinds():
            for make in (fakes.make_fake_runner, fakes.make_fake_pair):
                for cuda_graphs in (False, True):
                    recorder.drive = f"{kind} {make.__name__}{' cuda_graphs' if cuda_graphs else ''}"
                    run_runner(make, _fresh(folder / recorder.drive.replace(" ", "_")), kind, cuda_graphs)
                    drives.append(recorder.drive)
    return drives


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def record_builder(recorder: Recorder, folder: Path, rtx_key: str, standard_key: str) -> None:
    """Build the test graph with the real TensorRT-RTX behind recording proxies: as itself (its own branches),
    as a standard TensorRT 10 (timing cache; names checked against the 10.x stubs), and as one without strongly
    typed networks (8.6's precision flags; no 8.6 surface here). Also a parse error, for the parser's errors."""
    graph, broken = folder / "model.onnx", folder / "broken.onnx"
    fakes.tiny_state_graph(graph)
    broken.write_bytes(b"not an onnx graph")
    real = load_tensorrt("tensorrt_rtx")
    module = recorder.wrap(real.module, MODULE, returns="")  # the real module: not a fake to check
    as_standard = dataclasses.replace(real, module=module, flavour="tensorrt", version=standard_key.split()[1])
    drives = [
        ("tensorrt_rtx as itself", rtx_key, dataclasses.replace(real, module=module), frozenset()),
        ("tensorrt_rtx as a standard TensorRT", standard_key, as_standard, frozenset()),
        (
            "tensorrt_rtx as TensorRT 8",
            "tensorrt 8",
            as_standard,
            {("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")},
        ),
    ]
    with probes_recorded():
        for drive, surface, trt, hidden in drives:
            recorder.drive, recorder.surface, recorder.hidden = drive, surface, frozenset(hidden)
            options = build.BuildOptions(workspace_mib=64, opt_level=1, timing_cache=folder / "timing.cache")
            for precision in ("fp16", "int8"):
                builder, network, _parser = build.network_from_onnx(trt, graph)
                build.create_config(trt, builder, network, options, precision=precision)
            for _ in range(2):  # the second build merges the timing cache the first saved
                out = folder / f"{surface.replace(' ', '_')}.engine"
                build.build_engine(trt, graph, out, dataclasses.replace(options, opt_level=None))
            with pytest.raises(Exception, match="parser failed"):
                build.network_from_onnx(trt, broken)
            gpu_support(trt, fakes.FAKE_GPU)
    recorder.hidden = frozenset()


class CudartStandIn:
    """cuda-python's runtime for CudaPythonApi: FakeCudart where it has the name (real host memory); else, as the
    real module's name is: a class answers each member with its name, a function succeeds with a handle, a
    constant is its name. A name the real module lacks is a call too, so the check (not a crash) reports it."""

    def __init__(self, cudart: Any, real: ModuleType) -> None:
        self._cudart, self._real = cudart, real

    def __getattr__(self, name: str) -> Any:
        if _REAL_HASATTR(self._cudart, name):
            return _REAL_GETATTR(self._cudart, name)
        real = _REAL_GETATTR(self._real, name, len)
        if isinstance(real, type):
            return _Names()
        if callable(real):
            return lambda *args: (self._cudart.cudaError_t.cudaSuccess, _Handle(1))
        return name


class _Names:
    """An enum the stand-in lacks: every member is its own name."""

    def __getattr__(self, name: str) -> str:
        return name


class _Handle(int):
    """A handle any call can return; unpacks as (free, total) for cudaMemGetInfo."""

    def __iter__(self) -> Iterator[int]:
        return iter((1 << 30, 1 << 31))


def record_cuda(recorder: Recorder) -> Any:
    """Every CudaPythonApi method through a recording stand-in for cuda-python's runtime module; the
    FakeCudart behind it."""
    cudart = fakes.FakeCudart()
    recorder.drive, recorder.surface = "CudaPythonApi", CUDA
    recorder.targets.append((MODULE, CUDA, cudart))
    api = object.__new__(CudaPythonApi)  # __init__'s cudaSetDevice needs a driver: called below instead
    real = importlib.import_module("cuda.bindings.runtime")
    api.rt, api._pinned = recorder.wrap(CudartStandIn(cudart, real), MODULE, returns=""), {}
    with probes_recorded():
        api.call("cudaSetDevice", 0)
        host = api.host_array((2, 3), np.float32)
        back = api.host_array((2, 3), np.float32)
        device = api.device_buffer(host.nbytes)
        stream, start, end = api.create_stream(), api.create_event(), api.create_event()
        start.record(stream)
        api.memcpy_htod_async(device.ptr, host, stream)
        api.memset_async(device.ptr, 0, host.nbytes, stream)
        api.memcpy_dtoh_async(back, device.ptr, stream)
        end.record(stream)
        end.synchronize()
        start.elapsed_ms(end)
        stream.synchronize()
        api.mem_get_info()
        api.capture_graph(stream, lambda: None).launch(stream)
        api.capture_graph(stream, lambda: None).close()
        for handle in (start, end, stream):
            handle.close()
        device.free()
        api.free_host(host)
        api.free_host(back)
        api.close()
    return cudart


# ---- the records, made once ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Records:
    runner: Recorder
    drives: list[str]
    builder: Recorder
    cuda: Recorder


@pytest.fixture(scope="module")
def records(tensorrt_surfaces, cuda_surface, tmp_path_factory) -> Records:
    runner = recorder_for(tensorrt_surfaces)
    drives = record_runner(runner, tmp_path_factory.mktemp("runner"))
    builder = recorder_for(tensorrt_surfaces)
    rtx_key = next(k for k in tensorrt_surfaces if k.startswith("tensorrt_rtx"))
    standard_key = next(k for k in tensorrt_surfaces if k.startswith("tensorrt "))
    record_builder(builder, tmp_path_factory.mktemp("builder"), rtx_key, standard_key)
    cuda = recorder_for(cuda_surface)
    record_cuda(cuda)
    return Records(runner, drives, builder, cuda)


# ---- the tests ---------------------------------------------------------------------------------------------


def test_the_real_surfaces_are_read(tensorrt_surfaces, cuda_surface):
    """Anchors every surface has, so a parser that reads nothing cannot pass the checks below."""
    for surface in tensorrt_surfaces.values():
        assert surface.has("IExecutionContext", "execute_async_v3"), surface.label
        assert surface.has("ICudaEngine", "num_io_tensors"), surface.label  # an :ivar in the stubs
        assert surface.has("TensorIOMode", "INPUT"), surface.label  # an enum member
        assert surface.has(MODULE, "Runtime"), surface.label
        assert surface.returns[("Runtime", "deserialize_cuda_engine")] == "ICudaEngine", surface.label
    stubs = next(s for k, s in tensorrt_surfaces.items() if k.startswith("tensorrt "))
    assert stubs.has("IActivationLayer", "get_output")  # inherited from ILayer
    assert not stubs.has("ICudaEngine", "execute_async_v3")
    cuda = cuda_surface[CUDA]
    assert cuda.has(MODULE, "cudaMalloc")
    assert cuda.has("cudaError_t", "cudaSuccess")


def test_the_runner_uses_only_names_the_real_api_has(records, tensorrt_surfaces):
    problems, checked = check_uses(records.runner.uses, tensorrt_surfaces)
    assert len(records.drives) >= 2 * len(fake_kinds()) >= 6, records.drives
    assert checked, "the drives recorded nothing: the fakes are no longer made through fake_tensorrt"
    assert not problems, _report("runner names missing from the real API", problems, checked, tensorrt_surfaces)


def test_each_version_branch_of_the_runner_is_run_by_a_fake_of_that_kind(records, tensorrt_surfaces):
    problems = uncovered_branches(records.runner.uses, tensorrt_surfaces)
    assert not problems, "runner branches no fake runs:\n  " + "\n  ".join(problems)


def test_the_fakes_carry_only_names_the_real_api_has(records, tensorrt_surfaces, cuda_surface):
    surfaces = {**tensorrt_surfaces, **cuda_surface}
    met = fake_objects([*records.runner.targets, *records.cuda.targets], _all_classes(surfaces))
    problems, checked = check_fakes(met, surfaces)
    assert {owner for owner, _, _ in met} >= {MODULE, "Runtime", "ICudaEngine", "IExecutionContext"}, met
    assert not problems, _report("fake names missing from the real API", problems, checked, surfaces)


def test_the_builder_uses_only_names_the_real_api_has(records, tensorrt_surfaces):
    problems, checked = check_uses(records.builder.uses, tensorrt_surfaces)
    assert checked
    assert not problems, _report("builder names missing from the real API", problems, checked, tensorrt_surfaces)


def test_cuda_python_api_calls_only_functions_cuda_python_has(records, cuda_surface):
    problems, checked = check_uses(records.cuda.uses, cuda_surface)
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaGraphInstantiateWithFlags"} <= {n for _, n in checked[CUDA]}
    assert not problems, _report("cuda-python names missing", problems, checked, cuda_surface)


def test_counts_per_surface(records, tensorrt_surfaces, cuda_surface, capsys):
    """How many recorded names were checked against each real surface (written to the terminal)."""
    surfaces = {**tensorrt_surfaces, **cuda_surface}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    recorded = (("runner", records.runner, tensorrt_surfaces), ("builder", records.builder, tensorrt_surfaces))
    for what, recorder, against in (*recorded, ("CudaPythonApi", records.cuda, cuda_surface)):
        for key, names in check_uses(recorder.uses, against)[1].items():
            counts[key][what] = len(names)
    met = fake_objects([*records.runner.targets, *records.cuda.targets], _all_classes(surfaces))
    for key, names in check_fakes(met, surfaces)[1].items():
        counts[key]["fakes"] = len(names)
    lines = [
        f"{surfaces[k].label}: " + ", ".join(f"{n} {w} names" for w, n in sorted(c.items())) for k, c in counts.items()
    ]
    unavailable = sorted({u.surface for u in records.runner.uses + records.builder.uses} - set(surfaces))
    lines.append(f"no surface here for {', '.join(unavailable) or 'nothing'}: their names checked against any")
    with capsys.disabled():
        print("\nAPI surface checks:\n  " + "\n  ".join(lines))
    assert all(counts[k].get("runner", 0) + counts[k].get("CudaPythonApi", 0) > 0 for k in surfaces), lines


def test_a_planted_wrong_name_fails_every_check(tensorrt_surfaces, cuda_surface):
    """A misspelled call, a misspelled probe, a fake with a name the API lacks, a cuda-python call that does
    not exist: each is reported, by name; the right names beside them are not."""
    rtx_key = next(k for k in tensorrt_surfaces if k.startswith("tensorrt_rtx"))
    recorder = recorder_for(tensorrt_surfaces)
    recorder.surface, recorder.drive = rtx_key, "planted"
    engine = SimpleNamespace(num_io_tensors=1, create_execution_contxt=lambda: None)
    proxy = recorder.wrap(engine, "ICudaEngine")
    with probes_recorded():
        assert proxy.num_io_tensors == 1
        proxy.create_execution_contxt()
        assert not hasattr(proxy, "create_runtime_confg")
    problems, _ = check_uses(recorder.uses, tensorrt_surfaces)
    assert [p.split(" ")[0] for p in problems] == [
        "ICudaEngine.create_execution_contxt",
        "ICudaEngine.create_runtime_confg",
    ], problems

    context = SimpleNamespace(execute_async_v3=None, execute_async_v4=None)
    problems, _ = check_fakes([("IExecutionContext", rtx_key, context)], tensorrt_surfaces)
    assert problems == [f"SimpleNamespace.execute_async_v4 (as IExecutionContext, {rtx_key}): not in "
                        f"{tensorrt_surfaces[rtx_key].label}"], problems  # fmt: skip

    cuda = recorder_for(cuda_surface)
    cuda.surface = CUDA
    rt = cuda.wrap(SimpleNamespace(cudaMalloc=None, cudaMallocc=None), MODULE)
    _ = rt.cudaMalloc, rt.cudaMallocc
    assert [p.split(" ")[0] for p in check_uses(cuda.uses, cuda_surface)[0]] == ["module.cudaMallocc"]


def test_a_wrong_name_planted_in_the_runner_fails_the_check(tensorrt_surfaces, tmp_path, monkeypatch):
    """End to end: the runner itself probing a misspelled name and setting one on the runtime config."""
    from tempseg.runtime.backends import trt_engine

    weights_bytes = trt_engine.Engine.weights_bytes

    def misspelled(engine: Any) -> int | None:
        hasattr(engine.engine, "get_engine_stats")
        if engine.engine is not None and hasattr(engine.engine, "create_runtime_config"):
            engine.context.set_tensor_adress = None
        return weights_bytes(engine)

    monkeypatch.setattr(trt_engine.Engine, "weights_bytes", misspelled)
    recorder = recorder_for(tensorrt_surfaces)
    record_runner(recorder, tmp_path)
    problems, _ = check_uses(recorder.uses, tensorrt_surfaces)
    assert {p.split(" ")[0] for p in problems} == {
        "ICudaEngine.get_engine_stats",
        "IExecutionContext.set_tensor_adress",
    }, problems


# ---- helpers --------------------------------------------------------------------------------------------


def _all_classes(surfaces: Mapping[str, Surface]) -> set[str]:
    return {cls for s in surfaces.values() for cls in s.members} - {MODULE}


def _report(title: str, problems: list[str], checked: Counts, surfaces: Mapping[str, Surface]) -> str:
    counts = ", ".join(f"{len(v)} against {surfaces[k].label}" for k, v in checked.items() if k in surfaces)
    return f"{title} ({counts}):\n  " + "\n  ".join(problems)
