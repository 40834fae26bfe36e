"""Model zoo: paper parameter counts, torchvision compatibility, the forward/state contract."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tempseg.common.errors import UserError, run_cli
from tempseg.models import (
    FCResNet,
    FCResNetConfig,
    FeedbackConnectionError,
    TemporalConnection,
    UnknownModelError,
    build_model,
    list_models,
    resolve_name,
)
from tempseg.models.__main__ import main as models_main
from tempseg.models.checkpoint import load_model, save_checkpoint
from tempseg.models.summary import count_parameters, format_summary, summarize
from tests.test_platform import make, ready_venv

SMALL = (64, 96)  # smallest convenient size divisible by 32


@pytest.mark.parametrize(
    ("name", "paper_m"),
    [("fcresnet18", 11.4), ("fcresnet34", 21.6), ("fcresnet18_t66", 11.5), ("fcresnet34_t66", 21.6)],
)
def test_parameter_count_within_3_percent_of_paper(name, paper_m):
    params = count_parameters(build_model(name))
    assert abs(params / 1e6 - paper_m) / paper_m < 0.03


@pytest.mark.parametrize(("depth", "torchvision_params"), [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_backbone_is_torchvision_resnet_without_fc(depth, torchvision_params):
    backbone = build_model(f"fcresnet{depth}").backbone
    fc = backbone.out_channels[-1] * 1000 + 1000  # torchvision's classifier, which we drop
    assert count_parameters(backbone) + fc == torchvision_params
    keys = set(backbone.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias"} <= keys


def test_concat_widens_the_consumer_and_paper_deltas_hold():
    base = count_parameters(build_model("fcresnet18"))
    # Table III deltas over the plain model (millions): 3-3 +0.4, 4-4 +1.4, 6-7 +0.1
    for tag, delta in (("t33", 0.4), ("t44", 1.4), ("t67", 0.1)):
        extra = (count_parameters(build_model(f"fcresnet18_{tag}")) - base) / 1e6
        assert abs(extra - delta) < 0.1, (tag, extra)
    assert build_model("fcresnet18_t44").backbone.layer4[0].conv1.in_channels == 512


def test_registry_names_and_errors():
    names = list_models()
    assert {"fcresnet18", "fcresnet50", "fcresnet18_t66", "fcresnet18_t55_add", "fcresnet18x0.5_t66"} <= set(names)
    assert len(names) == len(set(names))
    assert list_models("fcresnet34_t6*") == [
        "fcresnet34_t66",
        "fcresnet34_t66_add",
        "fcresnet34_t67",
        "fcresnet34_t67_add",
    ]
    with pytest.raises(UnknownModelError, match="did you mean fcresnet18_t66"):
        resolve_name("fcresnet18_t666")
    with pytest.raises(UnknownModelError, match="feedback connection 7-6"):
        resolve_name("fcresnet18_t76")
    with pytest.raises(FeedbackConnectionError):
        TemporalConnection(5, 3)


def test_width_scaling_shrinks_the_model():
    full, half = (count_parameters(build_model(n)) for n in ("fcresnet18_t66", "fcresnet18x0.5_t66"))
    assert 0.2 < half / full < 0.3  # conv weights scale with width squared


def test_input_size_must_divide_by_stride():
    with pytest.raises(ValueError, match="try 224 or 256"):
        build_model("fcresnet18").state_shapes(250, 512)


def _forward_contract(name: str) -> None:
    model = build_model(name).eval()
    size = SMALL if model.config.memory is None else (128, 160)  # a radius-4 window needs a map of 9+
    image = torch.randn(2, 3, *size)
    shapes = model.state_shapes(*size, batch=2)
    with torch.no_grad():
        logits, *states = model(image, *model.initial_states(image))
    assert logits.shape == (2, 19, *size)
    assert [tuple(s.shape) for s in states] == shapes
    family_states = 2 if model.config.memory is not None else 0 if model.config.temporal is None else 1
    assert model.num_states == len(shapes) == family_states


@pytest.mark.parametrize("name", list_models("fcresnet18x0.25*"))
def test_forward_contract_every_connection(name):
    _forward_contract(name)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in list_models()
        if n.endswith(("resnet18", "resnet34", "resnet50", "_t66")) and not n.startswith("fcresnet50_")
    ],
)
def test_forward_contract_every_depth_and_width(name):
    _forward_contract(name)


def test_streaming_equals_the_two_frame_scheme():
    torch.manual_seed(0)
    model = build_model("fcresnet18x0.25_t55").eval()
    frames = torch.randn(4, 1, 3, *SMALL)
    with torch.no_grad():
        state = model.initial_states(frames[0])
        for t in range(4):
            logits, *state = model(frames[t], *state)
            if t == 0:
                continue
            # the paper's scheme: run the previous frame for its feature, then the current one
            pair_logits, *_ = model(frames[t], *model.next_states(frames[t - 1]))
            torch.testing.assert_close(logits, pair_logits)


def test_add_merge_starts_as_the_frame_by_frame_model():
    torch.manual_seed(0)
    base = FCResNet(FCResNetConfig(18, width=0.25)).eval()
    temporal = FCResNet(FCResNetConfig(18, width=0.25, temporal=TemporalConnection(5, 5, "add"))).eval()
    temporal.load_state_dict(base.state_dict(), strict=False)
    image = torch.randn(1, 3, *SMALL)
    with torch.no_grad():
        state = temporal.next_states(torch.randn(1, 3, *SMALL))
        torch.testing.assert_close(temporal(image, *state)[0], base(image)[0])


def test_wrong_state_count_is_refused():
    with pytest.raises(ValueError, match="takes 1 state"):
        build_model("fcresnet18x0.25_t66")(torch.zeros(1, 3, *SMALL))


def test_summary_reports_state_bytes():
    info = summarize("fcresnet18_t66", height=256, width=512)
    assert info["states"][0]["shape"] == [1, 19, 16, 32]
    assert info["state_bytes_fp32"] == 19 * 16 * 32 * 4
    assert info["gflops"] > 1


def test_summary_of_a_keyframe_model_feeds_its_update_graph_a_flow():
    """An Accel model without a flow net reads its flow from the host: the summary gives it one to count FLOPs."""
    info = summarize("fcresnet18x0.25_accel18x0.25", height=64, width=128)
    assert info["states"][0]["shape"] == [1, 19, 8, 16]
    assert info["gflops"] > 0
    assert "keyframes (Accel)" in format_summary(info)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = build_model("fcresnet18x0.25_t66")
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, "fcresnet18x0.25_t66", epoch=3)
    loaded, payload = load_model(path, expect_model="fcresnet18x0.25_t66", expect_classes=19)
    assert payload["epoch"] == 3
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(UserError, match="not 'fcresnet18_t66'"):
        load_model(path, expect_model="fcresnet18_t66")
    with pytest.raises(UserError, match="has 19 classes, not 12"):
        load_model(path, expect_classes=12)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(UserError, match="not a tempseg checkpoint"):
        load_model(foreign)
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.pt")


# ---- the base and the reference of a model: the registry's command line, and the Makefile asking it ----------

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("query", "name", "answer"),
    [
        ("--base", "fcresnet18x0.5_t66", "fcresnet18x0.5"),
        ("--base", "fcresnet18_t66+tc", "fcresnet18"),  # a training variant: its architecture's base
        ("--base", "fcresnet18x0.5_accel34", "fcresnet18x0.5"),  # the update network's
        ("--reference", "fcresnet18x0.5_accel34", "fcresnet34"),
        ("--reference", "fcresnet18x0.5_accel34x0.5_flownet", "fcresnet34x0.5"),
        ("--reference", "fcresnet18_t66", ""),  # no reference: an empty line
    ],
)
def test_cli_names_the_base_and_the_reference(capsys, query, name, answer):
    assert run_cli(models_main, [query, name]) == 0
    assert capsys.readouterr().out == answer + "\n"


def test_python_m_tempseg_models_answers_the_makefile_in_one_line():
    """What the Makefile runs: the name alone on stdout; a bad name (even one whose prefix is a base) is refused
    in one line with exit 2, before anything would be trained from it."""

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "tempseg.models", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    assert run("--base", "fcresnet18x0.5_t66").stdout == "fcresnet18x0.5\n"
    for query in ("--base", "--reference"):
        bad = run(query, "fcresnet18_t9")
        assert (bad.returncode, bad.stdout) == (2, ""), bad.stderr
        [line] = bad.stderr.splitlines()
        assert line.startswith("error: unknown model 'fcresnet18_t9'"), line


def _make_n(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`make -n ARGS` over runs in tmp_path with a ready venv: the commands make would run, none of them run
    (only the lines that ask the registry and call the sub-make, as make runs $(MAKE) lines under -n)."""
    runs = tmp_path / "runs"
    venv = ready_venv(tmp_path / "venv")
    result = make("-n", *args, f"RUNS={runs}", f"VENV={venv}", f"PY={sys.executable}")
    return result, runs


