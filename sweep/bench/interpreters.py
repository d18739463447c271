"""What the Python interpreter costs a sweep's processes: the same work on each, in turn.

    .venv/bin/python scripts/bench_interpreters.py [--runs 8] [PYTHON ...]

Every process of a sweep and of the test suite (Ray's workers and daemons, sim servers, the
driver) is an interpreter importing the same modules, so the interpreter's own speed moves all
of them; `scripts/setup.sh` makes the venv on the first Python 3.11 of its list that can make one.
Each interpreter named (default: that list, each binary once, and this venv's) runs, in a fresh
process and taking turns run by run:

- `pure Python`: recursion, a dict of 300,000 strings and its sort, no C library doing the work;
- `import sweep.driver`: what every deployment worker does first (where the interpreter has the
  project's dependencies: a venv's; "-" elsewhere).

CPU is the child's own (user + system, from `wait4`). Prints, per work, each interpreter's
median and range over the runs and its median ratio to the first interpreter named.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.sections import markdown_table

PURE = """
def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)
for _ in range(3):
    fib(25)
    d = {str(i): 2 * i for i in range(300_000)}
    sorted(d.items(), key=lambda kv: -kv[1])
"""
WORK = {"pure Python": PURE, "import sweep.driver": "import sweep.driver"}
SETUP_CANDIDATES = ("/usr/bin/python3.11", "python3.11", "python3")  # scripts/setup.sh's order
REPO = Path(__file__).resolve().parents[2]


def default_interpreters() -> list[str]:
    """setup.sh's candidates that run, each binary once, then this venv's interpreter.

    A pyenv shim is resolved to the binary it starts.
    """
    found: dict[str, str] = {}
    for name in SETUP_CANDIDATES:
        if not shutil.which(name):
            continue
        done = subprocess.run([name, "-c", "import sys; print(sys.executable)"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode == 0 and done.stdout.strip():
            binary = done.stdout.strip()
            found.setdefault(os.path.realpath(binary), binary)
    return [*found.values(), sys.executable]


def child_cpu_s(python: str, code: str) -> float | None:
    """User + system CPU of one fresh `python -c code` in the repository; None if it failed."""
    proc = subprocess.Popen([python, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime if proc.returncode == 0 else None


def measure(pythons: list[str], runs: int) -> dict[tuple[str, str], list[float]]:
    """CPU-s of every (work, interpreter) over `runs` rounds; the order turns every round."""
    cpu: dict[tuple[str, str], list[float]] = {}
    for r in range(runs):
        order = pythons if r % 2 == 0 else pythons[::-1]
        for work, code in WORK.items():
            for python in order:
                value = child_cpu_s(python, code)
                if value is not None:
                    cpu.setdefault((work, python), []).append(value)
        print(f"round {r + 1} of {runs} done", file=sys.stderr)
    return cpu


def table(pythons: list[str], cpu: dict[tuple[str, str], list[float]]) -> str:
    """Markdown: per work and interpreter, its runs, median, range and ratio.

    The ratio is to the first interpreter (in the order named) that ran that work.
    """
    rows = []
    for work in WORK:
        first = next((cpu[work, p] for p in pythons if cpu.get((work, p))), None)
        for python in pythons:
            values = cpu.get((work, python))
            if not values:
                rows.append([work, python, "0", "-", "-", "-"])
                continue
            median = statistics.median(values)
            ratio = f"{median / statistics.median(first):.2f}" if first else "-"
            spread = f"{min(values):.3f}-{max(values):.3f}"
            rows.append([work, python, str(len(values)), f"{median:.3f}", spread, ratio])
    head = ["work", "interpreter", "runs", "CPU-s median", "range", "ratio to the first"]
    return markdown_table(pd.DataFrame(rows, columns=head))


def parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pythons", nargs="*", help="interpreters (default: setup.sh's and this venv's)")
    p.add_argument("--runs", type=int, default=8, help="rounds, each running every pair once")
    return p


def run(args: argparse.Namespace) -> None:
    """Measure in turn, then print the table."""
    pythons = args.pythons or default_interpreters()
    print(table(pythons, measure(pythons, args.runs)))
