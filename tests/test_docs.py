"""`make docs`: the committed pages and CLI reference are what bench/docs.py generates from the sources, and the
generator prints what the result files record (deltas with their intervals, bytes in MiB of 2^20)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import docs
from tests.conftest import REPO

MIB = 2**20


@pytest.fixture(scope="module")
def expected() -> dict[Path, str]:
    return docs.expected_files(REPO)


def test_committed_docs_are_generated(expected: dict[Path, str]) -> None:
    stale = [line for line in docs.differences(REPO, expected) if not line.startswith(str(docs.README))]
    assert not stale, "docs/ differs from what bench/docs.py writes, run make docs:\n" + "\n".join(stale)


def test_readme_headline_block_is_generated() -> None:
    readme = (REPO / docs.README).read_text()
    updated = docs.with_headline(readme, docs.headline_table(REPO / docs.RESULTS))
    if updated is None:
        pytest.skip("README.md has no headline markers")
    assert updated == readme, "README.md's headline block differs from bench/results: run make docs"


def test_cli_reference_names_every_runtime_option() -> None:
    text = (REPO / docs.CLI_PAGE).read_text()
    section = text.split("\n## python -m tempseg.runtime\n", 1)[1].split("\n## ", 1)[0]
    parser = docs.command_parser("tempseg.runtime")
    options = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
    missing = [o for o in options if not re.search(f"`{re.escape(o)}[ `,]", section)]
    assert len(options) > 10
    assert not missing, f"docs/cli.md lacks {missing} of python -m tempseg.runtime: run make docs"


def compare_record(engine_bytes: int) -> dict:
    """A compare-*.json of two FP16 rows: the control and fcresnet18_t66 with Δ clean +2.5 [+1.1, +3.9]; its
    `engine_mb` is what 1e6-byte megabytes would give, so a page that printed it would be caught."""

    def row(model: str, delta: float | None, ci: list[float] | None) -> dict:
        return {
            "model": model,
            "precision": "fp16",
            "params_m": 11.304 if delta is not None else 11.298,
            "engine_mb": round(engine_bytes / 1e6, 2),
            "p50_ms": 40.0 if delta is not None else 50.0,
            "p99_ms": 60.0,
            "miou_clean": 0.41,
            "miou_degraded": 0.29,
            "d_miou_clean": delta,
            "d_miou_clean_ci": ci,
            "d_miou_degraded": None if delta is None else -0.7,
            "d_miou_degraded_ci": None if delta is None else [-1.4, -0.1],
            "d_latency": None if delta is None else -20.0,
        }

    def report(model: str, state: int) -> dict:
        memory = {"params": 11_298_000, "weights_bytes": 21 * MIB, "state_bytes": state}
        return {
            "model": model,
            "precision": "fp16",
            "backend": "onnxruntime",
            "device": "cpu",
            "host": "vm x86_64",
            "created": "2030-01-01T00:00:00+00:00",
            "source": "synthetic val",
            "input_hw": [256, 512],
            "memory": memory,
        }

    return {
        "recipe_text": "Recipe: one for every row.",
        "rows": [row("fcresnet18", None, None), row("fcresnet18_t66", 2.5, [1.1, 3.9])],
        "reports": [report("fcresnet18", 0), report("fcresnet18_t66", 38912)],
        "engines": [
            {"model": m, "precision": "fp16", "engine_file_bytes": engine_bytes, "activation_bytes": 2 * MIB}
            | {"tensorrt": "tensorrt_rtx 1.7", "compute_capabilities": ["8.9"]}
            for m in ("fcresnet18", "fcresnet18_t66")
        ],
        "state_gain": {},
    }


def soak_record(growth_bytes: int) -> dict:
    rss = [100 * MIB, 100 * MIB + growth_bytes // 2, 100 * MIB + growth_bytes]
    return {
        "date": "2030-01-02",
        "host": "vm x86_64",
        "device": "cpu",
        "command": "python -m bench.soak ",
        "model": "fcresnet18_t66",
        "precision": "fp32",
        "backend": "onnxruntime",
        "frames": 3200,
        "warmup_frames": 200,
        "memory_samples": [{"frame": 1200 + 1000 * i, "rss_bytes": b} for i, b in enumerate(rss)],
        "latency_windows": [
            {"frames": [201 + 1000 * i, 1200 + 1000 * i], "p50_ms": 25.0, "p99_ms": 33.0} for i in range(3)
        ],
        "verdict": {"rss_growth_mb": round(growth_bytes / 1e6, 3), "p99_max_deviation": 0.1, "pass": True},
    }


def test_pages_print_intervals_and_mib_from_bytes(tmp_path: Path) -> None:
    engine = 3 * MIB + MIB // 2  # 3.5 MiB; 3.67 in the 1e6-byte megabytes of the record's engine_mb
    (tmp_path / "compare-2030-01-01.json").write_text(json.dumps(compare_record(engine)))
    (tmp_path / "soak-fcresnet18_t66-onnxruntime-2030-01-02.json").write_text(json.dumps(soak_record(MIB)))

    headline = docs.headline_table(tmp_path)
    t66 = next(line for line in headline.splitlines() if line.startswith("| feature-map state"))
    cells = [c.strip() for c in t66.split("|")[1:-1]]
    assert cells[4:] == ["+2.5 [+1.1, +3.9]", "-0.7 [-1.4, -0.1]", "0.80", "3.5"]
    assert cells[3] == "38.0"  # KiB of 1024 bytes
    accel = next(line for line in headline.splitlines() if "`fcresnet18x0.5_accel34`:" in line)
    assert "no accel-*.json" in accel
    assert "(—)" in accel

    pages = docs.results_pages(tmp_path)
    assert set(pages) == {"compare.md", "soak.md", "index.md"}  # a topic without files has no page
    assert "| fcresnet18_t66 | fp16 | 11.304 | 21.0 | 3.5 | 2.0 | 38.0 |" in pages["compare.md"]
    assert "+2.5 [+1.1, +3.9] | -0.7 [-1.4, -0.1] | -20.0 % |" in pages["compare.md"]
    assert "above 0: clean; below 0: degraded" in pages["compare.md"]
    assert "growth after the first sample 1.00 MiB" in pages["soak.md"]  # 1.05 in 1e6-byte megabytes
    assert "[compare-2030-01-01.json](../../bench/results/compare-2030-01-01.json)" in pages["compare.md"]


def test_headline_block_replaces_only_between_markers() -> None:
    readme = f"# title\n\nbefore\n{docs.BEGIN}\nold table\n{docs.END}\nafter\n"
    updated = docs.with_headline(readme, "| new |\n")
    assert updated is not None
    assert updated == f"# title\n\nbefore\n{docs.BEGIN}\n\n| new |\n\n{docs.END}\nafter\n"
    assert docs.with_headline(updated, "| new |\n") == updated
    assert docs.with_headline("# no markers\n", "| new |\n") is None


def test_check_names_missing_differing_and_extra_pages(tmp_path: Path) -> None:
    pages = tmp_path / docs.PAGES
    pages.mkdir(parents=True)
    (pages / "same.md").write_text("same\n")
    (pages / "old.md").write_text("before\n")
    (pages / "gone.md").write_text("no topic writes it\n")
    expected = {docs.PAGES / "same.md": "same\n", docs.PAGES / "old.md": "after\n", docs.PAGES / "new.md": "new\n"}
    assert sorted(docs.differences(tmp_path, expected)) == [
        f"{docs.PAGES}/gone.md: extra (no topic writes it, or its results are gone)",
        f"{docs.PAGES}/new.md: missing",
        f"{docs.PAGES}/old.md: differs",
    ]
    docs.write(tmp_path, expected)
    assert docs.differences(tmp_path, expected) == []
    assert not (pages / "gone.md").exists()