def _trains(result: subprocess.CompletedProcess) -> list[str]:
    """The training commands in make's output, from `--model` on."""
    return [line[line.index("--model") :] for line in result.stdout.splitlines() if " -m tempseg.train " in line]


def _base_line(runs: Path, name: str) -> str:
    return f'--model "{name}" --preset "default" --stage base --out-dir "{runs}/{name}/base"'


def test_make_base_trains_the_base_the_registry_names_only_where_it_is_missing(tmp_path):
    result, runs = _make_n(tmp_path, "base", "MODEL=fcresnet18_t66")
    assert result.returncode == 0, result.stderr
    assert _trains(result) == [_base_line(runs, "fcresnet18")]
    (runs / "fcresnet18" / "base").mkdir(parents=True)
    (runs / "fcresnet18" / "base" / "checkpoint.pt").write_bytes(b"trained")
    again, _ = _make_n(tmp_path, "base", "MODEL=fcresnet18_t66")
    assert again.returncode == 0, again.stderr
    assert _trains(again) == []


def test_make_train_of_a_keyframe_model_trains_both_bases_then_fine_tunes_from_them(tmp_path):
    result, runs = _make_n(tmp_path, "train", "MODEL=fcresnet18x0.5_accel34")
    assert result.returncode == 0, result.stderr
    base, reference = (f"{runs}/{name}/base/checkpoint.pt" for name in ("fcresnet18x0.5", "fcresnet34"))
    assert _trains(result) == [
        _base_line(runs, "fcresnet18x0.5"),
        _base_line(runs, "fcresnet34"),
        f'--model "fcresnet18x0.5_accel34" --preset "default" --stage finetune --init-from "{base}" '
        f'--reference-from "{reference}" --out-dir "{runs}/fcresnet18x0.5_accel34" ',
    ]
    # a model without a reference, whose base is there: the fine-tune alone, no --reference-from
    Path(base).parent.mkdir(parents=True)
    Path(base).write_bytes(b"trained")
    plain, _ = _make_n(tmp_path, "train", "MODEL=fcresnet18x0.5_t66")
    assert plain.returncode == 0, plain.stderr
    [finetune] = _trains(plain)
    assert f'--stage finetune --init-from "{base}"  --out-dir "{runs}/fcresnet18x0.5_t66" ' in finetune


