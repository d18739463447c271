"""Cut the test slices of the published traces: the first rows of each, bytes as published.

`tests/fixtures/traces/<name>.<csv|jsonl>` holds the header (a CSV's) and the first rows of the
published trace `<name>` (`sweep.datasets.trace_catalog`), copied line for line from the file,
which is downloaded into the cache on first use (or put there by hand). The Azure conversation
trace keeps 2,000 rows and Mooncake's conversation trace 1,000 (the acceptance replays of
`tests/e2e/test_published_traces.py`), the others `--rows`. A trace whose file cannot be had is
named and left out. `tests/fixtures/traces/README.md` gives their licences and sources.

    .venv/bin/python -m scripts.bench.trace_fixtures [--rows 300] [--out tests/fixtures/traces]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep.core.errors import DatasetError
from sweep.datasets.trace_catalog import CATALOG, local_copy
from sweep.tools import REPO

OUT = REPO / "tests" / "fixtures" / "traces"
ROWS = {"azure_conv_2023": 2000, "mooncake_conversation": 1000}


def fixture_path(name: str, out: Path = OUT) -> Path:
    """Where the slice of published trace `name` is kept."""
    return out / f"{name}{Path(CATALOG[name].file).suffix}"


def cut(name: str, rows: int, out: Path) -> Path:
    """Write the first `rows` rows of trace `name` (and a CSV's header) to its fixture file."""
    source = Path(local_copy(name))
    header = 1 if source.suffix == ".csv" else 0
    lines = []
    with source.open("rb") as file:
        for line in file:
            lines.append(line if line.endswith(b"\n") else line + b"\n")
            if len(lines) == rows + header:
                break
    target = fixture_path(name, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines))
    return target


def parser() -> argparse.ArgumentParser:
    """This tool's options (`python -m scripts.bench.trace_fixtures`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="rows of the other traces")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser


def run(args: argparse.Namespace) -> None:
    """Cut every published trace that can be had; name the ones that cannot."""
    for name in CATALOG:
        try:
            path = cut(name, ROWS.get(name, args.rows), args.out)
        except DatasetError as exc:
            print(f"{name}: left out: {exc}")
            continue
        print(f"{name}: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    run(parser().parse_args())
