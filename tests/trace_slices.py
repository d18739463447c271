"""The slices of the published traces the trace tests read, or stand-ins in their exact formats.

The slices themselves (`tests/fixtures/traces/`, made by `scripts.bench.trace_fixtures`) are not
in the repository: data fetched from a public repository is not committed here. Where a slice is
absent, `slice_path` writes a stand-in the project makes, once per test process: the same header
or keys, the same date format, the same kind of rows (Azure's short chat and code requests;
Mooncake's long contexts, most of them over the tiny model's 4096 tokens, their first row 6758
tokens in and 500 out as in the published file, prefix blocks of 512 tokens sharing block 0).
Every expected value in the tests is computed from the file read, so a test runs the same on
either.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "traces"
BLOCK = 512  # Mooncake's prefix block, in tokens
_STANDINS: Path | None = None


def slice_path(filename: str) -> Path:
    """The published slice `filename` where it exists, else a stand-in in its format."""
    real = FIXTURES / filename
    if real.is_file():
        return real
    path = _standin_dir() / filename
    if not path.is_file():
        stem, rows = MAKERS[filename]
        path.write_text(stem(np.random.default_rng(len(filename)), rows))
    return path


def _standin_dir() -> Path:
    global _STANDINS
    if _STANDINS is None:
        _STANDINS = Path(tempfile.mkdtemp(prefix="trace-standins-"))
        atexit.register(shutil.rmtree, _STANDINS, True)
    return _STANDINS


def _azure(rng: np.random.Generator, rows: int, input_median: float, gap_s: float) -> str:
    """Azure's 2023 format: a date-time with seven fractional digits, then two counts."""
    at = datetime(2023, 11, 16, 18, 15, 46, 680590)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for _ in range(rows):
        context = int(np.clip(rng.lognormal(math.log(input_median), 0.9), 2, 20000))
        generated = int(np.clip(rng.lognormal(math.log(60), 1.0), 1, 2000))
        lines.append(f"{at:%Y-%m-%d %H:%M:%S.%f}0,{context},{generated}")
        at += timedelta(microseconds=int(rng.exponential(gap_s) * 1e6))
    return "\n".join(lines) + "\n"


def _mooncake(rng: np.random.Generator, rows: int, input_median: float, gap_ms: float) -> str:
    """Mooncake's JSON lines: a millisecond timestamp, two lengths and the prefix blocks."""
    lines, next_block, at = [], 1, 0
    for row in range(rows):
        if row == 0:
            length, output = 6758, 500  # the published file's first row
        else:
            length = int(np.clip(rng.lognormal(math.log(input_median), 0.8), 100, 60000))
            output = int(np.clip(rng.lognormal(math.log(300), 1.0), 1, 2000))
        blocks = math.ceil(length / BLOCK)
        hash_ids = [0, *range(next_block, next_block + blocks - 1)]  # block 0: a shared prefix
        next_block += blocks - 1
        record = {"timestamp": at, "input_length": length, "output_length": output,
                  "hash_ids": hash_ids}  # fmt: skip
        lines.append(json.dumps(record))
        at += 1000 * int(rng.poisson(gap_ms / 1000))  # whole seconds, as published
    return "\n".join(lines) + "\n"


MAKERS = {
    "azure_conv_2023.csv": (lambda rng, n: _azure(rng, n, 1000, 0.3), 2000),
    "azure_code_2023.csv": (lambda rng, n: _azure(rng, n, 2000, 0.05), 300),
    "mooncake_conversation.jsonl": (lambda rng, n: _mooncake(rng, n, 7000, 330), 1000),
    "mooncake_synthetic.jsonl": (lambda rng, n: _mooncake(rng, n, 4000, 290), 300),
}
