"""Every command that README.md and the hand-written docs/ pages show in ```bash blocks, run in its cheapest form,
so that a renamed module, flag, make goal or make variable fails here rather than on a reader's machine.

- `python -m MODULE ARGS` (also python3, .venv/bin/python): `MODULE [SUBCOMMAND] --help` exits 0 and lists every
  `--flag` of ARGS, and ARGS give every option its usage line requires; a first argument the usage shows as a
  subcommand must be one of them. `python PATH ARGS`: the same for the script.
- `make GOAL... VAR=VALUE...`: `make -n` exits 0 with RUNS pointed at an empty folder (no local run directory
  changes what make would do), and every VAR is a variable the Makefile reads. The bases the registry names
  for MODEL are asked once for all commands and given as BASE_MODEL/REF_MODEL, the variables make's own
  sub-make gets, so that each dry run does not import torch twice.
- `pip install -e ".[extras]"`: every extra exists in pyproject.toml; other pip installs name packages.
- Shell commands in SHELL_ONLY (cd, cp, scp, rm, ...) are not run; any other program fails until it is taught
  here.

The probes run in parallel, once per distinct probe, the first time a test asks for one.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    ROOT / "README.md",
    *(ROOT / "docs" / n for n in ("contract.md", "deployment.md", "training.md", "own-data.md")),
)
PYTHONS = {"python", "python3", ".venv/bin/python"}
PIPS = {"pip", "pip3", ".venv/bin/pip"}
SHELL_ONLY = {"cd", "cp", "scp", "rsync", "rm", "mkdir", "ls", "git", "ssh", "export", "source"}
OPERATORS = {"&&", "||", ";", "|"}
BASH_FENCE = re.compile(r"^\s*```(?:bash|sh|shell)\s*\n(.*?)^\s*```", re.S | re.M)
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
SUBCOMMANDS = re.compile(r"\{([\w,-]+)\}")
WORKERS = 3  # two cores; most of a probe's time is the interpreter starting and importing torch
TIMEOUT = 180


@dataclass(frozen=True)
class Command:
    page: str  # page:line, for the test id
    words: tuple[str, ...]


@dataclass(frozen=True)
class Probe:
    """What runs for a command."""

    argv: tuple[str, ...]


# ---- the commands on the pages ------------------------------------------------------------------------------


def page_commands(path: Path) -> list[Command]:
    """Each simple command of each ```bash block: continuation lines joined, comments dropped, split at && ; |."""
    text = path.read_text()
    commands = []
    for block in BASH_FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        for offset, line in logical_lines(block.group(1)):
            words = shlex.split(line, comments=True)
            for words_of_one in split_at_operators(words):
                if words_of_one:
                    commands.append(Command(f"{path.name}:{first_line + offset}", tuple(words_of_one)))
    return commands


def logical_lines(block: str) -> list[tuple[int, str]]:
    """(line offset, text) of each command line, with backslash continuations joined."""
    lines, pending, start = [], "", 0
    for i, line in enumerate(block.splitlines()):
        if not pending:
            start = i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return [(i, line) for i, line in lines if line.strip()]


def split_at_operators(words: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word in OPERATORS:
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


def without_environment(words: tuple[str, ...]) -> tuple[str, ...]:
    """The command without leading VAR=value assignments (OMP_NUM_THREADS=1 python ...)."""
    index = 0
    while index < len(words) and ASSIGNMENT.match(words[index]):
        index += 1
    return words[index:]


COMMANDS = [command for page in PAGES if page.is_file() for command in page_commands(page)]


# ---- probes ---------------------------------------------------------------------------------------------------


def flags_of(args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.split("=")[0] for a in args if a.startswith("--") and len(a) > 2))


def help_probe(target: tuple[str, ...]) -> Probe:
    """`python TARGET --help`; TARGET: `-m MODULE [SUBCOMMAND]` or a script's path."""
    return Probe((sys.executable, *target, "--help"))


def make_probe(args: tuple[str, ...], runs: str) -> Probe:
    extra = () if any(a.startswith("RUNS=") for a in args) else (f"RUNS={runs}",)
    base, reference = model_bases()[make_model(args)]
    return Probe(("make", "-n", *args, *extra, f"BASE_MODEL={base}", f"REF_MODEL={reference}"))


def make_model(args: tuple[str, ...]) -> str:
    """MODEL of a make command line: the last MODEL=, else the Makefile's default."""
    given = [a.split("=", 1)[1] for a in args if a.startswith("MODEL=")]
    default = re.search(r"^MODEL\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert default, "the Makefile sets no default MODEL"
    return given[-1] if given else default.group(1)


@functools.cache
def model_bases() -> dict[str, tuple[str, str]]:
    """(base, reference) of every MODEL the make commands name, as `python -m tempseg.models --base/--reference`
    print them, asked of the registry in one interpreter."""
    lines = [without_environment(c.words) for c in COMMANDS]
    models = sorted({make_model(words[1:]) for words in lines if words[:1] == ("make",)})
    code = (
        "import sys\nfrom tempseg.models.registry import base_model, reference_model, resolve_name\n"
        "for name in sys.argv[1:]:\n    print(base_model(resolve_name(name)), reference_model(name) or '')"
    )
    done = run_probe(Probe((sys.executable, "-c", code, *models)))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" ") for line in done.stdout.splitlines()]
    return {model: (row[0], row[1]) for model, row in zip(models, rows, strict=True)}


@functools.cache
def empty_runs() -> str:
    """An empty RUNS folder for the dry runs (they write nothing), removed when the tests end."""
    folder = tempfile.mkdtemp(prefix="tempseg-docs-runs-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def run_probe(probe: Probe) -> subprocess.CompletedProcess[str]:
    # without what a calling make (`make test`) put in the environment; one thread per probe
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        list(probe.argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@functools.cache
def run_once(probe: Probe) -> subprocess.CompletedProcess[str]:
    return run_probe(probe)


@functools.cache
def probe_results(probes: tuple[Probe, ...]) -> dict[Probe, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return dict(zip(probes, pool.map(run_probe, probes), strict=True))


def result(probe: Probe) -> subprocess.CompletedProcess[str]:
    """The probe's result; the first call runs every probe of every page, in parallel."""
    done = probe_results(tuple(dict.fromkeys(p for c in COMMANDS for p in first_probes(c))))
    return done[probe] if probe in done else run_once(probe)


def first_probes(command: Command) -> list[Probe]:
    """The probes a command needs before its own checks (a module's --help, to find its subcommands)."""
    words = without_environment(command.words)
    if words and words[0] in PYTHONS:
        return [help_probe(words[1:3] if words[1:2] == ("-m",) else words[1:2])]
    if words and words[0] == "make":
        return [make_probe(words[1:], empty_runs())]
    return []


# ---- checks ---------------------------------------------------------------------------------------------------


def check_python(words: tuple[str, ...]) -> None:
    target, args = (words[1:3], words[3:]) if words[1:2] == ("-m",) else (words[1:2], words[2:])
    if target[0] != "-m":
        assert (ROOT / target[0]).is_file(), f"{target[0]} does not exist"
    shown = help_text(result(help_probe(target)))
    choices = SUBCOMMANDS.search(shown.split("\n\n")[0])
    if choices and args and not args[0].startswith("-"):
        assert args[0] in choices.group(1).split(","), f"{args[0]!r} is not a subcommand ({choices.group(1)})"
        target, args = (*target, args[0]), args[1:]
        shown = help_text(run_once(help_probe(target)))
    missing = [f for f in flags_of(args) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", shown)]
    assert not missing, f"`python {' '.join(target)} --help` lists no {', '.join(missing)}"
    if "--help" not in args and "-h" not in args:
        absent = [f for f in required_flags(shown) if f not in flags_of(args)]
        assert not absent, f"`python {' '.join(target)}` requires {', '.join(absent)}"


def required_flags(help_output: str) -> list[str]:
    """The options the usage line requires: those outside every [...] and (...)."""
    usage = help_output.split("\n\n")[0]
    depth, outside = 0, []
    for char in usage:
        depth += (char in "[(") - (char in "])")
        outside.append(char if depth == 0 else " ")
    return re.findall(r"(?<![\w-])--[\w-]+", "".join(outside))


def help_text(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"`{' '.join(done.args[1:])}` failed:\n{done.stderr[-2000:]}"
    return done.stdout


def check_make(words: tuple[str, ...]) -> None:
    args = words[1:]
    makefile = (ROOT / "Makefile").read_text()
    for name in (m.group(1) for a in args if (m := ASSIGNMENT.match(a))):
        read = rf"\$\({name}\)|^{name}\s*[:?+]?=|\$\(origin {name}\)|\b{name}\b\)"
        assert re.search(read, makefile, re.M), f"the Makefile reads no variable {name}"
    done = result(make_probe(args, empty_runs()))
    assert done.returncode == 0, f"`make -n {' '.join(args)}` failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}"


def check_pip(words: tuple[str, ...]) -> None:
    assert "install" in words, f"not a pip install: {' '.join(words)}"
    extras = pyproject_extras()
    for word in words[words.index("install") + 1 :]:
        wanted = re.fullmatch(r"\.\[([\w,-]+)\]", word)
        if wanted:
            unknown = [e for e in wanted.group(1).split(",") if e not in extras]
            assert not unknown, f"pyproject.toml has no extra {', '.join(unknown)} ({', '.join(extras)})"


def pyproject_extras() -> list[str]:
    """The extras of pyproject.toml: the `name = [` lines of its [project.optional-dependencies] table."""
    text = (ROOT / "pyproject.toml").read_text()
    table = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^([\w-]+)\s*=\s*\[", table, re.M)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page} {' '.join(c.words)[:60]}")
def test_command_runs_in_its_cheapest_form(command):
    words = without_environment(command.words)
    program = words[0]
    if program in PYTHONS:
        check_python(words)
    elif program == "make":
        check_make(words)
    elif program in PIPS:
        check_pip(words)
    else:
        assert program in SHELL_ONLY, f"{program}: neither python, make nor pip; teach tests/test_commands.py"


def test_the_pages_show_commands():
    assert any(c.page.startswith("README.md") for c in COMMANDS)
    assert {c.words[0] for c in COMMANDS} >= {"make", "python"}


def test_commands_are_read_as_a_shell_reads_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        'Text.\n\n```bash\nmake run MODEL=m \\\n  RUN_ARGS="--overlay o.mp4"   # a comment\n'
        "OMP_NUM_THREADS=1 python -m tempseg.models --list && cd runs\n```\n"
    )
    commands = page_commands(page)
    assert [c.words for c in commands] == [
        ("make", "run", "MODEL=m", "RUN_ARGS=--overlay o.mp4"),
        ("OMP_NUM_THREADS=1", "python", "-m", "tempseg.models", "--list"),
        ("cd", "runs"),
    ]
    assert [c.page for c in commands] == ["page.md:4", "page.md:6", "page.md:6"]
    assert flags_of(("--list", "--model=x", "-n", "--")) == ("--list", "--model")
    assert {"train", "dev", "rtx", "trt", "serve"} <= set(pyproject_extras())
    usage = "usage: python -m bench.ablation [-h] --base BASE --variants V [V ...] [--preset PRESET]\n\noptions:"
    assert required_flags(usage) == ["--base", "--variants"]
