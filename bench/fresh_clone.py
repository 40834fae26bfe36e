"""The README's commands on a fresh clone, timed: `make engine MODEL=...` (venv, base, fine-tune, export,
engine), `make run ... SOURCES="..."` (four synthetic cameras through one batched graph), then `bash .ci/run`
(`make test`, what CI runs), each stage's line as printed.

`python -m bench.fresh_clone [--model fcresnet18_t66] [--repo .]` clones the repository's committed HEAD into a
temporary folder (nothing of this working tree's runs/ or .venv comes along), runs both, and writes
bench/results/fresh_clone-<date>.json and .md: the machine, each command's wall time and exit status, the
`stage NAME: S s -> ...` lines of `make engine`, and the last line of the tests. Takes what the commands take
(tens of minutes on 2 cores); run it on an otherwise idle machine, the times are the record.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import describe
from tempseg.common.errors import UserError, run_cli
from tempseg.common.io import write_json, write_text
from tempseg.common.text import table

RESULTS = Path("bench/results")
SOURCES = "synthetic:0 synthetic:1 synthetic:2 synthetic:3"
STAGE = re.compile(r"^stage (?P<stage>[\w-]+): (?P<seconds>[\d.]+) s -> (?P<what>.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def timed(command: list[str], cwd: Path) -> dict[str, Any]:
    """Run `command` in `cwd`: its wall time, exit status and output lines (progress bars dropped)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    lines = [ANSI.sub("", line) for line in (done.stdout + done.stderr).replace("\r", "\n").splitlines()]
    return {"command": " ".join(command), "seconds": round(seconds, 1), "returncode": done.returncode, "lines": lines}


def stages(lines: list[str]) -> list[dict[str, Any]]:
    """The `stage NAME: S s -> ...` lines every stage prints when it ends."""
    found = []
    for line in lines:
        match = STAGE.match(line.strip())
        if match:
            found.append({"stage": match["stage"], "seconds": float(match["seconds"]), "line": line.strip()})
    return found


def test_summary(lines: list[str]) -> str | None:
    """pytest's last line (`N passed, M skipped in S s`)."""
    summaries = [line.strip("= ").strip() for line in lines if re.search(r"\d+ passed", line)]
    return summaries[-1] if summaries else None


def run(repo: Path, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tempseg-fresh-") as folder:
        clone = Path(folder) / "tempseg"
        subprocess.run(["git", "clone", "-q", str(repo.resolve()), str(clone)], check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        engine = timed(["make", "engine", f"MODEL={model}"], clone)
        cameras = timed(["make", "run", f"MODEL={model}", f"SOURCES={SOURCES}", "FRAMES=100"], clone)
        tests = timed(["bash", ".ci/run"], clone)
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python -m bench.fresh_clone", *sys.argv[1:]]),
        "commit": commit,
        "machine": describe(),
        "make_engine": {**_summary(engine), "stages": stages(engine["lines"])},
        "make_run_sources": {**_summary(cameras), "stages": stages(cameras["lines"]), "report": report(cameras)},
        "make_test": {**_summary(tests), "summary": test_summary(tests["lines"])},
    }


def report(result: dict[str, Any]) -> list[str]:
    """The run's console table: from its first line (`MODEL PRECISION on BACKEND ...`) to the stage line."""
    lines = result["lines"]
    first = next((i for i, line in enumerate(lines) if " streams in a batch of " in line), None)
    last = next((i for i, line in enumerate(lines) if line.startswith("stage run:")), len(lines))
    return [] if first is None else lines[first:last]


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    tail = [] if result["returncode"] == 0 else result["lines"][-20:]  # what a failure said
    return {
        "command": result["command"],
        "seconds": result["seconds"],
        "returncode": result["returncode"],
        "tail": tail,
    }


def markdown(record: dict[str, Any]) -> str:
    m, engine, tests = record["machine"], record["make_engine"], record["make_test"]
    cameras = record["make_run_sources"]
    bf16 = "yes" if m["avx512_bf16"] else "no"
    rows = [[s["stage"], f"{s['seconds']:.1f}"] for s in engine["stages"]]
    lines = [
        f"# A fresh clone: `make engine` and `make test` ({record['date']}, commit {record['commit']})",
        "",
        f"`{record['command']}` on {m['cpu']} ({m['cores']} cores, AVX-512 BF16 {bf16}); load averages at the end "
        f"{m['load_avg_1_5_15']}.",
        "",
        f"- {_took(engine)}",
        f"- {_took(cameras)}",
        f"- {_took(tests)}; {tests['summary']}",
        "",
        "Stages of `make engine` as they printed their time (the rest is creating the venv and installing):",
        "",
        *table(["stage", "seconds"], rows),
        "",
        "```text",
        *(s["line"] for s in engine["stages"]),
        "```",
        "",
        "Four synthetic cameras through one batched graph (`make run SOURCES=...`, ONNX Runtime on the CPU):",
        "",
        "```text",
        *cameras["report"],
        *(s["line"] for s in cameras["stages"]),
        "```",
    ]
    return "\n".join(lines) + "\n"


def _took(result: dict[str, Any]) -> str:
    seconds = result["seconds"]
    return f"`{result['command']}`: {seconds:.1f} s ({seconds / 60:.1f} min), exit {result['returncode']}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fresh_clone", description=__doc__)
    p.add_argument("--model", default="fcresnet18_t66")
    p.add_argument("--repo", type=Path, default=Path("."), help="the repository to clone (its committed HEAD)")
    args = p.parse_args(argv)
    if not (args.repo / ".git").exists():
        raise UserError("is not a git repository", args.repo)
    record = run(args.repo, args.model)
    out = RESULTS / f"fresh_clone-{record['date']}.json"
    write_json(out, record)
    write_text(out.with_suffix(".md"), markdown(record))
    print(markdown(record))
    print(f"wrote {out}")
    failed = record["make_engine"]["returncode"] or record["make_test"]["returncode"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
