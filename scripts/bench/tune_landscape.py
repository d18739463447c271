"""The tuner against the full grid on the sim's known landscape: best found and hours spent.

The sim server with `backend.landscape=peak` (`backends.sim_server.landscape`) has a ceiling
that is a known function of `max_num_seqs`, `chunked_prefill` and `max_num_batched_tokens`, with
one optimum, an interaction and per-request jitter. For each seed this runs, through
`python -m sweep` as a user would (`+experiment=tune_sim`, the seed in the sim's jitter and the
tuner's sampler):

- the full grid: `search=capacity` over max_num_seqs 4, 8, 16, 32 with chunked prefill at
  budgets of 1024, 2048, 4096 and 8192 tokens, and without it (where the budget does nothing):
  20 configurations, each a capacity search;
- the tuner: `search=tune` over the experiment's space (max_num_seqs 2..32, chunked prefill,
  the budget 256..16384 when chunked), `search.tune.budget` configurations.

It prints, per seed and method: the configurations run, the best one (the highest capacity the
sweep measured), its measured capacity, its true ceiling from the landscape, the optimum's, the
gap (1 - true / optimum), the deployment-hours spent (each deployment's probes' wall times and
its server's start-up, as the results folder records them) and the share of the grid's.

Goal (issue 70): the tuner within 5% of the optimum in at most a third of the grid's
deployment-hours, in 3 of 3 seeds.

    python -m scripts.bench.tune_landscape [--seeds 0,1,2] [--budget 12] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.report.sections import markdown_table
from backends.sim_server.landscape import ceiling, optimum
from sweep.core import records as R
from sweep.core.config import SearchConfig
from sweep.worker.search import capacity
from sweep.worker.search_run import known_probe

SEQS = (4, 8, 16, 32)
BUDGETS = (1024, 2048, 4096, 8192)
GOAL_GAP = 0.05
GOAL_SHARE = 1 / 3
KNOBS = ("backend.max_num_seqs", "backend.chunked_prefill", "backend.max_num_batched_tokens")


@dataclass(frozen=True)
class Found:
    """What one method found for one seed."""

    configurations: int
    knobs: dict
    measured: float
    truth: float
    hours: float
    elapsed_s: float


def main(argv: list[str] | None = None) -> int:
    """Run the grid and the tuner per seed; print the table and whether the goal holds."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--budget", type=int, help="search.tune.budget (default: the experiment's)")
    parser.add_argument("--out", type=Path, help="results folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tune_landscape-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    table, met = [], 0
    for seed in seeds:
        grid = run_grid(out, seed)
        tuned = run_tuner(out, seed, args.budget)
        best = optimum(s0_ms(out / f"tune_s{seed}"))[1]
        for method, found in (("grid", grid), ("tuner", tuned)):
            table.append(row(seed, method, found, best, grid.hours))
        if 1 - tuned.truth / best <= GOAL_GAP and tuned.hours <= GOAL_SHARE * grid.hours:
            met += 1
    print(markdown_table(pd.DataFrame(table)))
    print(
        f"\ngoal: the tuner within {GOAL_GAP:.0%} of the optimum in at most "
        f"{GOAL_SHARE:.2g} of the grid's deployment-hours: {met} of {len(seeds)} seeds"
    )
    print(f"results: {out}")
    return 0 if met == len(seeds) else 1


def run_grid(out: Path, seed: int) -> Found:
    """The full grid, as two sweeps (with chunked prefill: its budgets; without: none)."""
    seqs = f"[{','.join(map(str, SEQS))}]"
    budgets = f"[{','.join(map(str, BUDGETS))}]"
    common = ["search=capacity", f"backend.seed={seed}"]
    chunked = [*common, "backend.chunked_prefill=true", f"+sweep.grid.backend.max_num_seqs={seqs}",
               f"+sweep.grid.backend.max_num_batched_tokens={budgets}"]  # fmt: skip
    plain = [*common, "backend.chunked_prefill=false", f"+sweep.grid.backend.max_num_seqs={seqs}"]
    elapsed = sweep(out, f"grid_s{seed}_chunked", chunked) + sweep(
        out, f"grid_s{seed}_plain", plain
    )
    searches = [
        *grid_searches(out / f"grid_s{seed}_chunked"),
        *grid_searches(out / f"grid_s{seed}_plain"),
    ]
    best = max(searches, key=lambda s: s["measured"])
    return Found(len(searches), best["knobs"], best["measured"], best["truth"],
                 sum(s["seconds"] for s in searches) / 3600, elapsed)  # fmt: skip


def run_tuner(out: Path, seed: int, budget: int | None) -> Found:
    """The tuning sweep of the experiment, seeded."""
    extra = [f"search.tune.budget={budget}"] if budget else []
    name = f"tune_s{seed}"
    elapsed = sweep(out, name, [f"search.tune.seed={seed}", f"backend.seed={seed}", *extra])
    rows = pd.read_parquet(out / name / R.TUNE_TABLE)
    done = rows[rows["state"] == "complete"]
    best = done.loc[done["value"].astype(float).idxmax()]
    knobs = knobs_of(json.loads(best["params"]))
    ran = rows[rows["state"] != "duplicate"]
    return Found(len(ran), knobs, float(best["value"]), truth(knobs, s0_ms(out / name)),
                 float(ran["deployment_s"].sum()) / 3600, elapsed)  # fmt: skip


def sweep(out: Path, name: str, overrides: list[str]) -> float:
    """Run `python -m sweep +experiment=tune_sim` with `overrides`; its elapsed seconds."""
    command = [sys.executable, "-m", "sweep", "+experiment=tune_sim", f"sweep.name={name}",
               f"output.dir={out}", "sweep.report=false", "tracking=none", *overrides]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - began


def grid_searches(root: Path) -> list[dict]:
    """Each search of a grid sweep: its knobs, capacity, true ceiling and deployment seconds."""
    settings = search_settings(root)
    rows = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    found = []
    for _, probes in rows.groupby(R.SEARCH_ID):
        probes = probes.sort_values(R.SEARCH_PROBE)
        history = [known_probe(r) for r in probes.to_dict("records")]
        first = probes.iloc[0]
        knobs = {k: _plain(first[k]) for k in KNOBS}
        if not knobs["backend.chunked_prefill"]:
            knobs.pop("backend.max_num_batched_tokens")
        seconds = float(probes[R.WALL_S].sum() + probes[R.SERVER_START_S].max())
        found.append({"knobs": knobs, "measured": capacity(settings, history).load,
                      "truth": truth(knobs, s0_ms(root)), "seconds": seconds})  # fmt: skip
    return found


def search_settings(root: Path) -> SearchConfig:
    """The search settings the sweep ran with (its sweep.yaml)."""
    config = yaml.safe_load((root / R.SWEEP_YAML).read_text())["config"]["search"]
    names = {f.name for f in dataclasses.fields(SearchConfig)} - {"tune"}
    return SearchConfig(**{k: v for k, v in config.items() if k in names})


def s0_ms(root: Path) -> float:
    """A request's unscaled service time: ttft_ms + (output_len - 1) x itl_ms."""
    config = yaml.safe_load((root / R.SWEEP_YAML).read_text())["config"]
    backend, workload = config["backend"], config["workload"]
    return float(backend["ttft_ms"] + (workload["output_len"] - 1) * backend["itl_ms"])


def truth(knobs: dict, s0: float) -> float:
    """The landscape's ceiling at `knobs`."""
    return ceiling(int(knobs["backend.max_num_seqs"]),
                   int(knobs.get("backend.max_num_batched_tokens") or 0),
                   bool(knobs["backend.chunked_prefill"]), s0)  # fmt: skip


def knobs_of(params: dict) -> dict:
    """The tuner's parameters as the knobs."""
    return {k: params[k] for k in KNOBS if k in params}


def row(seed: int, method: str, found: Found, best: float, grid_hours: float) -> dict:
    """One line of the table."""
    knobs = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in found.knobs.items())
    return {
        "seed": seed,
        "method": method,
        "configurations": found.configurations,
        "best found": knobs,
        "measured req/s": f"{found.measured:.1f}",
        "true ceiling": f"{found.truth:.1f}",
        "optimum": f"{best:.1f}",
        "gap": f"{1 - found.truth / best:.1%}",
        "deployment-hours": f"{found.hours:.4f}",
        "share of grid": f"{found.hours / grid_hours:.0%}",
        "elapsed s": f"{found.elapsed_s:.0f}",
    }


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


if __name__ == "__main__":
    sys.exit(main())
