"""compare's plot: each row's paired Δ mIoU against its control over latency and memory, and --replot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.compare import PLOT_TITLE, main, plot, plot_figure
from tempseg.common.errors import UserError

PNG = b"\x89PNG\r\n\x1a\n"


def _row(
    model: str, precision: str = "fp32", *, p50: float, memory: float, **deltas: tuple[float, float, float]
) -> dict:
    """A compare row as table_rows() writes it; `deltas` maps clean/degraded to (Δ, low, high)."""
    row: dict = {"model": model, "precision": precision, "backend": "onnxruntime", "p50_ms": p50}
    row |= {"memory_mb": memory, "activation_mb": 20.0, "miou_clean": 0.4, "miou_degraded": 0.3}
    for subset in ("clean", "degraded"):
        delta = deltas.get(subset)
        row[f"d_miou_{subset}"] = None if delta is None else delta[0]
        row[f"d_miou_{subset}_ci"] = None if delta is None else list(delta[1:])
    row["d_latency"] = None if not deltas else 4.0
    row["d_memory"] = None if not deltas else 8.6
    return row


ROWS = [
    _row("fcresnet18", p50=50.0, memory=70.0),
    _row("fcresnet18", "int8", p50=40.0, memory=47.0),
    _row("fcresnet18_t66", p50=52.0, memory=76.0, clean=(0.3, 0.1, 0.5), degraded=(2.6, 1.8, 3.7)),
    _row("fcresnet18_t66", "int8", p50=41.0, memory=47.5, clean=(0.2, 0.0, 0.4), degraded=(2.5, 1.7, 3.6)),
    _row("fcresnet18x0.5_t66", p50=20.0, memory=40.0, clean=(-0.2, -0.6, 0.1), degraded=(1.0, 0.2, 1.9)),
    _row("fcresnet18x0.25_t66", p50=10.0, memory=30.0),  # a temporal row the table has no Δ for
]


def _errorbars(ax) -> dict:
    from matplotlib.container import ErrorbarContainer

    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_plot_draws_each_rows_paired_delta_with_its_interval_over_latency_and_memory(tmp_path):
    import matplotlib.pyplot as plt

    fig = plot_figure(ROWS, measured_on="onnxruntime on cpu")
    try:
        title = fig.get_suptitle()
        assert title == PLOT_TITLE
        assert "\n" not in title
        latency, memory = fig.axes[:2]
        assert "ms" in latency.get_xlabel()
        assert "onnxruntime on cpu" in latency.get_xlabel()
        assert "MiB" in memory.get_xlabel()
        for ax, cost in ((latency, "p50_ms"), (memory, "memory_mb")):
            bars = _errorbars(ax)
            # FP32 alone (its Δ has a paired control); the row without Δ is left out
            assert set(bars) == {
                f"{m} {s}" for m in ("fcresnet18_t66", "fcresnet18x0.5_t66") for s in ("clean", "degraded")
            }
            for row in ROWS[2], ROWS[4]:
                for subset in ("clean", "degraded"):
                    bar = bars[f"{row['model']} {subset}"]
                    line, _, (interval,) = bar.lines
                    assert list(line.get_ydata()) == [row[f"d_miou_{subset}"]]  # the Δ, not the mIoU
                    assert list(line.get_xdata()) == [row[cost]]
                    (segment,) = interval.get_segments()
                    assert sorted(segment[:, 1]) == pytest.approx(row[f"d_miou_{subset}_ci"])
            (control,) = [line for line in ax.lines if line.get_label() == "fcresnet18 control"]
            assert np.asarray(control.get_ydata()).tolist() == [0.0]
            assert "fcresnet18 control" not in bars  # no interval on the control
            assert any(
                np.asarray(line.get_ydata()).tolist() == [0, 0] and line.get_linestyle() == "--" for line in ax.lines
            )
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("clean frames" in t for t in legend)
        assert any("degraded frames" in t for t in legend)
        notes = " ".join(t.get_text() for t in fig.texts)
        assert "fcresnet18x0.25_t66 fp32" in notes  # said to be left out, not dropped silently
        assert "INT8 rows not drawn" in notes
    finally:
        plt.close(fig)
    out = tmp_path / "compare.png"
    plot(ROWS, out)
    assert out.read_bytes()[:8] == PNG


def test_plot_of_data_without_degraded_frames_draws_all_frames_alone():
    import matplotlib.pyplot as plt

    rows = [{**r, "miou_degraded": None, "d_miou_degraded": None, "d_miou_degraded_ci": None} for r in ROWS[:3]]
    fig = plot_figure(rows)
    try:
        assert set(_errorbars(fig.axes[0])) == {"fcresnet18_t66 clean"}
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any("all frames" in t for t in legend)
        assert not any("degraded" in t for t in legend)
    finally:
        plt.close(fig)


def test_replot_rewrites_the_png_beside_a_table_json(tmp_path, capsys):
    table = tmp_path / "compare-2026-01-01.json"
    text = json.dumps({"rows": ROWS[:3], "reports": [{"backend": "onnxruntime", "device": "cpu"}]})
    table.write_text(text)
    png = table.with_suffix(".png")
    png.write_bytes(b"the old plot")
    assert main(["--replot", str(table)]) == 0
    assert png.read_bytes()[:8] == PNG
    assert str(png) in capsys.readouterr().out
    assert table.read_text() == text  # the table itself is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == [table.name, png.name]  # no temp file left
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="not a readable compare table"):
        main(["--replot", str(Path(tmp_path / "broken.json"))])
