"""Training on a user's own labelled video: the head, loss weights, checkpoint and graph metadata follow the
data's classes; a base trained on other classes gives all but its classifier; bad specs fail in one line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from tempseg.common.classes import ClassTable
from tempseg.common.contract import read_onnx_contract
from tempseg.common.errors import UserError, run_cli
from tempseg.data.classes import CITYSCAPES
from tempseg.data.sources import dataset_classes
from tempseg.export.pipeline import export_run
from tempseg.models import FCResNet, build_model, random_model
from tempseg.models.checkpoint import checkpoint_classes, read_checkpoint, save_checkpoint
from tempseg.train.__main__ import main as train_main
from tempseg.train.__main__ import parse_args
from tempseg.train.config import preset_config
from tempseg.train.init import class_dependent, init_from_checkpoint
from tempseg.train.trainer import TrainingRun
from tests.conftest import TINY, TINY_HW
from tests.datasets import WrittenTree, write_camvid_tree, write_folder_tree

BASE = "fcresnet18x0.25"  # TINY's frame-by-frame base


def _train(out: Path, *extra: str) -> Path:
    """A two-step smoke run of the tiny model; its checkpoint."""
    assert train_main(["--model", TINY, "--preset", "smoke", "--steps", "2", "--out-dir", str(out), *extra]) == 0
    return out / "checkpoint.pt"


def _export(checkpoint: Path, out: Path, model: str = TINY) -> ClassTable:
    """Export `checkpoint` and read the class table back from its graphs' metadata (the same in both)."""
    export_run(checkpoint, out, model=model, height=TINY_HW[0], width=TINY_HW[1], parity_frames=2)
    contracts = [read_onnx_contract(out / graph) for graph in ("model.onnx", "model.fp16.onnx")]
    tables = {ClassTable(c.classes, c.palette) for c in contracts}
    assert len(tables) == 1
    return tables.pop()


def _table(tree: WrittenTree) -> ClassTable:
    meta = json.loads((tree.root / "classes.json").read_text())
    return ClassTable(tuple(meta["names"]), tuple(tuple(c) for c in meta["colors"]))


@pytest.mark.parametrize("classes", [7, 11])
def test_a_folder_tree_trains_a_head_of_its_classes_and_exports_its_names(tmp_path, classes):
    tree = write_folder_tree(tmp_path / "data", classes=classes)
    checkpoint = _train(tmp_path / "run", "--data", tree.spec)
    payload = read_checkpoint(checkpoint)
    assert payload["config"]["num_classes"] == classes
    assert payload["state_dict"]["upscore8.weight"].shape[:2] == (classes, classes)
    assert checkpoint_classes(payload) == _table(tree)
    last = json.loads((tmp_path / "run" / "train.json").read_text())["epochs"][-1]
    assert list(last["val_per_class_iou"]) == list(_table(tree).names)  # scored on the val split's labels
    assert last["val_frames"] > 0
    assert _export(checkpoint, tmp_path / "export") == _table(tree)


def test_a_camvid_tree_trains_a_head_of_its_11_classes(tmp_path):
    tree = write_camvid_tree(tmp_path / "camvid")
    checkpoint = _train(tmp_path / "run", "--data", tree.spec)
    classes = checkpoint_classes(read_checkpoint(checkpoint))
    assert classes == dataset_classes(tree.spec)
    assert classes is not None
    assert len(classes) == 11
    assert classes.names[0] == "Sky"


def test_loss_weights_count_the_labelled_frames_over_the_datas_classes(tmp_path):
    tree = write_folder_tree(tmp_path / "data", classes=7)
    run = TrainingRun(preset_config("smoke", "base", model=TINY, data=tree.spec))
    assert run.clip_length == 2  # frame 0 of each clip is unlabelled: its labels must not be all that is counted
    assert run.weights.shape == (7,)
    unseen = 1 / math.log(1.10)  # the weight of a class no pixel was counted for
    assert all(w < unseen for w in run.weights.tolist())


def test_synthetic_data_keeps_the_19_cityscapes_classes_and_their_metadata(tmp_path):
    checkpoint = _train(tmp_path / "run")
    payload = read_checkpoint(checkpoint)
    assert payload["config"]["num_classes"] == 19
    assert checkpoint_classes(payload) == CITYSCAPES
    assert _export(checkpoint, tmp_path / "export") == CITYSCAPES
    # A checkpoint written before checkpoints kept their classes exports as it always did.
    older = tmp_path / "older" / "checkpoint.pt"
    save_checkpoint(older, random_model(TINY), TINY)
    assert "classes" not in read_checkpoint(older)
    assert _export(older, tmp_path / "older") == CITYSCAPES


def _fcresnet(name: str, num_classes: int) -> FCResNet:
    model = build_model(name, num_classes=num_classes)
    assert isinstance(model, FCResNet)
    return model


def test_a_checkpoints_class_table_must_fit_its_head(tmp_path):
    model = random_model(TINY)
    with pytest.raises(ValueError, match="19 classes but the class table lists 7"):
        save_checkpoint(tmp_path / "c.pt", model, TINY, classes=ClassTable(("a",) * 7, ((0, 0, 0),) * 7))
    save_checkpoint(tmp_path / "c.pt", model, TINY, classes=CITYSCAPES)
    payload = read_checkpoint(tmp_path / "c.pt")
    payload["classes"]["names"] = payload["classes"]["names"][:5]
    with pytest.raises(UserError, match="class table does not read"):  # 5 names, 19 colours
        checkpoint_classes(payload)