def test_make_train_with_a_bad_name_stops_with_the_registry_error_and_trains_nothing(tmp_path):
    for goal in ("train", "base"):
        result, _ = _make_n(tmp_path, goal, "MODEL=fcresnet18_t9")  # its prefix is a base: the name is checked
        assert result.returncode == 2, result.stdout
        assert _trains(result) == []
        errors = [line for line in result.stderr.splitlines() if not line.startswith("make")]
        assert len(errors) == 1, result.stderr  # the registry's one line (and make's own note of the failure)
        assert errors[0].startswith("error: unknown model 'fcresnet18_t9'")


def test_make_train_with_a_checkpoint_asks_nothing(tmp_path):
    """A run directory copied over with its checkpoint (any name, no base): make neither trains nor asks the
    registry, which needs torch."""
    result, runs = _make_n(tmp_path / "a", "train", "MODEL=m")  # m: a name only the run directory knows
    assert result.returncode == 2  # no checkpoint: make asks the registry, which refuses the name
    (runs / "m").mkdir(parents=True)
    (runs / "m" / "checkpoint.pt").write_bytes(b"trained")
    result, _ = _make_n(tmp_path / "a", "train", "MODEL=m")
    assert result.returncode == 0, result.stderr
    assert "tempseg.models" not in result.stdout
    assert _trains(result) == []
