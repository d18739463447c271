"""The tests of a reference checkout that this one still has, to time the same coverage.

The suite's time is compared with an older commit's (docs/benchmarks.md, "The test suite"); the
suite has grown since, so its time is also taken on the reference's own tests alone. A test is
the same when its id is, or, moved to another file, its name (function and parameters):

    .venv/bin/python scripts/bench_same_tests.py REFERENCE_CHECKOUT > /tmp/same.txt
    bash scripts/test.sh -q @/tmp/same.txt      # pytest reads the ids from the file

Each checkout's tests are collected by its own venv (`-m "not gpu"`, as its test command runs
them). The ids go to stdout, one a line; how many matched, and the reference's tests that match
none (renamed or removed), to stderr.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collected(checkout: Path) -> list[str]:
    """The test ids `pytest --collect-only` lists in `checkout`, with its own venv."""
    done = subprocess.run(
        [str(checkout / ".venv" / "bin" / "python"), "-m", "pytest", "--collect-only", "-q",
         "-m", "not gpu", "-p", "no:cacheprovider"],
        cwd=checkout, capture_output=True, text=True, check=False,
    )  # fmt: skip
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not ids:
        raise SystemExit(f"error: collecting the tests of {checkout} failed: {done.stdout[-500:]}")
    return ids


def name(test_id: str) -> str:
    """A test's name without its file: `test_x[param]`, or `TestCase::test_x`."""
    return test_id.split("::", 1)[1]


def same_tests(ours: list[str], reference: list[str]) -> tuple[list[str], list[str]]:
    """Our tests that are the reference's, by id or else by name, in our order.

    Also returns the reference's tests that none of ours is (renamed or removed).
    """
    ids, names = set(reference), {name(r) for r in reference}
    same = [t for t in ours if t in ids or name(t) in names]
    kept_ids, kept_names = set(same), {name(t) for t in same}
    gone = [r for r in reference if r not in kept_ids and name(r) not in kept_names]
    return same, gone


def main(argv: list[str] | None = None) -> int:
    """Print the matched ids (stdout) and the count with the unmatched (stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="the reference commit's checkout, set up")
    args = parser.parse_args(argv)
    reference, ours = collected(args.reference), collected(REPO)
    same, gone = same_tests(ours, reference)
    print("\n".join(same))
    counts = f"{len(same)} of this checkout's {len(ours)} tests are the reference's"
    print(f"{counts} ({len(reference)}; {len(gone)} renamed or removed)", file=sys.stderr)
    for test_id in gone:
        print(f"  not here: {test_id}", file=sys.stderr)
    return 0
