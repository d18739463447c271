"""Whether the capacity search finds what a dense grid of request rates finds, with fewer trials.

For each server capacity (the sim server's `backend.max_num_seqs`: at most N requests run, the
rest queue, so the knee is the server's) this runs, through `python -m sweep` as a user would:

- one dense fixed grid of request rates (`search=none`), geometric with a step finer than the
  search's tolerance, from well below to well above the knee. The truth for an SLO is the
  highest grid rate whose trial meets it, judged by the search's own rule
  (`sweep.core.slo.verdict`, then the over-saturation check of `sweep.worker.search_run.judged`);
- one capacity search (`search=capacity`) per SLO; its answer is `sweep.worker.search.capacity` over
  its probes, as the sweep reports it.

It prints, per (capacity, SLO): the truth, the capacity found, the error, whether the found
capacity is within tolerance of the truth counting the grid's own step (truth x (1 - tol) <=
found <= truth x (1 + step) x (1 + tol): the knee lies somewhere in [truth, truth x (1 + step))),
the probes against the grid's trials, and wall time (the trials' own `wall_s`, and each sweep's
elapsed time; the grid's is shared by the SLOs of its capacity). Where the grid's verdicts are
not monotone in the rate (noise near the knee), the pattern around the truth is printed.

Goal (issue 13): every row within tolerance, with at least 3x fewer probes than grid trials.

    .venv/bin/python -m scripts.bench.capacity_search [--quick] [--capacities 4,8] [--out DIR]
    .venv/bin/python -m scripts.bench.capacity_search --slo ttft_ms_p90=60 --slo e2e_ms_mean=250
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.report.sections import markdown_table
from sweep.core import records as R
from sweep.core.config import SearchConfig, SLOConfig
from sweep.core.slo import verdict
from sweep.worker.search import capacity
from sweep.worker.search_run import kept_up_rate, known_probe

RATE = "workload.request_rate"
REQUESTS_PATH = "_requests_path"
DEFAULT_SLOS = ("ttft_ms_p90=60", "ttft_ms_median=40", "e2e_ms_p90=300")
GOAL_FEWER = 3.0
STARTUP_ATTEMPTS = 3
RAY_START_TIMEOUT = "timed out during startup"


@dataclass(frozen=True)
class Sweep:
    """One `python -m sweep` run: its summary rows and elapsed wall time."""

    rows: pd.DataFrame
    elapsed_s: float


def parser() -> argparse.ArgumentParser:
    """This benchmark's options; `settle` completes what they give."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one capacity (4), 8%% grid steps, 60 requests"
    )
    parser.add_argument(
        "--capacities", default="4,8", help="backend.max_num_seqs values (default 4,8)"
    )
    parser.add_argument(
        "--slo",
        action="append",
        help=f"COLUMN=LIMIT, repeatable (default {' '.join(DEFAULT_SLOS)})",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="search.tolerance (default 0.05)"
    )
    parser.add_argument(
        "--grid-step", type=float, default=0.04, help="relative grid step (default 0.04)"
    )
    parser.add_argument(
        "--grid-low", type=float, default=0.35, help="lowest grid rate / knee (default 0.35)"
    )
    parser.add_argument(
        "--grid-high", type=float, default=1.2, help="highest grid rate / knee (default 1.2)"
    )
    parser.add_argument(
        "--num-requests", type=int, default=100, help="workload.num_requests (default 100)"
    )
    parser.add_argument("--start", type=float, default=8.0, help="search.start req/s (default 8)")
    parser.add_argument(
        "--max-load", type=float, default=256.0, help="search.max_load (default 256)"
    )
    parser.add_argument("--max-probes", type=int, default=12, help="search.max_probes (default 12)")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="backend.ttft_ms (default 20)")
    parser.add_argument("--itl-ms", type=float, default=5.0, help="backend.itl_ms (default 5)")
    parser.add_argument(
        "--output-len", type=int, default=32, help="output (and input) tokens (default 32)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default: a new temporary one)")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    return parser


def settle(args: argparse.Namespace) -> argparse.Namespace:
    """`--quick`'s settings, and the default SLOs when none was given."""
    if args.quick:
        args.capacities, args.grid_step, args.num_requests = "4", 0.08, 60
    args.slo = args.slo or list(DEFAULT_SLOS)
    return args


