"""The planner's cost at grids of 256 to 10,000 points: `build_plan` in a fresh process per size.

    .venv/bin/python -m scripts.bench.makespan --plan 4 6 8 10 [--rounds 3]

A grid of K values on each of four value axes of the sim backend (`backend.ttft_ms`,
`workload.concurrency`, `workload.output_len`, `dataset.input_len`): K^4 points, one trial
each, K deployments (the TTFT is part of what is launched). Each size is planned in a fresh
Python (`scripts.bench.child`), which prints the process CPU time `build_plan` took; sizes take
turns over `--rounds` rounds, and the table gives each size's median and range.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import pandas as pd

from analysis.report.sections import markdown_table
from scripts.bench.child import measure_in_child


def overrides(k: int) -> list[str]:
    """A sim sweep of k^4 grid points over four value axes."""
    values = list(range(1, k + 1))
    return [
        "backend=sim",
        "model=tiny_llama",
        "sweep.name=plan_scale",
        f"+sweep.grid={{backend.ttft_ms: {values}, workload.concurrency: {values}, "
        f"workload.output_len: {[8 * v for v in values]}, "
        f"dataset.input_len: {[16 * v for v in values]}}}",
    ]


def plan_once(k: int) -> dict:
    """Plan the k^4 grid in this process; its trials, deployments and CPU seconds."""
    from sweep.plan.plan import build_plan

    start = time.process_time()
    plan = build_plan(overrides(k))
    cpu_s = time.process_time() - start
    deployments = len(plan.deployments)
    return {"k": k, "trials": len(plan.trials), "deployments": deployments, "cpu_s": cpu_s}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--plan K...` and `--rounds`, on the parser of scripts/bench/makespan.py."""
    parser.add_argument("--plan", type=int, nargs="+", metavar="K", help="grids of K^4 points")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --plan, sizes in turn")


def run(args: argparse.Namespace) -> None:
    """Each size planned in a fresh process, `--rounds` times, sizes in turn; print the table."""
    seen: dict[int, list[dict]] = {k: [] for k in args.plan}
    for round_ in range(args.rounds):
        order = args.plan if round_ % 2 == 0 else list(reversed(args.plan))
        for k in order:
            result = measure_in_child(__name__, str(k), what=f"planning {k}^4 points")
            seen[k].append(result)
            print(f"round {round_ + 1}: {result['trials']} trials, {result['cpu_s']:.2f} CPU-s")
    rows = []
    for k, results in seen.items():
        cpu = [r["cpu_s"] for r in results]
        trials = results[0]["trials"]
        rows.append(
            {
                "grid": f"{k}^4",
                "trials": trials,
                "deployments": results[0]["deployments"],
                "CPU-s, median": f"{statistics.median(cpu):.2f}",
                "range": f"{min(cpu):.2f}-{max(cpu):.2f}",
                "ms per trial": f"{1000 * statistics.median(cpu) / trials:.2f}",
            }
        )
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    print(json.dumps(plan_once(int(sys.argv[1]))))
