"""README.md and the hand-written docs/ pages: short, every figure traceable to bench/results, plain wording,
links that resolve.

The citation convention the pages follow:

- A block is a paragraph, a list item, a table or a fenced block. A table takes the paragraph after it when
  that paragraph starts with "Source"; an output block (a fence that is not bash) takes the paragraph or list
  item just before it. Command blocks (bash) hold values you type, not figures (tests/test_commands.py runs them).
- A block cites a results file with a Markdown link to a file under bench/results/.
- A measured figure is a number followed by a unit (ms, s, min, MiB, GiB, %, points, fps, M, x, ...), an
  interval [a, b], or a number in the body of a table. A block that holds one must cite.
- In a citing block every number must occur in a cited file at the precision shown: 2.5 matches 2.51 and 2.46.
  The unit may convert the file's number: MiB, KiB and GiB from bytes, min from seconds, ms from seconds, %
  from a fraction, M from a count.
- Not figures: anything in `code` (commands, CLI values, shapes, model names), numbers glued to letters
  (fcresnet18_t66, ResNet18, x0.5), sizes (256x512), dashed compounds (dates, 6-6), versions (three-part
  numbers, or after a product name: Python 3.10, TensorRT 10.3), "95 %" (the intervals' level), list markers.
- A generated block (between `<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`) belongs to
  its generator (`python -m bench.docs`), which takes it from the results files: not checked here.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "bench" / "results"
HANDWRITTEN = (README, *(DOCS / name for name in ("contract.md", "deployment.md", "training.md", "own-data.md")))
GENERATED_PAGES = (DOCS / "cli.md", DOCS / "results" / "index.md")  # bench.docs writes them; README links them
MAX_README_LINES = 260

GENERATED = re.compile(r"<!-- begin generated: (\S+) -->.*?<!-- end generated: \1 -->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
FENCE = re.compile(r"^\s*```\s*(\w*)")
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console"}
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")
LINK = re.compile(r"\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")
NUMBER = re.compile(r"[+\-−]?\d+(?:,\d{3})*(?:\.\d+)?")
INTERVAL = re.compile(r"\[\s*[+\-−]?\d+(?:\.\d+)?\s*,\s*[+\-−]?\d+(?:\.\d+)?\s*\]")
UNIT = re.compile(r"\s?(%|(?:ms|s|min|minutes|seconds|MiB|GiB|KiB|MB|GB|KB|points|pts|fps|GFLOPs)\b)")
GLUED_UNIT = re.compile(r"(M|k|x|ms|s)\b")
PRODUCT = re.compile(
    r"(Python|JetPack|TensorRT|TensorRT-RTX|ONNX Runtime|onnxruntime|torch|CUDA|cuda-python|opset|VPI|Ubuntu|"
    r"Triton|capability|capabilities|version)\s+$",
    re.I,
)
# What a unit may do to the file's number: README value = file value x factor.
FACTORS = {
    "MiB": 2.0**-20,
    "KiB": 2.0**-10,
    "GiB": 2.0**-30,
    "min": 1 / 60,
    "minutes": 1 / 60,
    "ms": 1000.0,
    "s": 1e-3,
    "%": 100.0,
    "M": 1e-6,
}
FORBIDDEN = re.compile(r"\b(?:session|issue|target)\w*|\blent\b|\bno GPU was\b", re.I)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based, of the block's first line
    kind: str  # paragraph, item, table, output, command, heading
    text: str


@dataclass(frozen=True)
class Figure:
    text: str  # as written, with its unit
    value: float
    tolerance: float  # half a unit of the last digit shown
    unit: str  # "" where none follows


# ---- blocks ------------------------------------------------------------------------------------------------


def blank_out(pattern: re.Pattern[str], text: str) -> str:
    """Remove what `pattern` matches but keep its line breaks, so line numbers stay right."""
    return pattern.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def split_blocks(path: Path, text: str) -> list[Block]:
    lines = blank_out(COMMENT, blank_out(GENERATED, text)).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        end, kind = block_end(lines, i)
        body = lines[i + 1 : end - 1] if kind in ("output", "command") else lines[i:end]
        blocks.append(Block(path, i + 1, kind, "\n".join(body)))
        i = end
    return merge_blocks(blocks)


def block_end(lines: list[str], start: int) -> tuple[int, str]:
    """(index after the block that starts at `start`, its kind)."""
    first = lines[start]
    fence = FENCE.match(first)
    if fence:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        return end + 1, "command" if fence.group(1).lower() in COMMAND_LANGUAGES else "output"
    if first.lstrip().startswith("#"):
        return start + 1, "heading"
    if first.lstrip().startswith("|"):
        end = start
        while end < len(lines) and lines[end].lstrip().startswith("|"):
            end += 1
        return end, "table"
    kind = "item" if LIST_ITEM.match(first) else "paragraph"
    end = start + 1
    while end < len(lines) and continues(lines[end]):
        end += 1
    return end, kind


def continues(line: str) -> bool:
    """Whether `line` continues the paragraph or list item above it."""
    stripped = line.strip()
    return bool(stripped) and not (LIST_ITEM.match(line) or FENCE.match(line) or stripped.startswith(("#", "|")))


def merge_blocks(blocks: list[Block]) -> list[Block]:
    """A table with the "Source" paragraph after it; an output block with the paragraph or item before it."""
    merged: list[Block] = []
    for block in blocks:
        last = merged[-1] if merged else None
        if last and last.kind == "table" and block.kind == "paragraph" and block.text.startswith("Source"):
            merged[-1] = Block(last.path, last.line, "table", f"{last.text}\n{block.text}")
        elif last and block.kind == "output" and last.kind in ("paragraph", "item"):
            merged[-1] = Block(last.path, last.line, "output", f"{last.text}\n{block.text}")
        else:
            merged.append(block)
    return merged


# ---- figures -----------------------------------------------------------------------------------------------


def prose(text: str) -> str:
    """The text whose numbers count: no code spans, bold marks, link targets, "95 %" or list markers."""
    text = CODE_SPAN.sub(" ", text).replace("**", "")
    text = LINK.sub(lambda m: m.group(0)[: m.group(0).rindex("](") + 1], text)
    text = re.sub(r"\b95 ?%", " ", text)
    return "\n".join(LIST_ITEM.sub(" ", line, count=1) for line in text.splitlines())


def figures(text: str) -> list[Figure]:
    text = prose(text)
    found = []
    for match in NUMBER.finditer(text):
        unit = figure_unit(text, match.start(), match.end())
        if unit is None:
            continue
        token = match.group().replace("−", "-")
        digits = token.lstrip("+-").replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        tolerance = 0.5 * 10.0**-decimals + 1e-9
        found.append(Figure((match.group() + unit).strip(), float(token.replace(",", "")), tolerance, unit.strip()))
    return found


def figure_unit(text: str, start: int, end: int) -> str | None:
    """The unit after the number at text[start:end] ("" for none), or None where the number is not a figure."""
    before = text[start - 1] if start else " "
    after, next_char = text[end : end + 1], text[end + 1 : end + 2]
    if before.isalnum() or before in "_./\\-":
        return None  # glued to a name or path (ResNet18, x0.5, state_in.0, 6-6)
    if after in ".-x" and next_char.isdigit():
        return None  # a version (1.7.1), a compound (2026-12-01, 6-6) or a size (256x512)
    if PRODUCT.search(text[max(0, start - 40) : start]):
        return None  # Python 3.10, TensorRT 10.3
    glued = GLUED_UNIT.match(text, end)
    if after.isalpha() or after == "_":
        return glued.group(1) if glued else None
    spaced = UNIT.match(text, end)
    return spaced.group(0) if spaced else ""


def table_body(text: str) -> str:
    """The rows of a table after its header and separator line."""
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    return "\n".join(rows[2:])


def measured(block: Block, found: list[Figure]) -> list[str]:
    """The measured figures of `block`: what obliges it to cite a results file."""
    shown = [f.text for f in found if f.unit]
    shown += INTERVAL.findall(prose(block.text))
    if block.kind == "table":
        shown += [f.text for f in figures(table_body(block.text))]
    return shown


def cited_files(block: Block) -> list[Path]:
    files = []
    for target in LINK.findall(block.text):
        path = (block.path.parent / target.split("#")[0]).resolve()
        if path.is_relative_to(RESULTS) and path.is_file():
            files.append(path)
    return files


@functools.cache
def file_numbers(path: Path) -> list[float]:
    """Every number in a results file, sorted; a hyphen glued to a word (a date, a name) gives both signs."""
    if path.suffix not in (".md", ".json", ".csv"):
        return []
    text = path.read_text(errors="replace")
    values = []
    for match in re.finditer(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
        value = float(match.group())
        values.append(value)
        if value < 0 and match.start() and text[match.start() - 1].isalnum():
            values.append(-value)
    return sorted(values)


def occurs(figure: Figure, numbers: list[float]) -> bool:
    """Some number of the file, times the unit's factor (or 1), shows as `figure` at its precision."""
    for factor in {1.0, FACTORS.get(figure.unit, 1.0)}:
        low = (figure.value - figure.tolerance) / factor
        high = (figure.value + figure.tolerance) / factor
        index = bisect.bisect_left(numbers, low)
        if index < len(numbers) and numbers[index] <= high:
            return True
    return False


