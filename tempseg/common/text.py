"""Numbers and tables as text: the one number formatter and the one table builder of every report, log line and
results file (the run report, the training log, the demo video, the bench tables). Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

RULES = {"<": ":---", ">": "---:"}  # a Markdown column's rule by its alignment; "---" for any other


def number(
    value: float | None,
    digits: int = 3,
    *,
    missing: str = "-",
    nan: str | None = None,
    scale: float = 1.0,
    suffix: str = "",
    large_digits: int | None = None,
) -> str:
    """`value / scale` with `digits` decimals, then `suffix`; `missing` for None, `nan` for NaN (None: Python's
    "nan"). `large_digits`: the decimals of a value of 10 or more (in absolute value) after scaling.

    number(0.56789) -> "0.568"; number(None) -> "-"; number(3 * 2**20, 1, scale=2**20) -> "3.0";
    number(1.25, 3, suffix="x") -> "1.250x"; number(12.345, 4, large_digits=1) -> "12.3".
    """
    if value is None:
        return missing
    if nan is not None and math.isnan(value):
        return nan
    if scale != 1.0:
        value = value / scale
    if large_digits is not None and abs(value) >= 10:
        digits = large_digits
    return f"{value:.{digits}f}{suffix}"


def table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    align: str = "",
    widths: Sequence[int] | None = None,
    sep: str = " ",
) -> list[str]:
    """The lines of a table of str() cells: the header, then one line per row.

    Markdown (no `widths`): `| a | b |`, a rule under the header (`---`; `---:` where `align` has ">" for the
    column, `:---` where "<"), then the rows. Text (`widths`, for a console): each cell padded to its column's
    width, right-aligned unless `align` has "<" for the column, joined by `sep`; no rule.
    """
    if widths is None:
        rule = "|" + "|".join(RULES.get(_column(align, i), "---") for i in range(len(header))) + "|"
        head, *body = ("| " + " | ".join(str(cell) for cell in cells) + " |" for cells in [header, *rows])
        return [head, rule, *body]
    pads = [("<" if _column(align, i) == "<" else ">") + str(width) for i, width in enumerate(widths)]
    return [sep.join(f"{cell!s:{pad}}" for cell, pad in zip(cells, pads, strict=True)) for cells in [header, *rows]]


def _column(align: str, index: int) -> str:
    """The alignment `align` gives column `index` ("" where it gives none)."""
    return align[index] if index < len(align) else ""
