"""The user's own labelled video through every stage, as the README tells it: `make engine DATA=folder:PATH` /
`DATA=camvid:PATH`, then `make run`, on small generated trees (tests/datasets.py) of 7 and 11 classes.

What is checked is what the data's class table must reach: the graph's metadata, the overlay's colours, the
report's per-class IoU. And the Makefile's rules for DATA: a base per data set, a run directory that records its
data, a bad DATA refused in one line before make writes anything.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tempseg.common.classes import ClassTable
from tempseg.common.contract import read_onnx_contract
from tempseg.data.sources import dataset_classes
from tests.conftest import TINY, TINY_HW
from tests.datasets import write_camvid_tree, write_folder_tree
from tests.test_platform import make, ready_venv

H, W = TINY_HW
SIZE = (f"HEIGHT={H}", f"WIDTH={W}")


def make_in(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`make ARGS` over RUNS=tmp_path/runs with a ready venv (nothing installed) and this Python."""
    venv = ready_venv(tmp_path / "venv")
    return make(*args, f"RUNS={tmp_path / 'runs'}", f"VENV={venv}", f"PY={sys.executable}", timeout=timeout)


def run_on(tmp_path: Path, *extra: str, frames: int = 12) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """`make run` of the tiny model on ONNX Runtime, overlay PNGs and report into tmp_path: (result, report, PNGs)."""
    overlays, report = tmp_path / "overlay", tmp_path / "report.json"
    run_args = f"--overlay-dir {overlays} --labels-dir {tmp_path / 'labels'} --report {report} --warmup 1 --quiet"
    result = make_in(
        tmp_path,
        "run",
        f"MODEL={TINY}",
        "BACKEND=onnxruntime",
        f"FRAMES={frames}",
        *SIZE,
        *extra,
        f"RUN_ARGS={run_args}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(report.read_text()), overlays


def check_classes_reach_every_output(run_dir: Path, report: dict, overlays: Path, table: ClassTable) -> None:
    """The data's names and colours in the graph's metadata, its colours in the overlay, its names in the report."""
    contract = read_onnx_contract(run_dir / "model.fp16.onnx")
    assert contract.classes == table.names
    assert contract.palette == table.palette
    per_class = report["accuracy"]["per_class_iou"]
    assert list(per_class) == list(table.names)
    first = read_png(sorted(overlays.glob("*.png"))[0])
    colours = {tuple(int(c) for c in pixel) for pixel in first.reshape(-1, 3)}
    missing = [name for name, (r, g, b) in zip(table.names, table.palette, strict=True) if (b, g, r) not in colours]
    assert not missing, f"no pixel of these classes' colours in the overlay: {missing}"


def blended_as_the_palette(overlay: np.ndarray, frame: np.ndarray, labels: np.ndarray, table: ClassTable) -> bool:
    """Every pixel below the text rows and left of the legend is half the frame, half its class's colour."""
    colour = np.array([(b, g, r) for r, g, b in table.palette], np.uint8)[labels]
    expected = cv2.addWeighted(frame, 0.5, colour, 0.5, 0.0)
    region = (slice(16, None), slice(0, W - 16))  # the latency at the top left, the legend down the right edge
    return bool(np.abs(overlay[region].astype(int) - expected[region].astype(int)).max() <= 1)


def read_png(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


rtx = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.mark.slow
def test_folder_tree_of_7_classes_from_make_engine_to_make_run(tmp_path):
    """`make engine DATA=folder:PATH` trains the base on the data (its own base directory), fine-tunes, exports
    (and builds the engine, with TensorRT-RTX); `make run` without DATA runs on the data the model recorded."""
    tree = write_folder_tree(tmp_path / "own", classes=7)
    table = dataset_classes(tree.spec)
    goal = "engine" if rtx else "export"  # TensorRT-RTX builds engines without a GPU, where it is installed
    built = make_in(tmp_path, goal, f"MODEL={TINY}", f"DATA={tree.spec}", "PRESET=smoke", *SIZE)
    assert built.returncode == 0, built.stdout + built.stderr
    run_dir = tmp_path / "runs" / TINY
    [base] = (tmp_path / "runs").glob("fcresnet18x0.25/base*/checkpoint.pt")
    assert base.parent.name.startswith("base-folder-own-")
    assert (run_dir / "data.spec").read_text() == f"{tree.spec}\n"
    if rtx:
        assert (run_dir / "fp16.engine").is_file()

    _, report, overlays = run_on(tmp_path)
    assert report["source"] == tree.spec
    check_classes_reach_every_output(run_dir, report, overlays, table)
    overlay = read_png(overlays / "000000.png")
    labels = read_png(tmp_path / "labels" / "000000.png", cv2.IMREAD_GRAYSCALE)
    assert blended_as_the_palette(overlay, tree.frames["val/seq0"][0], labels, table)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folder", "camvid"])
def test_11_classes_through_make_run_with_data(tmp_path, layout):
    """`make run DATA=...` trains, exports and runs in one go: 11 classes, named and coloured as the data says
    (a folder tree with a video sequence; CamVid as distributed, its 11 classes)."""
    if layout == "folder":
        tree = write_folder_tree(tmp_path / "own", classes=11, video=True)
    else:
        tree = write_camvid_tree(tmp_path / "CamVid")
    table = dataset_classes(tree.spec)
    assert len(table) == 11
    # CamVid's val stills come after the video frames before them: the whole split (33 frames), two labelled
    _, report, overlays = run_on(
        tmp_path, f"DATA={tree.spec}", "PRESET=smoke", frames=12 if layout == "folder" else 300
    )
    assert report["source"] == tree.spec
    check_classes_reach_every_output(tmp_path / "runs" / TINY, report, overlays, table)


# ---- the Makefile's rules for DATA (make -n, or refusals: fast) ----------------------------------------------


def trains(result: subprocess.CompletedProcess) -> list[str]:
    return [line[line.index("--model") :] for line in result.stdout.splitlines() if " -m tempseg.train " in line]


def test_a_base_trained_on_other_data_is_not_taken(tmp_path):
    """The base of DATA=folder:... lives in base-folder-NAME-CKSUM: a synthetic base (runs/NAME/base) already
    there is not reused, and each training line reads the data."""
    (tmp_path / "runs" / "fcresnet18x0.25" / "base").mkdir(parents=True)
    (tmp_path / "runs" / "fcresnet18x0.25" / "base" / "checkpoint.pt").write_bytes(b"trained on synthetic")
    spec = f"folder:{tmp_path / 'street'}"
    result = make_in(tmp_path, "-n", "train", f"MODEL={TINY}", f"DATA={spec}")
    assert result.returncode == 0, result.stderr
    base, finetune = trains(result)
    slug = (
        f"base-folder-street-{subprocess.run(['cksum'], input=spec, capture_output=True, text=True).stdout.split()[0]}"
    )
    assert base.endswith(f'--data "{spec}" --stage base --out-dir "{tmp_path}/runs/fcresnet18x0.25/{slug}"'), base
    with_weights = make_in(tmp_path, "-n", "train", f"MODEL={TINY}", f"DATA={spec}", "BASE_ARGS=--pretrained r18.pth")
    assert trains(with_weights)[0] == f"{base} --pretrained r18.pth"  # ImageNet weights reach the base only
    assert (
        f'--data "{spec}" --stage finetune --init-from "{tmp_path}/runs/fcresnet18x0.25/{slug}/checkpoint.pt"'
        in finetune
    )
    synthetic = make_in(tmp_path, "-n", "train", f"MODEL={TINY}")
    assert [line for line in trains(synthetic) if "--stage base" in line] == []  # its base is there
    assert "--data" not in synthetic.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("folder:{tmp}/nowhere", "no such folder dataset directory"),
        ("folder:{tmp}", "classes.json"),
        ("camvid:{tmp}/nowhere", ""),
        ("videos:{tmp}", "has no class list"),
    ],
)
def test_a_bad_data_stops_in_one_line_before_make_writes_anything(tmp_path, spec, message):
    data = spec.format(tmp=tmp_path)
    result = make_in(tmp_path, "engine", f"MODEL={TINY}", f"DATA={data}", *SIZE)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    [line] = errors  # the data layer's line (make adds its own note of the failure)
    assert line.startswith("error: ")
    assert message in line
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_remembers_its_data(tmp_path):
    """DATA not given is the data the run directory was trained on; another DATA given is refused in one line."""
    run_dir = tmp_path / "runs" / TINY
    run_dir.mkdir(parents=True)
    for name in ("checkpoint.pt", "model.onnx", "model.fp16.onnx"):
        (run_dir / name).write_bytes(b"made")
    (run_dir / "data.spec").write_text("folder:/data/street\n")
    before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    default = make_in(tmp_path, "-n", "run", f"MODEL={TINY}", "BACKEND=onnxruntime", *SIZE)
    assert default.returncode == 0, default.stderr
    assert '--source "folder:/data/street"' in default.stdout
    other = make_in(tmp_path, "run", f"MODEL={TINY}", "DATA=camvid:/data/CamVid", *SIZE)
    assert other.returncode == 2
    [line] = other.stderr.splitlines()
    assert "was trained on DATA=folder:/data/street, not DATA=camvid:/data/CamVid" in line
    assert {p: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_make_help_lists_data_for_every_stage_that_takes_it():
    shown = make("help").stdout
    assert "DATA" in shown
    assert "make compare" in shown
    assert "[DATA=" in shown.split("make compare")[1].splitlines()[0]