def trace(path: Path, text: str) -> list[str]:
    """One line per figure that does not trace: measured but uncited, or cited but in none of the cited files."""
    problems = []
    name = path.relative_to(ROOT)
    for block in split_blocks(path, text):
        if block.kind in ("command", "heading"):
            continue
        found = figures(block.text)
        files = cited_files(block)
        if not files:
            shown = measured(block, found)
            if shown:
                problems.append(f"{name}:{block.line}: {', '.join(shown[:6])} cite no bench/results file")
            continue
        numbers = sorted(n for f in files for n in file_numbers(f))
        missing = [f.text for f in found if not occurs(f, numbers)]
        if missing:
            names = ", ".join(f.name for f in files)
            problems.append(f"{name}:{block.line}: {', '.join(missing)} not in {names}")
    return problems


# ---- links -------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = blank_out(re.compile(r"^\s*```.*?^\s*```", re.S | re.M), path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.relative_to(ROOT)}: {target} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{path.relative_to(ROOT)}: {target} has no heading #{anchor}")
    return problems


# ---- the tests ---------------------------------------------------------------------------------------------


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; depth goes into docs/"


@pytest.mark.parametrize("path", HANDWRITTEN, ids=lambda p: p.name)
def test_every_figure_traces_to_a_results_file(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    problems = trace(path, path.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", HANDWRITTEN, ids=lambda p: p.name)
def test_no_wording_of_the_tooling(path):
    text = blank_out(GENERATED, path.read_text())
    hits = [f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in FORBIDDEN.finditer(text)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", GENERATED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_pages_exist(page):
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing: `make docs` (python -m bench.docs) writes it"


# ---- the checker's own checks, on made-up text ---------------------------------------------------------------


def test_numbers_that_are_names_sizes_versions_and_code_are_not_figures():
    text = "fcresnet18_t66 at 256x512 on Python 3.10, TensorRT 10.3, 1.7.1.116, 2026-12-01, T 6-6, `--frames 300`"
    assert figures(text) == []


def test_units_make_figures_measured():
    found = figures("mean 49.8 ms, 23.8 MiB, +2.5 [+1.7, +3.5] points, 1.116x, 95 % interval")
    assert [(f.value, f.unit) for f in found] == [
        (49.8, "ms"),
        (23.8, "MiB"),
        (2.5, ""),
        (1.7, ""),
        (3.5, ""),
        (1.116, "x"),
    ]


def test_a_figure_matches_at_the_precision_shown_and_through_its_unit(tmp_path):
    numbers = sorted([0.30465, -0.01, 24940868.0, 548.4])
    shown = {f.text: occurs(f, numbers) for f in figures("0.3046, 0.305, 0.31, -0.0, 23.8 MiB, 9 minutes, 0.3047")}
    assert shown == {
        "0.3046": True,
        "0.305": True,
        "0.31": False,
        "-0.0": True,
        "23.8 MiB": True,
        "9 minutes": True,
        "0.3047": True,
    }


def test_uncited_and_untraced_figures_are_reported(tmp_path):
    results = RESULTS / "paired-fcresnet18_t66-default-2026-12-01.json"
    page = ROOT / "page.md"  # never written: trace() reads the text given
    link = f"[paired]({results.relative_to(ROOT)})"
    text = f"Gains 2.5 points.\n\nGains +2.5 [+1.7, +3.5] points ({link}).\n\nGains 9.9 points ({link}).\n"
    problems = trace(page, text)
    assert len(problems) == 2
    assert "page.md:1: 2.5 points cite no bench/results file" in problems[0]
    assert "page.md:5: 9.9 points not in paired-fcresnet18_t66-default-2026-12-01.json" in problems[1]
