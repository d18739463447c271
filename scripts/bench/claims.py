"""Whether a sweep's findings state the same claims run after run, on a quiet and a busy machine.

Runs an experiment (the quickstart by default) several times through `python -m sweep`, as a
user does, some runs with a CPU burner (a busy loop at niceness 0 on the machine's last core,
where the load generator and part of the sweep run), and compares what each report's findings
claim. A claim is a findings line with its numbers taken out and each group of configurations it
names read as a set: "**A** (3.0 ms) and **B** (+1.8% [-3.0%, +6.9%]) lead on median TTFT" and
"**B** (2.9 ms) and **A** (-1.7% [..]) lead on median TTFT" are the same claim, since which one
of a group within noise of each other came first is itself noise.

It prints, per run: the condition, the trials the report calls too short to trust, whether the
claims are those of the first run, and what differs.

    .venv/bin/python -m scripts.bench.claims [--quiet-runs 3] [--busy-runs 1] [EXTRA_OVERRIDES ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOLD = re.compile(r"\*\*(.+?)\*\*")
# Numbers, with their units and intervals: "4,495.8 tok/s", "5.42x [4.93x, 5.97x]", "(+2.8% ...)".
INTERVAL = re.compile(r"\[[^\]]*\]")
NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?\s*(x|%|ms|tok/s|s)?(?![\w])")
TOO_SHORT = re.compile(r"(\d+) (?:of \d+ )?trials? (?:are |is )?too short", re.I)


def findings_lines(report: str) -> list[str]:
    """The bullet lines of the report's Findings section, joined across wrapped lines."""
    section = report.split("## Findings", 1)[-1].split("\n## ", 1)[0]
    lines, current = [], ""
    for raw in section.splitlines():
        if raw.startswith("- "):
            if current:
                lines.append(current)
            current = raw[2:].strip()
        elif raw.strip() and current:
            current += " " + raw.strip()
    if current:
        lines.append(current)
    return lines


def claim(line: str) -> tuple:
    """A findings line as a claim: its wording without numbers, each named group as a set."""
    segments = []
    for part in re.split(r"; |: ", line):
        names = frozenset(BOLD.findall(part))
        words = BOLD.sub("#", part)
        words = INTERVAL.sub("", words)
        words = NUMBER.sub("", words)
        words = re.sub(r"\(\s*\)", "", words)
        words = re.sub(r"#(\s*(,|and)\s*#)+", "#", words)  # a group is one placeholder
        segments.append((" ".join(words.split()), names))
    return tuple(segments)


def claims(report: str) -> set[tuple]:
    """Every claim of the report's findings."""
    return {claim(line) for line in findings_lines(report)}


def too_short(report: str) -> int:
    """How many trials the report says are too short to trust (0 when it says none)."""
    found = [int(m.group(1)) for m in TOO_SHORT.finditer(report)]
    return max(found, default=0)


def burner() -> subprocess.Popen:
    """A busy loop at niceness 0 on the machine's last core, until killed."""
    last = max(os.sched_getaffinity(0))
    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        preexec_fn=lambda: os.sched_setaffinity(0, {last}),
    )


def one_run(out: Path, experiment: str, overrides: list[str], busy: bool) -> tuple[str, float]:
    """One sweep into `out` (with the burner when `busy`): its report.md and wall time."""
    load = burner() if busy else None
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sweep", f"+experiment={experiment}", f"output.dir={out}",
             *overrides],
            cwd=REPO, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        if load is not None:
            load.kill()
            load.wait()
    if done.returncode != 0:
        sys.exit(f"the sweep failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
    report = next(out.glob("*/report.md")).read_text()
    return report, time.monotonic() - started


def parser() -> argparse.ArgumentParser:
    """The command line of scripts/bench/claims.py."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="quickstart")
    p.add_argument("--quiet-runs", type=int, default=3)
    p.add_argument("--busy-runs", type=int, default=1, help="runs with a CPU burner")
    p.add_argument(
        "--out", type=Path, help="keep each run's results here (default: a temporary folder)"
    )
    p.add_argument("overrides", nargs="*", help="extra overrides for every sweep")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the sweeps, print the table; 0 when every run has run 1's claims and none too short."""
    conditions = ["quiet"] * args.quiet_runs + ["busy"] * args.busy_runs
    rows, first = [], None
    with tempfile.TemporaryDirectory(prefix="claims-") as tmp:
        root = args.out or Path(tmp)
        for i, condition in enumerate(conditions):
            report, wall = one_run(root / str(i + 1), args.experiment, args.overrides,
                                   condition == "busy")  # fmt: skip
            stated = claims(report)
            if first is None:
                first = stated
            rows.append((i + 1, condition, wall, too_short(report), stated == first,
                         stated ^ first))  # fmt: skip
            print(f"run {i + 1} ({condition}) done in {wall:.0f} s", file=sys.stderr)
    print(f"\n{'run':>3}  {'condition':<9} {'wall s':>6}  {'too short':>9}  same claims as run 1")
    for n, condition, wall, short, same, _ in rows:
        print(f"{n:>3}  {condition:<9} {wall:>6.0f}  {short:>9}  {'yes' if same else 'NO'}")
    print("\nclaims of run 1:")
    for c in sorted(first or (), key=str):
        print("  " + " | ".join(f"{text} {sorted(names) if names else ''}" for text, names in c))
    for n, _, _, _, same, differ in rows:
        if not same:
            print(f"\nrun {n} differs in:")
            for c in sorted(differ, key=str):
                side = "only run 1" if c in (first or ()) else f"only run {n}"
                print(f"  [{side}] " + " | ".join(f"{t} {sorted(ns) if ns else ''}" for t, ns in c))
    ok = all(same and short == 0 for _, _, _, short, same, _ in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run(parser().parse_args()))
