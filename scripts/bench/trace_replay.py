"""How faithfully a trace replay keeps the trace's own times, judged by the server's arrival stamps.

Runs `python -m sweep +experiment=trace_replay` (the user's path, through Ray) on one shipped
trace at the trace's own rate and `--speedup` times faster, with `SIM_STAMPS_DIR` set so that the
sim server writes its per-request stamps as it stops (`backends.sim_server`). For each measured
request, the error is |trace offset - server arrival offset|: the trace's offset of its row since
the first measured row, divided by the speedup, against the server's arrival stamp since the first
measured request's (the two clocks aligned by the first request; one column aligns them by the
median difference instead). Prints one table, a row per run and speedup.

    .venv/bin/python -m scripts.bench.trace_replay [--trace bursty] [--speedup 4] [--runs 3]
        [--no-floor] [override ...]

Unless `--no-floor`, it first measures how late this machine wakes a sleeping process at all
(`scripts.bench.wakeups`, about 30 s) and prints that table after its own: a replayed arrival
needs the client to wake for its send and the server to wake for its read, so no replay here
can be more exact than those wake-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.report.sections import markdown_table
from scripts.bench import wakeups
from sweep.core import records as R
from sweep.datasets.trace import read
from sweep.loadgen.request_ids import parse as parse_id
from sweep.tools import REPO


def run_sweep(
    trace: str, speedups: list[float], out: Path, stamps: Path, overrides: list[str]
) -> None:
    """The replay at each speedup, one trial each, in one sweep (one sim server)."""
    command = [
        sys.executable, "-m", "sweep", "+experiment=trace_replay", f"output.dir={out}",
        f"sweep.grid.dataset.path=[{trace}]",
        f"+sweep.grid.dataset.speedup=[{','.join(str(s) for s in speedups)}]", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "SIM_STAMPS_DIR": str(stamps)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")


def server_runs(stamps: Path) -> list[np.ndarray]:
    """Per trial, in the order they ran: the server's arrival stamps (ns) by request index."""
    found: dict[str, dict[int, int]] = {}
    for path in stamps.glob("sim-stamps-*.json"):
        for rid, stamp in json.loads(path.read_text()).items():
            request = parse_id(rid)
            if request is not None and not request.warmup:
                found.setdefault(request.run, {})[request.idx] = stamp["arrival_ns"]
    runs = [np.array([by_idx[i] for i in sorted(by_idx)]) for by_idx in found.values()]
    return sorted(runs, key=lambda arrivals: arrivals.min())


def trials(out: Path) -> pd.DataFrame:
    """The sweep's summary rows, in the order the trials ran."""
    rows = pd.concat(pd.read_parquet(p) for p in out.glob(f"*/*/*/{R.SUMMARY_FILE}"))
    return rows.sort_values(R.STARTED_UNIX_S).reset_index(drop=True)


def differences_ms(trace_s: np.ndarray, arrivals_ns: np.ndarray, speedup: float) -> np.ndarray:
    """Server arrival offset - trace offset per request, clocks aligned by the first request."""
    expected = (trace_s - trace_s[0]) / speedup
    seen = (arrivals_ns - arrivals_ns[0]) / 1e9
    return (seen - expected) * 1e3


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.trace_replay`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="bursty", help="a shipped trace or a trace file")
    parser.add_argument("--speedup", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--no-floor", action="store_true",
        help="skip the machine's own wake-up lateness (scripts.bench.wakeups), measured first",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="more overrides, e.g. backend.itl_ms=10")
    return parser


def run(args: argparse.Namespace) -> None:
    """Replay the trace `--runs` times; print the table, then the machine's wake-up floor."""
    floor = None if args.no_floor else wakeup_floor()
    trace = read(args.trace)
    speedups = [1.0, args.speedup]
    table = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
            out, stamps = Path(tmp) / "results", Path(tmp) / "stamps"
            stamps.mkdir()
            run_sweep(args.trace, speedups, out, stamps, args.overrides)
            rows, arrivals = trials(out), server_runs(stamps)
        if len(arrivals) != len(rows):
            sys.exit(f"{len(rows)} trials but the server saw {len(arrivals)} runs of requests")
        for (_, row), seen in zip(rows.iterrows(), arrivals, strict=True):
            warm = int(row["workload.warmup_requests"])
            offsets = np.array(trace.arrival_s[warm : warm + len(seen)])
            difference = differences_ms(offsets, seen, float(row["dataset.speedup"]))
            error = np.abs(difference)
            aligned = np.abs(difference - np.median(difference))
            table.append(
                {
                    "run": run,
                    "trace": args.trace,
                    "speedup": row["dataset.speedup"],
                    "requests": len(seen),
                    "p50 ms": np.percentile(error, 50),
                    "p99 ms": np.percentile(error, 99),
                    "max ms": error.max(),
                    # Aligned by the median instead: what is left once a late first request's
                    # shift of every other offset is taken out.
                    "p50 ms, median-aligned": np.percentile(aligned, 50),
                    "p99 ms, median-aligned": np.percentile(aligned, 99),
                    "client send lag p99 ms": row[R.SEND_LAG_MS_P99],
                }
            )
    print(markdown_table(pd.DataFrame(table).round(2)))
    if floor is not None:
        print("\nThis machine's wake-up lateness, measured just before (no load, no server):\n")
        print(floor)


def wakeup_floor() -> str:
    """`scripts.bench.wakeups`' table: no replay's error can be below its wake-ups'."""
    return wakeups.table(rounds=2, waits_per_round=500)


if __name__ == "__main__":
    run(parser().parse_args())