def _perturbed_base(num_classes: int = 19) -> FCResNet:
    """A base as if trained: no tensor at its fresh init."""
    torch.manual_seed(1)
    base = _fcresnet(BASE, num_classes).eval()
    with torch.no_grad():
        for tensor in base.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    return base


def test_a_base_of_other_classes_gives_all_but_its_classifier(tmp_path, caplog):
    base = _perturbed_base(19)
    save_checkpoint(tmp_path / "base.pt", base, BASE, classes=CITYSCAPES)
    eleven = ClassTable(tuple(f"c{k}" for k in range(11)), tuple((k, k, k) for k in range(11)))
    torch.manual_seed(2)
    model = _fcresnet(TINY, 11)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="tempseg.train.init"):
        init_from_checkpoint(model, tmp_path / "base.pt", classes=eleven)
    head = class_dependent(model)
    assert {"score_fr.weight", "upscore2.weight", "upscore8.weight"} <= head
    assert not any(k.startswith("backbone.") for k in head)
    state, source = model.state_dict(), base.state_dict()
    for name in head:
        assert torch.equal(state[name], fresh[name]), name  # left at this model's own init
    for name in ("backbone.conv1.weight", "backbone.layer4.1.conv2.weight", "backbone.bn1.running_mean"):
        assert torch.equal(state[name], source[name]), name
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("init:")]
    assert "classifier layers" in line
    assert "19 classes, the data 11" in line


def test_a_base_of_as_many_but_other_classes_gives_no_classifier_either(tmp_path):
    names = ClassTable(tuple(f"a{k}" for k in range(7)), tuple((k, 0, 0) for k in range(7)))
    others = ClassTable(tuple(f"b{k}" for k in range(7)), tuple((0, k, 0) for k in range(7)))
    base = _perturbed_base(7)
    save_checkpoint(tmp_path / "base.pt", base, BASE, classes=names)
    same, other = _fcresnet(BASE, 7), _fcresnet(BASE, 7)
    init_from_checkpoint(same, tmp_path / "base.pt", classes=names)
    init_from_checkpoint(other, tmp_path / "base.pt", classes=others)
    assert torch.equal(same.score_fr.weight, base.score_fr.weight)
    assert not torch.equal(other.score_fr.weight, base.score_fr.weight)
    assert torch.equal(other.backbone.conv1.weight, base.backbone.conv1.weight)


def test_finetune_on_own_data_from_a_synthetic_base_and_a_teacher_of_other_classes(tmp_path, capsys):
    tree = write_folder_tree(tmp_path / "data", classes=11)
    save_checkpoint(tmp_path / "base.pt", _perturbed_base(19), BASE, classes=CITYSCAPES)
    argv = ["--model", TINY, "--preset", "smoke", "--stage", "finetune", "--data", tree.spec]
    assert train_main([*argv, "--init-from", str(tmp_path / "base.pt"), "--out-dir", str(tmp_path / "ft")]) == 0
    assert read_checkpoint(tmp_path / "ft" / "checkpoint.pt")["config"]["num_classes"] == 11
    capsys.readouterr()
    kd = ["--init-from", str(tmp_path / "ft" / "checkpoint.pt"), "--teacher", str(tmp_path / "base.pt")]
    assert run_cli(train_main, [*argv, *kd, "--kd-loss", "0.1", "--out-dir", str(tmp_path / "kd")]) == 2
    assert "teacher has 19 classes, the data 11" in capsys.readouterr().err
    assert not (tmp_path / "kd").exists()


def test_pretrained_encoder_with_a_head_of_the_datas_classes(tmp_path, caplog):
    tree = write_folder_tree(tmp_path / "data", classes=7)
    state = dict(_fcresnet(BASE, 19).backbone.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 128), torch.zeros(1000)  # torchvision's classifier
    torch.save(state, tmp_path / "resnet18.pth")
    with caplog.at_level(logging.INFO, logger="tempseg.train.init"):
        checkpoint = _train(tmp_path / "run", "--data", tree.spec, "--pretrained", str(tmp_path / "resnet18.pth"))
    assert read_checkpoint(checkpoint)["config"]["num_classes"] == 7
    assert any(r.getMessage().startswith("pretrained: ") for r in caplog.records)


def test_help_documents_own_data_and_pretrained_together(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec in ("folder:PATH", "camvid:PATH"):
        assert spec in text
    data, pretrained = text.index("--data DATA "), text.index("--pretrained PRETRAINED ")
    assert data < pretrained < text.index("--steps STEPS ")  # next to each other
    assert "small datasets need it" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pictures:/tmp", "use synthetic, cityscapes:PATH, folder:PATH, camvid:PATH"),
        ("folder:", "use synthetic, cityscapes:PATH, folder:PATH"),
        ("folder:{root}/missing", "no such folder dataset directory"),
        ("folder:{root}/no_val", "val"),
    ],
    ids=["unknown scheme", "no path", "missing folder", "no val split"],
)
def test_bad_data_fails_in_one_line_and_writes_nothing(tmp_path, capsys, spec, message):
    write_folder_tree(tmp_path / "no_val", classes=7, splits=("train",))
    out = tmp_path / "run"
    argv = ["--model", TINY, "--preset", "smoke", "--data", spec.format(root=tmp_path), "--out-dir", str(out)]
    assert run_cli(train_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert not out.exists()
