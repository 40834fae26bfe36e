"""`make compare DATA=folder:PATH` / `python -m bench.compare --data SPEC`: every row trained, calibrated and
scored on the user's labelled video, with its classes, DIS-flow TC and no made-up clean/degraded split; the
Makefile passes DATA through, and the bases compare trains are named as the Makefile names them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from bench.artefacts import base_dir
from tests.conftest import TINY, TINY_HW
from tests.datasets import write_folder_tree
from tests.test_platform import make, ready_venv

CONTROL = "fcresnet18x0.25"  # TINY's frame-by-frame control (and its base)


def make_n(tmp_path: Path, *args: str) -> str:
    """`make -n ARGS` over RUNS=tmp_path/runs with a ready venv (nothing installed): the commands it would run."""
    venv = ready_venv(tmp_path / "venv")
    result = make("-n", *args, f"RUNS={tmp_path / 'runs'}", f"VENV={venv}", f"PY={sys.executable}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_compare_passes_data_through(tmp_path):
    spec = f"folder:{tmp_path / 'street'}"
    line = make_n(tmp_path, "compare", f"MODELS={TINY}", f"DATA={spec}").strip().splitlines()[-1]
    assert " -m bench.compare " in line
    assert f'--data "{spec}"' in line, line
    assert "--data" not in make_n(tmp_path, "compare", f"MODELS={TINY}")  # synthetic: the command line as before


@pytest.mark.parametrize("tail", ["street", "data/CamVid/", "street:val"])
@pytest.mark.parametrize("kind", ["folder", "camvid"])
def test_compare_names_bases_as_the_makefile_does(tmp_path, kind, tail):
    spec = f"{kind}:{tmp_path / tail}"
    out = make_n(tmp_path, "train", f"MODEL={TINY}", f"DATA={spec}")
    base = re.search(r'--stage base --out-dir "([^"]+)"', out)
    assert base is not None, out
    assert Path(base[1]) == tmp_path / "runs" / CONTROL / base_dir(spec)
    assert base_dir("synthetic") == "base"


def test_a_row_trained_on_other_data_is_refused_before_anything_runs(tmp_path):
    from bench.artefacts import build_artefacts
    from tempseg.common.errors import UserError

    run = tmp_path / "runs" / TINY
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"trained on synthetic")  # no data.spec: synthetic, as the Makefile reads it
    kwargs = {"engines": False, "preset": "smoke", "height": 64, "width": 128, "runs": tmp_path / "runs", "frames": 8}
    with pytest.raises(UserError, match="trained on DATA=synthetic, not DATA=folder:"):
        build_artefacts(TINY, ["fp32"], **kwargs, data=f"folder:{tmp_path / 'street'}")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # nothing written


@pytest.mark.slow
def test_compare_on_a_folder_tree_scores_its_val_split_with_its_classes(tmp_path, capsys):
    from bench.compare import main

    tree = write_folder_tree(tmp_path / "street", classes=7)
    runs = tmp_path / "runs"
    args = ["--models", CONTROL, TINY, "--precisions", "fp32", "--preset", "smoke", "--data", tree.spec]
    args += ["--height", str(TINY_HW[0]), "--width", str(TINY_HW[1]), "--backend", "onnxruntime", "--no-engines"]
    assert main([*args, "--runs", str(runs)]) == 0
    capsys.readouterr()
    assert (runs / CONTROL / base_dir(tree.spec) / "checkpoint.pt").is_file()
    assert not (runs / CONTROL / "base").exists()  # no synthetic base
    assert (runs / TINY / "data.spec").read_text() == f"{tree.spec}\n"
    table = json.loads((runs / "compare.json").read_text())
    assert table["recipe"]["data"] == tree.spec
    for report in table["reports"]:
        assert report["source"] == f"{tree.spec} val, 2 sequences, 12 frames (6 labelled), TC with DIS flow"
        assert report["accuracy"]["tc_flow"] == "dis"
        assert list(report["accuracy"]["per_class_iou_clean"]) == [f"class{k}" for k in range(7)]
    row = next(r for r in table["rows"] if r["model"] == TINY)
    assert row["d_miou_clean"] is not None
    assert len(row["d_miou_clean_ci"]) == 2
    assert row["d_miou_degraded"] is None  # no degraded frames: no figure made up for them
    text = (runs / "compare.md").read_text()
    assert "| model | " + " | ".join(f"class{k}" for k in range(7)) + " |" in text
    assert "Per-class IoU, all frames, FP32:" in text
    assert "with DIS optical flow" in text
    assert "No clean/degraded split" in text
    assert "mIoU degraded" not in text
    assert "| model | all frames |" in text
