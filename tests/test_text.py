"""common/text.py: the one number formatter and the one table builder, and the callers that format through them."""

from __future__ import annotations

import contextlib
import importlib
import io
import math

import pytest

from tempseg.common import text
from tempseg.common.text import number, table


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((0.56789,), {}, "0.568"),  # 3 decimals by default
        ((None,), {}, "-"),
        ((None,), {"missing": "base"}, "base"),
        ((0.123456, 4), {}, "0.1235"),
        ((12.0, 1), {}, "12.0"),
        ((3,), {}, "3.000"),  # an int is a number too
        ((3 * 2**20 + 2**19, 1), {"scale": 2**20}, "3.5"),  # bytes in MiB
        ((512, 0), {"scale": 1024}, "0"),  # round half to even, as f"{0.5:.0f}"
        ((1.25,), {"suffix": "x"}, "1.250x"),
        ((None,), {"suffix": "x"}, "-"),  # no suffix on a missing value
        ((9.99996, 4), {"large_digits": 1}, "10.0000"),  # below 10 before rounding: 4 decimals
        ((10.0, 4), {"large_digits": 1}, "10.0"),
        ((-12.345, 4), {"large_digits": 1}, "-12.3"),  # by absolute value
        ((math.nan,), {}, "nan"),  # NaN is a value unless the caller names it
        ((math.nan,), {"nan": "n/a"}, "n/a"),
        ((0.5,), {"nan": "n/a"}, "0.500"),
    ],
)
def test_number(args, kwargs, expected):
    assert number(*args, **kwargs) == expected


def test_markdown_table_has_a_rule_aligned_per_column():
    lines = table(("model", "ms", "MiB"), [("a", "1.0", 2), ("b", "-", None)], align="->")
    assert lines == ["| model | ms | MiB |", "|---|---:|---|", "| a | 1.0 | 2 |", "| b | - | None |"]
    assert table(("a", "b"), [], align="<")[1] == "|:---|---|"
    assert table(("a",), [("",)]) == ["| a |", "|---|", "|  |"]  # an empty cell keeps its column


def test_text_table_pads_each_column_to_its_width():
    lines = table(("frames", "p99 ms"), [(1000, "10.25"), (20000, "-")], widths=(6, 8))
    assert lines == ["frames   p99 ms", "  1000    10.25", " 20000        -"]  # right-aligned by default
    lines = table(("phase", "mean"), [("compute", "5.5000")], widths=(13, 9), align="<", sep="")
    assert lines == ["phase             mean", "compute         5.5000"]
    with pytest.raises(ValueError, match="zip"):  # a row with a cell too many or too few is a caller's bug
        table(("a", "b"), [("1",)], widths=(3, 3))


# ---- the callers: no private formatter of their own, and their formats pinned ----------------------------

CALLERS = {
    "tempseg.runtime.report": ("number", "table"),
    "tempseg.runtime.demo": ("number",),
    "tempseg.train.trainer": ("number",),
    "bench.accel": ("number", "table"),
    "bench.ablation": ("number", "table"),
    "bench.memory_attention": ("number", "table"),
    "bench.paper": ("number", "table"),
    "bench.soak": ("number", "table"),
}


@pytest.mark.parametrize(("module", "helpers"), CALLERS.items())
def test_callers_format_with_the_shared_helpers(module, helpers):
    namespace = vars(importlib.import_module(module))
    assert all(namespace.get(name) is getattr(text, name) for name in helpers)
    assert not {"_num", "_fmt", "_ms"} & set(namespace)  # the private formatters these files had


def test_run_report_figures_and_latency_table():
    from tempseg.runtime import report

    assert report._figure.func is number  # every figure of the console report
    stats = {"mean": 1.5, "p50": 1.25, "p90": 2.0, "p99": 9.99999, "max": 12.34}
    idle = dict.fromkeys(stats, 0.0)
    record = {
        "model": "m",
        "precision": "fp16",
        "backend": "onnxruntime",
        "device": "cpu",
        "input_hw": [64, 128],
        "frames": 12,
        "warmup_frames": 2,
        "interrupted": False,
        "phases_ms": {"read": idle, "compute": stats, "total": {**stats, "max": None}},
        "latency_by_kind_ms": {"keyframe": {"frames": 2, "total": stats, "flow": {"mean": 0.25}}},
        "worst_frame": None,
        "fps": 666.6667,
        "memory": dict.fromkeys(("weights_bytes", "engine_file_bytes", "activation_bytes", "state_bytes")),
        "accuracy": None,
        "resets": {},
    }
    record["memory"].update(io_bytes=None, device_used_bytes=None, host_rss_peak_bytes=None)
    lines = report.format_report(record).splitlines()
    assert lines[1:5] == [
        "  latency ms        mean      p50      p90      p99      max",
        "  compute         1.5000   1.2500   2.0000  10.0000     12.3",
        "  total           1.5000   1.2500   2.0000  10.0000        -",
        "  keyframes       1.5000   1.2500   2.0000  10.0000     12.3   (2 frames; flow mean 0.2500 ms)",
    ]  # the read phase took no time: no row
    assert lines[5] == "  fps           666.7"


def test_soak_table_and_memory_attention_cells():
    from bench import memory_attention, soak

    samples = [{"frame": 1200, "rss_bytes": 512_345_678, "device_used_bytes": None}]
    window = {"p50_ms": 10.0, "p99_ms": 12.345, "bare_p99_ms": None, "loop_only_p99_ms": 0.5}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        soak.print_table(samples, [window])
    assert out.getvalue().splitlines() == [
        "      frames     RSS MB  device MB   p50 ms   p99 ms  call p99  loop-only",
        "        1200      512.3          -    10.00    12.35         -       0.50",
    ]
    variant = {
        "params": 11_400_000,
        "gflops": 1.23456,
        "gflops_graph_form": 2.5,
        "state_bytes_fp32": 3 * 1024,
        "onnx_nodes": {"fp32": 70, "fp16": 90},
        "onnx_bytes": {"fp32": 45 * 2**20, "fp16": 22.5 * 2**20},
        "latency_ms": 12.3456,
        "engine_bytes": None,
        "activation_bytes": 5 * 2**20,
        "engine": {"reason": "--no-engines"},
    }
    results = {
        "settings": {"height": 64, "width": 128, "engines": False, "threads": 2, "rounds": 1, "iters": 1},
        "versions": {"onnxruntime": "1"},
        "date": "d",
        "host": {"cpu": "cpu"},
        "variants": {"base": variant, "other": variant},
        "ratios": {"latency_ms_vs_base": {"other": 1.5}, "onehot_vs_slice": {"m": dict.fromkeys(("latency_ms",), 2)}},
    }
    results["ratios"]["onehot_vs_slice"]["m"].update(engine_bytes=None, activation_bytes=0.5)
    md = memory_attention.markdown(results).splitlines()
    assert md[5] == "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert md[6] == "| base | 11.40 | 1.235 (2.500) | 3 | 70/90 | 45.0/22.5 | 12.35 | base | - | 5.0 |"
    assert md[7].split(" | ")[7] == "1.500x"
    assert "m onehot / slice: latency_ms 2.000x, engine_bytes -, activation_bytes 0.500x" in md