def run(args: argparse.Namespace) -> int:
    """Per capacity, the dense grid, then a search per SLO; print the table and the goal."""
    args = settle(args)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_search-"))
    slos = [parse_slo(text) for text in args.slo]
    log(f"results in {out}; load average {load_average()}")
    started = time.monotonic()
    rows = []
    for seqs in [int(n) for n in args.capacities.split(",")]:
        rates = grid_rates(args, seqs)
        log(f"max_num_seqs={seqs}: grid of {len(rates)} rates, {rates[0]:g} to {rates[-1]:g} req/s")
        grid = run_sweep(args, out, f"grid_n{seqs}", seqs, grid_overrides(rates))
        for text, slo in zip(args.slo, slos, strict=True):
            log(f"max_num_seqs={seqs}: search for {text}")
            search = run_sweep(
                args,
                out,
                f"search_n{seqs}_{text.replace('=', '_')}",
                seqs,
                search_overrides(args, text),
            )
            rows.append(compare(args, seqs, text, slo, grid, search))
    report(args, rows, time.monotonic() - started)
    log(f"load average {load_average()}")
    return 0


def grid_rates(args: argparse.Namespace, seqs: int) -> list[float]:
    """Geometric rates from grid_low to grid_high times the server's knee (seqs / service time)."""
    service_s = (args.ttft_ms + (args.output_len - 1) * args.itl_ms) / 1000.0
    knee = seqs / service_s
    low, high = args.grid_low * knee, args.grid_high * knee
    count = math.ceil(math.log(high / low) / math.log(1 + args.grid_step)) + 1
    return [round(low * (1 + args.grid_step) ** i, 2) for i in range(count)]


def grid_overrides(rates: list[float]) -> list[str]:
    """The overrides of the dense grid: no search, one trial per rate."""
    return [
        "search=none",
        f"+sweep.grid.workload.request_rate=[{','.join(f'{r:g}' for r in rates)}]",
    ]


def search_overrides(args: argparse.Namespace, slo_text: str) -> list[str]:
    """The overrides of one capacity search for the SLO `slo_text`."""
    return [
        "search=capacity",
        f"slo.{slo_text}",
        f"search.start={args.start:g}",
        f"search.max_load={args.max_load:g}",
        f"search.tolerance={args.tolerance:g}",
        f"search.max_probes={args.max_probes}",
    ]


