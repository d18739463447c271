"""Write the two request traces shipped in `sweep/data/traces/`: the same bytes on every run.

- `bursty.jsonl.gz`, Mooncake's format: a steady 10 req/s with bursts of 100 req/s for a few
  seconds, about every 12 s, over 75 s. Every row has `hash_ids` of 512-token blocks; half the
  requests open with one of 8 shared system prompts of 1 or 2 blocks (zipf-popular).
- `diurnal.csv.gz`, BurstGPT's columns: a day of traffic squeezed into 120 s, the rate following
  a sine from 2 req/s at night to 38 req/s at noon, 20 req/s on average; no prefix blocks.

Lengths fit the tiny model's 4096-token context. Usage:
    .venv/bin/python -m scripts.bench.shipped_traces [OUT_DIR]   # default: sweep/data/traces
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from sweep.tools import REPO

OUT = REPO / "sweep" / "data" / "traces"
BLOCK = 512  # tokens per hash_ids block: the default dataset.block_size (Mooncake's)
CONTEXT = 4096  # the tiny model's


def bursty(rng: np.random.Generator) -> list[dict]:
    """Rows of the bursty trace: Poisson arrivals at a base rate, plus Poisson bursts."""
    span_s, base_rate, burst_rate = 75.0, 10.0, 100.0
    times = list(np.cumsum(rng.exponential(1 / base_rate, size=int(span_s * base_rate * 2))))
    start = rng.uniform(2, 8)
    while start < span_s - 3:
        length = rng.uniform(1.5, 3.5)
        times += list(start + rng.uniform(0, length, size=rng.poisson(burst_rate * length)))
        start += rng.uniform(9, 15)
    times = sorted(t for t in times if t < span_s)
    # Shared system prompts: prompt k has 1 or 2 blocks; popularity ~ 1 / (k + 1).
    prefixes = [list(range(2 * k, 2 * k + 1 + (k % 4 == 3))) for k in range(8)]
    weights = 1 / np.arange(1, 9)
    next_id = 16
    rows = []
    for t in times:
        output = int(np.clip(rng.lognormal(math.log(120), 0.7), 4, 1024))
        length = int(np.clip(rng.lognormal(math.log(300), 0.6), 32, CONTEXT - output))
        blocks = []
        if rng.random() < 0.5:
            blocks = prefixes[rng.choice(8, p=weights / weights.sum())]
            length = max(length, len(blocks) * BLOCK + 16)  # the prefix and some text of its own
        own = math.ceil(length / BLOCK) - len(blocks)
        blocks = blocks + list(range(next_id, next_id + own))
        next_id += own
        rows.append(
            {"timestamp": int(t * 1000), "input_length": length, "output_length": output,
             "hash_ids": blocks}
        )  # fmt: skip
    return rows


def diurnal(rng: np.random.Generator) -> list[dict]:
    """Rows of the diurnal trace: an inhomogeneous Poisson process drawn by thinning."""
    span_s, mean_rate, swing = 120.0, 20.0, 0.9
    peak = mean_rate * (1 + swing)
    rows, t = [], 0.0
    while True:
        t += rng.exponential(1 / peak)
        if t >= span_s:
            break
        rate = mean_rate * (1 - swing * math.cos(2 * math.pi * t / span_s))  # midnight at 0
        if rng.random() >= rate / peak:
            continue
        output = int(np.clip(rng.lognormal(math.log(150), 0.8), 1, 1024))
        length = int(np.clip(rng.lognormal(math.log(250), 0.9), 8, CONTEXT - output))
        model = "GPT-4" if rng.random() < 0.2 else "ChatGPT"
        kind = "API log" if rng.random() < 0.3 else "Conversation log"
        rows.append(
            {"Timestamp": f"{t:.3f}", "Model": model, "Request tokens": length,
             "Response tokens": output, "Total tokens": length + output, "Log Type": kind}
        )  # fmt: skip
    return rows


def gzipped(text: str) -> bytes:
    """Gzip with no name or time in the header, so the bytes depend on the text only."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(text.encode())
    return buffer.getvalue()


def write_traces(out: Path = OUT) -> None:
    """Write both traces into `out`, saying how many requests each holds."""
    out.mkdir(parents=True, exist_ok=True)
    rows = bursty(np.random.default_rng(14))
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (out / "bursty.jsonl.gz").write_bytes(gzipped(lines))
    print(f"{out / 'bursty.jsonl.gz'}: {len(rows)} requests")
    rows = diurnal(np.random.default_rng(15))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "diurnal.csv.gz").write_bytes(gzipped(text.getvalue()))
    print(f"{out / 'diurnal.csv.gz'}: {len(rows)} requests")


if __name__ == "__main__":
    write_traces(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
