"""engine/: TensorRT-RTX engines built on the CPU, the build record beside them, and the checks made before loading.

The graphs are a small random-init variant (fcresnet18x0.25_t66 at 64x128) exported by export/ in
FP32 and FP16, plus an INT8 Q/DQ graph from ONNX Runtime's static quantization (calibration/ will
make the real one). Deserializing needs a GPU: that test is marked `gpu` and skips here.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tempseg.common.contract import Contract, read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import sha256_file
from tempseg.engine import build as engine_build
from tempseg.engine.__main__ import main as engine_main
from tempseg.engine.build import BuildOptions, build_engine, create_config, network_from_onnx
from tempseg.engine.inspect import main as inspect_main
from tempseg.engine.sidecar import check_engine, read_sidecar, sidecar_contract, sidecar_path
from tempseg.engine.trt import cuda_gpu, load_tensorrt
from tests.conftest import TINY, TINY_HW, run_python

MODEL = TINY
HEIGHT, WIDTH = TINY_HW
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
STAGE_LINE = re.compile(r"^stage engine: \d+\.\d\d s -> (\S+) \((\d+\.\d) MiB, (tensorrt|tensorrt_rtx) (\S+)\)$")


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def graphs(tiny_run) -> dict[str, tuple[Path, Contract]]:
    """precision -> (ONNX path, contract) of the shared tiny model: export/ and calibration/ made them."""
    names = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    return {p: (tiny_run / name, read_onnx_contract(tiny_run / name)) for p, name in names.items()}


@pytest.fixture(scope="session")
def rtx():
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx not installed (pip install -e '.[rtx]', x86-64 only)")
    return load_tensorrt("tensorrt_rtx")


@pytest.fixture(scope="session")
def fp16_engine(graphs, rtx, tmp_path_factory) -> Path:
    """One FP16 engine + record, built once through the library API, for the checks below."""
    path = tmp_path_factory.mktemp("engine") / "fp16.engine"
    build_engine(rtx, graphs["fp16"][0], path, BuildOptions(timing_cache=None))
    return path


@pytest.fixture
def engine_copy(fp16_engine, tmp_path) -> Path:
    """A private copy of the FP16 engine and its record, free to damage."""
    path = tmp_path / fp16_engine.name
    path.write_bytes(fp16_engine.read_bytes())
    sidecar_path(path).write_bytes(sidecar_path(fp16_engine).read_bytes())
    return path


def tiny_graph(path: Path, *, op: str = "Relu", domain: str = "") -> Path:
    """A one-node contract graph (image -> logits) made without torch; `op` in `domain` may be unknown."""
    node = helper.make_node(op, ["image"], ["logits"], domain=domain, name="only_node")
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


# ---- building ------------------------------------------------------------------------------------------


@pytest.mark.rtx
@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_cli_builds_engine_and_record_matching_the_contract(graphs, precision, tmp_path, capsys, caplog):
    onnx_path, contract = graphs[precision]
    out = tmp_path / f"{precision}.engine"
    caplog.set_level(logging.INFO, logger="tempseg.engine")
    rc = run_cli(
        engine_main, ["--onnx", str(onnx_path), "--out", str(out), "--flavour", "tensorrt_rtx", "--no-timing-cache"]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    match = STAGE_LINE.match(lines[0])
    assert match, lines[0]
    assert (match[1], match[3]) == (str(out), "tensorrt_rtx")

    size = out.stat().st_size
    assert size > 256 * 1024  # a real plan: the 0.25-width model has ~0.8 M weights
    assert abs(float(match[2]) - size / (1 << 20)) < 0.06
    record = read_sidecar(out)
    assert record["engine"] == {"file": out.name, "bytes": size, "sha256": sha256_file(out)}
    assert sidecar_contract(record) == contract == read_onnx_contract(onnx_path)
    assert (record["model"], record["precision"], record["input_hw"]) == (MODEL, precision, [HEIGHT, WIDTH])
    assert record["source_onnx"]["sha256"] == sha256_file(onnx_path)
    assert (record["tensorrt"]["flavour"], record["build"]["strongly_typed"]) == ("tensorrt_rtx", True)
    assert record["build"]["builder_flags"] == []  # strongly typed: the graph decides precision
    if cuda_gpu() is None:
        assert record["compute_capabilities"] == ["8.6", "8.9", "12.0"]
        assert record["device_memory"]["bytes"] is None
        assert "GPU" in record["device_memory"]["reason"]
        assert record["device_memory"]["build_log"]["activation_bytes"] > 0
        assert record["layers"]["source"] == "network_definition"

    io = {t["name"]: (t["name"], t["shape"], t["dtype"]) for t in record["io"]["inputs"] + record["io"]["outputs"]}
    wanted = [t for t in (contract.image, contract.logits, contract.labels) if t is not None]
    wanted_io = {t.name: (t.name, list(t.shape), t.dtype) for t in wanted}
    for s in contract.states:
        wanted_io[s.input] = (s.input, list(s.shape), s.dtype)
        wanted_io[s.output] = (s.output, list(s.shape), s.dtype)
    assert io == wanted_io

    logged = [
        r.getMessage() for r in caplog.records if r.name == "tempseg.engine" and r.getMessage().startswith("network ")
    ]
    assert len(logged) == len(wanted_io)
    for name, shape, dtype in wanted_io.values():
        assert any(f" {name} " in m and str(shape) in m and m.endswith(dtype) for m in logged), (name, logged)

    layer_types = {(layer["type"], layer["precision"]) for layer in record["layers"]["items"]}
    has_fp16_conv = ("CONVOLUTION", "float16") in layer_types
    has_qdq = any(t in ("QUANTIZE", "DEQUANTIZE") for t, _ in layer_types)
    assert (has_fp16_conv, has_qdq) == {"fp32": (False, False), "fp16": (True, False), "int8": (False, True)}[precision]


@pytest.mark.rtx
@needs_rtx
def test_timing_cache_is_written_then_loaded(graphs, rtx, tmp_path, monkeypatch, caplog):
    # TensorRT-RTX ignores timing caches (deprecated no-op), so the standard-TensorRT path is driven
    # through RTX's still-present API: the same calls, files and records.
    monkeypatch.setattr(engine_build, "timing_cache_supported", lambda trt: True)
    cache = tmp_path / "shared" / "timing.cache"
    options = BuildOptions(timing_cache=cache, inspect=False)
    first = build_engine(rtx, graphs["fp32"][0], tmp_path / "a.engine", options).sidecar["build"]["timing_cache"]
    assert cache.is_file()
    assert (first["loaded_bytes"], first["saved_bytes"]) == (0, cache.stat().st_size)
    assert first["saved_bytes"] > 0
    caplog.set_level(logging.INFO, logger="tempseg.engine")
    second = build_engine(rtx, graphs["fp16"][0], tmp_path / "b.engine", options).sidecar["build"]["timing_cache"]
    assert (second["used"], second["loaded_bytes"]) == (True, first["saved_bytes"])
    assert any(f"loaded timing cache {cache}" in r.getMessage() for r in caplog.records)


@pytest.mark.rtx
@needs_rtx
def test_rtx_leaves_the_timing_cache_alone(graphs, rtx, tmp_path):
    cache = tmp_path / "timing.cache"
    record = build_engine(rtx, graphs["fp32"][0], tmp_path / "e.engine", BuildOptions(timing_cache=cache)).sidecar
    assert not cache.exists()
    assert record["build"]["timing_cache"]["used"] is False
    assert "no-op" in record["build"]["timing_cache"]["note"]


@pytest.mark.rtx
@needs_rtx
def test_build_engines_writes_what_it_returns(graphs, tmp_path):
    """The library call behind the CLI (and bench/compare.py): a single graph is one build, its engine and record."""
    from tempseg.engine.pipeline import build_engines, stage_lines

    out = tmp_path / "fp16.engine"
    [result] = build_engines(graphs["fp16"][0], out, BuildOptions(timing_cache=None), flavour="tensorrt_rtx")
    assert (result.engine_path, result.sidecar_path) == (out, sidecar_path(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp16.engine", "fp16.engine.json"]
    assert result.engine_bytes == out.stat().st_size
    assert result.sha256 == sha256_file(out) == read_sidecar(out)["engine"]["sha256"]
    assert sidecar_contract(read_sidecar(out)) == graphs["fp16"][1]
    [line] = stage_lines([result], 1.5)
    match = STAGE_LINE.match(line)
    assert match, line
    assert (match[1], match[3]) == (str(out), "tensorrt_rtx")


@pytest.mark.rtx
@needs_rtx
def test_compute_capabilities_are_validated(rtx, tmp_path):
    builder, network, _parser = network_from_onnx(rtx, tiny_graph(tmp_path / "tiny.onnx"))
    config = create_config(rtx, builder, network, BuildOptions(timing_cache=None, compute_capabilities=("8.9",)))
    assert (config.compute_capabilities, config.compute_capability_source) == (["8.9"], "requested")
    assert config.config.num_compute_capabilities == 1
    with pytest.raises(UserError, match=r"'9\.0' is not a tensorrt_rtx .* target \(.*8\.9.*12\.0.*current\)"):
        create_config(rtx, builder, network, BuildOptions(timing_cache=None, compute_capabilities=("9.0",)))
    if cuda_gpu() is None:
        with pytest.raises(UserError, match="'current' needs a GPU"):
            create_config(rtx, builder, network, BuildOptions(timing_cache=None, compute_capabilities=("current",)))


@pytest.mark.rtx
@needs_rtx
def test_parser_errors_are_reported_in_full(rtx, tmp_path, caplog):
    path = tiny_graph(tmp_path / "custom.onnx", op="NoSuchOp", domain="tempseg.test")
    assert read_onnx_contract(path).model == "custom"  # valid ONNX and contract: only TensorRT refuses it
    with pytest.raises(UserError) as err:
        network_from_onnx(rtx, path)
    message = str(err.value)
    assert message.startswith(f"{path}: TensorRT's ONNX parser failed: 1 error(s): [1] ")
    assert "(node 0, only_node, NoSuchOp; " in message
    assert "\n" not in message
    assert any(
        r.name == "tempseg.engine.trt" and r.levelno >= logging.ERROR for r in caplog.records
    )  # TensorRT's log, routed


# ---- bad input: exit code 2, one line --------------------------------------------------------------------


def test_bad_onnx_exits_2_with_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    out = tmp_path / "fp32.engine"
    assert run_cli(engine_main, ["--onnx", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {bad}: not a valid ONNX model")
    assert not out.exists()
    assert not sidecar_path(out).exists()


def test_build_engines_raises_a_user_error_before_importing_tensorrt(tmp_path, monkeypatch):
    from tempseg.engine.pipeline import build_engines

    for name in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, name, None)  # a broken graph must stop before TensorRT is asked for
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(UserError, match="not a valid ONNX model"):
        build_engines(bad, tmp_path / "fp32.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_missing_tensorrt_exits_2_with_install_commands(tmp_path, capsys, monkeypatch):
    for name in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    graph = tiny_graph(tmp_path / "tiny.onnx")
    assert run_cli(engine_main, ["--onnx", str(graph), "--out", str(tmp_path / "x.engine")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: TensorRT is not importable (tensorrt: ")
    for hint in ("`pip install tensorrt`", "JetPack", "`pip install -e '.[rtx]'`"):
        assert hint in err[0]


def test_named_flavour_gives_only_its_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError, match="pip install tensorrt") as err:
        load_tensorrt("tensorrt")
    assert "rtx" not in str(err.value)
    with pytest.raises(ValueError, match="prefer must be one of"):
        load_tensorrt("onnxruntime")


@pytest.mark.rtx
@needs_rtx
def test_auto_falls_back_to_tensorrt_rtx(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    trt = load_tensorrt("auto")
    assert (trt.flavour, trt.version, trt.is_rtx) == ("tensorrt_rtx", trt.module.__version__, True)


def test_engine_package_imports_without_torch_or_tensorrt():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import tempseg.engine, tempseg.engine.build, tempseg.engine.trt, tempseg.engine.sidecar\n"
        "import tempseg.engine.inspect, tempseg.engine.pipeline, tempseg.engine.__main__\n"
        "assert not {'tensorrt', 'tensorrt_rtx', 'onnx'} & set(sys.modules), sorted(sys.modules)\n"
    )
    result = run_python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr


# ---- check_engine: what the runtime calls before deserializing ----------------------------------------


@pytest.mark.rtx
@needs_rtx
def test_check_engine_accepts_the_engine_it_recorded(engine_copy, rtx):
    expect = {
        "model": MODEL,
        "precision": "fp16",
        "input_hw": (HEIGHT, WIDTH),
        "flavour": "tensorrt_rtx",
        "tensorrt_version": rtx.version,
        "compute_capability": "8.9",
    }
    record = check_engine(engine_copy, expect=expect)
    assert record["engine"]["sha256"] == sha256_file(engine_copy)


@pytest.mark.rtx
@needs_rtx
def test_check_engine_refuses_a_truncated_engine(engine_copy):
    data = engine_copy.read_bytes()
    engine_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        UserError, match=rf"engine size differs: expected {len(data)} bytes .* file has {len(data) // 2};"
    ):
        check_engine(engine_copy)


@pytest.mark.rtx
@needs_rtx
def test_check_engine_refuses_an_altered_engine_of_the_same_size(engine_copy):
    data = bytearray(engine_copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine_copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"engine sha256 differs: expected [0-9a-f]{16}…, file has [0-9a-f]{16}…"):
        check_engine(engine_copy)


@pytest.mark.rtx
@needs_rtx
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model", "fcresnet34_t66", f"model differs: expected fcresnet34_t66, engine has {MODEL}"),
        ("precision", "int8", "precision differs: expected int8, engine has fp16"),
        ("input_hw", (256, 512), f"input size \\(H, W\\) differs: expected 256x512, engine has {HEIGHT}x{WIDTH}"),
        ("flavour", "tensorrt", "flavour differs: expected tensorrt, engine has tensorrt_rtx"),
        ("tensorrt_version", "10.3.0", r"tensorrt version differs: expected 10\.3\.0, engine has 1\.\d+"),
        (
            "compute_capability",
            "7.5",
            "compute capability differs: expected 7.5 \\(this GPU\\), engine has 8.6, 8.9, 12.0",
        ),
    ],
)
def test_check_engine_says_what_differs(engine_copy, key, value, message):
    if key == "compute_capability" and cuda_gpu() is not None:
        pytest.skip("targets depend on this machine's GPU")
    with pytest.raises(UserError, match=message) as err:
        check_engine(engine_copy, expect={key: value})
    assert err.value.path == str(engine_copy)


@pytest.mark.rtx
@needs_rtx
def test_check_engine_needs_the_engine_and_its_record(engine_copy):
    with pytest.raises(ValueError, match="unknown expectations"):
        check_engine(engine_copy, expect={"height": 64})
    sidecar_path(engine_copy).write_text(json.dumps({"sidecar_version": 99}))
    with pytest.raises(UserError, match="build record version 99 is not 1"):
        check_engine(engine_copy)
    sidecar_path(engine_copy).unlink()
    with pytest.raises(UserError, match=r"no build record fp16\.engine\.json beside the engine"):
        check_engine(engine_copy)
    engine_copy.unlink()
    with pytest.raises(UserError, match="engine file not found"):
        check_engine(engine_copy)


@pytest.mark.rtx
@needs_rtx
def test_inspect_cli_prints_the_record(graphs, engine_copy, capsys):
    assert inspect_main([str(engine_copy), "--layers"]) == 0
    out = capsys.readouterr().out
    state = graphs["fp16"][1].states[0]
    assert f"model        {MODEL}  precision fp16  input 1x{HEIGHT}x{WIDTH}" in out
    assert "tensorrt     tensorrt_rtx" in out
    assert f"input        {state.input} {list(state.shape)} float16" in out
    assert re.search(r"CONVOLUTION\s+float16", out)


# ---- GPU only ------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_engine_deserializes_and_the_inspector_lists_its_layers(graphs, tmp_path, trt_on_gpu):
    trt = trt_on_gpu
    record = build_engine(trt, graphs["fp16"][0], tmp_path / "fp16.engine", BuildOptions(timing_cache=None)).sidecar
    assert record["layers"]["source"] == "engine_inspector"
    assert record["layers"]["count"] > 0
    assert record["device_memory"]["bytes"] > 0
    assert cuda_gpu().compute_capability in record["compute_capabilities"]
