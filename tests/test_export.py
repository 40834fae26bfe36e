"""export/: the deployed graph computes the trained model's function, the CLI writes the contract's
graphs with their streaming parity, and refuses (writing nothing) when FP32 drifts."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tempseg.common.contract import read_onnx_contract
from tempseg.export import parity
from tempseg.export.__main__ import main as export_main
from tempseg.export.onnx_graph import simplify
from tempseg.export.parity import ort_session
from tempseg.export.reparam import SubPixelUpsample, deploy_model
from tests.conftest import TINY, TINY_HW, make_tiny_model


@pytest.mark.parametrize(("stride", "bias"), [(2, False), (2, True), (8, False), (8, True)])
def test_subpixel_upsample_is_the_transposed_convolution(stride, bias):
    torch.manual_seed(stride)
    deconv = nn.ConvTranspose2d(6, 5, 2 * stride, stride=stride, padding=stride // 2, bias=bias)
    x = torch.randn(2, 6, 5, 7)
    sub = SubPixelUpsample(deconv)
    with torch.no_grad():
        expected = deconv(x)
        torch.testing.assert_close(sub(x), expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(sub.labels(x), expected.argmax(1).to(torch.int32))


def test_subpixel_upsample_refuses_other_geometries():
    with pytest.raises(ValueError, match="not a kernel-2s"):
        SubPixelUpsample(nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1))


def test_deployed_model_has_no_transposed_convolution_and_the_same_outputs():
    model = make_tiny_model()
    deployed = deploy_model(model)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in deployed.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())  # the trained model is untouched
    image = torch.randn(1, 3, *TINY_HW)
    with torch.no_grad():
        states = model.initial_states(image)
        ref = model(image, *states)
        out = deployed(image, *states)
    for a, b in zip(ref, out, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The export CLI on the tiny checkpoint: labels-only (default) and --logits, each in its own folder."""
    out = {}
    for flavour, extra in (("labels", []), ("logits", ["--logits"])):
        folder = tmp_path_factory.mktemp(f"export_{flavour}")
        argv = ["--model", TINY, "--checkpoint", str(tiny_run / "checkpoint.pt"), "--out-dir", str(folder)]
        argv += ["--height", str(TINY_HW[0]), "--width", str(TINY_HW[1]), *extra]
        assert export_main(argv) == 0
        out[flavour] = folder
    return out


def _io(path):
    graph = onnx.load(str(path))
    elem = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in graph.graph.input}
    elem.update(
        {o.name: onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in graph.graph.output}
    )
    return [i.name for i in graph.graph.input], [o.name for o in graph.graph.output], elem, graph


def test_default_graphs_output_labels_and_states_only(exported):
    for name in ("model.onnx", "model.fp16.onnx"):
        inputs, outputs, dtypes, graph = _io(exported["labels"] / name)
        assert inputs == ["image", "state_in.0"]
        assert outputs == ["labels", "state_out.0"]
        assert (dtypes["image"], dtypes["labels"]) == (np.float32, np.int32)  # FP32 I/O even in the FP16 graph
        assert graph.opset_import[0].version == 17
        assert "ConvTranspose" not in {n.op_type for n in graph.graph.node}
        onnx.checker.check_model(graph, full_check=True)
    assert _io(exported["labels"] / "model.fp16.onnx")[2]["state_in.0"] == np.float16  # halves state memory
    contract = read_onnx_contract(exported["labels"] / "model.onnx")
    assert contract.logits is None
    assert contract.model == TINY


def test_logits_graph_outputs_logits_whose_argmax_is_the_labels(exported):
    _inputs, outputs, _, _ = _io(exported["logits"] / "model.onnx")
    assert outputs == ["logits", "labels", "state_out.0"]
    session = ort_session(str(exported["logits"] / "model.onnx"))
    feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in session.get_inputs()}
    logits, labels, _state = session.run(None, feeds)
    assert logits.shape == (1, 19, *TINY_HW)
    assert np.array_equal(labels, logits.argmax(1))


def test_labels_only_and_logits_graphs_agree_over_a_stream(exported):
    sessions = {k: ort_session(str(v / "model.onnx")) for k, v in exported.items()}
    states = {k: np.zeros(s.get_inputs()[1].shape, np.float32) for k, s in sessions.items()}
    rng = np.random.default_rng(1)
    for _ in range(5):
        image = rng.standard_normal((1, 3, *TINY_HW)).astype(np.float32)
        labels = {}
        for k, session in sessions.items():
            *_, labels[k], states[k] = session.run(None, {"image": image, "state_in.0": states[k]})
        assert (labels["labels"] == labels["logits"]).mean() > 0.9999
        np.testing.assert_allclose(states["labels"], states["logits"], atol=1e-4)