def run_sweep(args: argparse.Namespace, out: Path, name: str, seqs: int, extra: list[str]) -> Sweep:
    """Run `python -m sweep` (the quickstart_capacity experiment, one capacity); read its rows."""
    command = [
        sys.executable, "-m", "sweep", "+experiment=quickstart_capacity",
        f"output.dir={out}", f"sweep.name={name}", f"sweep.grid.backend.max_num_seqs=[{seqs}]",
        f"backend.ttft_ms={args.ttft_ms:g}", f"backend.itl_ms={args.itl_ms:g}",
        f"workload.num_requests={args.num_requests}", f"workload.output_len={args.output_len}",
        f"dataset.input_len={args.output_len}", "workload.warmup_requests=2",
        "slo.ttft_ms_p99=null", *extra,
    ]  # fmt: skip
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_path = out / "logs" / f"{name}.log"
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        started = time.monotonic()
        with log_path.open("w") as log_file:
            log_file.write(" ".join(command) + "\n")
            log_file.flush()
            code = subprocess.call(command, stdout=log_file, stderr=subprocess.STDOUT)
        elapsed = time.monotonic() - started
        text = log_path.read_text()
        # On a busy shared machine Ray's own start can time out before any trial runs: a
        # failure of the machine, not of the sweep, so that attempt is not counted.
        if code == 0 or RAY_START_TIMEOUT not in text or attempt == STARTUP_ATTEMPTS:
            break
        log(f"  {name}: Ray did not start (attempt {attempt}); trying again")
        time.sleep(10)
    if code != 0:
        tail = text.splitlines()[-15:]
        raise SystemExit(f"{name}: python -m sweep exited {code} ({log_path}):\n" + "\n".join(tail))
    files = glob.glob(str(out / name / "*" / "*" / "summary.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    rows[REQUESTS_PATH] = [str(Path(f).with_name(R.REQUESTS_FILE)) for f in files]
    log(f"  {name}: {len(rows)} trials, {elapsed:.0f} s")
    return Sweep(rows, elapsed)


def compare(
    args: argparse.Namespace, seqs: int, text: str, slo: SLOConfig, grid: Sweep, search: Sweep
) -> dict:
    """One row of the table: the grid's truth and the search's answer for one SLO."""
    graded = grid.rows.sort_values(RATE)
    rates = graded[RATE].tolist()
    passed = [grid_passed(slo, row) for row in graded.to_dict("records")]
    truth = max((r for r, ok in zip(rates, passed, strict=True) if ok), default=0.0)
    probes = search.rows.sort_values(R.SEARCH_PROBE)
    history = [known_probe(row) for row in probes.to_dict("records")]
    settings = SearchConfig(
        mode="capacity",
        start=args.start,
        max_load=args.max_load,
        tolerance=args.tolerance,
        max_probes=args.max_probes,
    )
    found = capacity(settings, history)
    error = (found.load - truth) / truth if truth else math.nan
    low, high = truth * (1 - args.tolerance), truth * (1 + args.grid_step) * (1 + args.tolerance)
    within = truth > 0 and low <= found.load <= high
    probe_s = probes[R.WALL_S].sum()
    edge = "" if 0 < truth < rates[-1] else " (truth at the grid's edge: widen it)"
    return {
        "max_num_seqs": seqs,
        "SLO": text,
        "truth (grid) req/s": f"{truth:.2f}",
        "found (search) req/s": f"{found.load:.2f}",
        "error %": f"{error * 100:+.1f}",
        "within tolerance": ("yes" if within else "no") + edge,
        "probes search / grid": f"{len(probes)} / {len(graded)}",
        "fewer probes": f"{len(graded) / max(len(probes), 1):.1f}x",
        "trial wall s search / grid": f"{probe_s:.0f} / {graded[R.WALL_S].sum():.0f}",
        "sweep elapsed s search / grid": f"{search.elapsed_s:.0f} / {grid.elapsed_s:.0f}",
        "_within": within,
        "_fewer": len(graded) / max(len(probes), 1),
        "_probes": marks(probes[R.SEARCH_LOAD], [p.passed for p in history], probes),
        "_search": found.reason,
        "_saturated": int(graded[R.CLIENT_SATURATED].fillna(False).astype(bool).sum()),
        "_pattern": knee_pattern(rates, passed, graded),
    }


def grid_passed(slo: SLOConfig, row: dict) -> bool:
    """The search's rule on a grid trial: the SLO verdict, then the over-saturation check."""
    if not verdict(slo, row).passed:
        return False
    achieved, offered = row.get(R.REQUEST_THROUGHPUT) or 0.0, row[RATE]
    requests = pd.read_parquet(row[REQUESTS_PATH])
    return achieved >= SearchConfig().saturation_ratio * kept_up_rate(row, offered, requests)


def knee_pattern(rates: list[float], passed: list[bool], rows: pd.DataFrame) -> str:
    """The verdicts from the lowest failure to the highest pass, when they are not monotone."""
    fails = [r for r, ok in zip(rates, passed, strict=True) if not ok]
    passes = [r for r, ok in zip(rates, passed, strict=True) if ok]
    if not fails or not passes or min(fails) > max(passes):
        return ""
    keep = [min(fails) <= r <= max(passes) for r in rates]
    span = rows[keep]
    return marks(span[RATE], [ok for ok, k in zip(passed, keep, strict=True) if k], span)


def marks(loads: pd.Series, passed: list[bool], rows: pd.DataFrame) -> str:
    """`12.6✓ 13.8✗!`: each load, its verdict, and `!` where the client flagged itself saturated."""
    flagged = rows[R.CLIENT_SATURATED].fillna(False).astype(bool).tolist()
    return " ".join(
        f"{load:g}{'✓' if ok else '✗'}{'!' if flag else ''}"
        for load, ok, flag in zip(loads.tolist(), passed, flagged, strict=True)
    )


def report(args: argparse.Namespace, rows: list[dict], elapsed_s: float) -> None:
    """Print the table, the probe sequences, the noisy knees and whether the goal was met."""
    table = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows])
    print(markdown_table(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(
        "\nProbe sequences (load req/s, ✓ pass, ✗ fail, ! client flagged itself saturated) and "
        "how each search ended:"
    )
    for row in rows:
        print(f"- n={row['max_num_seqs']} {row['SLO']}: {row['_probes']} ({row['_search']})")
    noisy = [row for row in rows if row["_pattern"]]
    saturated = {row["max_num_seqs"]: row["_saturated"] for row in rows}
    if noisy:
        print("\nGrid verdicts not monotone near the knee (lowest failure to highest pass):")
        for row in noisy:
            print(f"- n={row['max_num_seqs']} {row['SLO']}: {row['_pattern']}")
    for seqs, flagged in saturated.items():
        print(f"Grid n={seqs}: {flagged} trial(s) where the client flagged itself saturated.")
    within = sum(row["_within"] for row in rows)
    fewest = min(row["_fewer"] for row in rows)
    met = within == len(rows) and fewest >= GOAL_FEWER
    print(
        f"\nGoal: every row within tolerance ({args.tolerance:.0%} of the grid's answer, "
        f"counting its {args.grid_step:.0%} step) and >= {GOAL_FEWER:g}x fewer probes than "
        f"grid trials.\n"
        f"Result: {within}/{len(rows)} rows within tolerance, at least {fewest:.1f}x fewer probes: "
        f"{'met' if met else 'NOT met'}. Total elapsed {elapsed_s / 60:.1f} min."
    )


def parse_slo(text: str) -> SLOConfig:
    """`COLUMN=LIMIT` as an SLO config."""
    column, _, limit = text.partition("=")
    return SLOConfig(**{column: float(limit)})


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(message: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(run(parser().parse_args()))