def test_export_report_holds_the_streaming_parity(exported):
    for folder in exported.values():
        report = json.loads((folder / "export.json").read_text())
        fp32, fp16 = report["parity"]["fp32"], report["parity"]["fp16"]
        assert fp32["frames"] == len(fp32["per_frame"]) == 30  # parity over at least 30 frames streamed with the state
        assert fp32["max_abs_logit_error"] < 1e-4
        assert fp32["min_label_agreement"] >= 0.9999
        assert fp16["mean_label_agreement"] >= 0.995
        assert fp16["max_abs_logit_error"] < 0.1
        assert set(report["files"]) == {"model.onnx", "model.fp16.onnx"}
        assert report["states"][0]["fp16_dtype"] == "float16"
    assert json.loads((exported["labels"] / "export.json").read_text())["outputs"] == ["labels"]


def test_drift_beyond_tolerance_fails_and_writes_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(parity, "FP32_MAX_ABS", 0.0)  # any rounding difference now counts as drift
    (tmp_path / "model.onnx").write_bytes(b"previous graph")
    argv = ["--model", TINY, "--checkpoint", str(tiny_run / "checkpoint.pt"), "--out-dir", str(tmp_path)]
    argv += ["--height", str(TINY_HW[0]), "--width", str(TINY_HW[1]), "--parity-frames", "3"]
    assert export_main(argv) == 1
    assert "model.onnx" in capsys.readouterr().err
    assert (tmp_path / "model.onnx").read_bytes() == b"previous graph"
    assert not (tmp_path / "model.fp16.onnx").exists()
    assert not (tmp_path / "export.json").exists()


def test_export_run_writes_the_graphs_it_returns(tiny_run, tmp_path):
    """The library call behind the CLI (and bench/compare.py): what it returns is what it wrote."""
    from tempseg.common.io import sha256_file
    from tempseg.export.pipeline import export_run

    result = export_run(
        tiny_run / "checkpoint.pt", tmp_path, model=TINY, height=TINY_HW[0], width=TINY_HW[1], parity_frames=3
    )
    assert result.paths == {"fp32": tmp_path / "model.onnx", "fp16": tmp_path / "model.fp16.onnx"}
    assert result.report_path == tmp_path / "export.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "model.fp16.onnx", "model.onnx"]
    assert json.loads(result.report_path.read_text()) == json.loads(json.dumps(result.report))
    assert result.report["files"]["model.onnx"]["sha256"] == sha256_file(result.paths["fp32"])
    assert result.report["files"]["model.fp16.onnx"]["sha256"] == sha256_file(result.paths["fp16"])
    assert result.parity["fp32"]["frames"] == 3
    assert result.parity["fp32"]["max_abs_logit_error"] < 1e-4
    assert read_onnx_contract(result.paths["fp16"]).source_onnx_sha256 == sha256_file(result.paths["fp32"])
    assert result.line.startswith("stage export: ")
    assert result.line.endswith(f" s -> {tmp_path / 'model.onnx'}, {tmp_path / 'model.fp16.onnx'}")


def test_export_run_raises_where_the_cli_exits(tiny_run, tmp_path, monkeypatch):
    """Bad input is a UserError and FP32 drift a ParityError, before anything is written."""
    from tempseg.common.errors import UserError
    from tempseg.export.pipeline import export_run

    checkpoint = tiny_run / "checkpoint.pt"
    with pytest.raises(UserError, match="height 250: try 224 or 256"):
        export_run(checkpoint, tmp_path, model=TINY, height=250, width=TINY_HW[1])
    with pytest.raises(UserError, match="at least 1"):
        export_run(checkpoint, tmp_path, model=TINY, height=TINY_HW[0], width=TINY_HW[1], batch=0)
    monkeypatch.setattr(parity, "FP32_MAX_ABS", 0.0)
    with pytest.raises(parity.ParityError, match=r"model\.onnx: FP32 parity failed"):
        export_run(checkpoint, tmp_path, model=TINY, height=TINY_HW[0], width=TINY_HW[1], parity_frames=2)
    assert not any(tmp_path.iterdir())


def test_simplify_falls_back_to_the_graph_with_a_warning(tiny_run, monkeypatch, caplog):
    import onnxsim

    def broken(graph):
        raise RuntimeError("unsupported op\nmore detail")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    graph = onnx.load(str(tiny_run / "model.onnx"))
    with caplog.at_level(logging.WARNING):
        assert simplify(graph) is graph
    assert "onnxsim failed (unsupported op)" in caplog.text
