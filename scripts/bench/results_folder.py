"""A large results folder of the real layout, for benchmarks of the driver's resume and analysis.

`scale_plan(n)` plans `+experiment=sim_cluster` narrowed to tiny CPU trials (8 requests of 4
tokens, the sim backend) with enough repeats for about `n` trials: 6 series x 10 concurrencies
x repeats. `write_folder` runs one real trial per series and concurrency in this process (the
sim server, the real load generator and summary), then writes every planned trial through the
real writer (`ResultStore.write_trial`): the run trial's files with the planned trial's ids,
label and repeat, its latency and throughput scaled by a few percent of deterministic noise, so
that repeats differ as measured ones do. What analysis reads is what a sweep would have left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sweep.core import records as R
from sweep.core.results import ResultStore, TrialFiles
from sweep.plan.plan import SweepPlan, build_plan
from sweep.spec import TrialSpec
from sweep.worker.trial import run_deployment

CONCURRENCIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
TTFT_MS = [1, 2, 3, 4, 5, 6]
POINTS = len(CONCURRENCIES) * len(TTFT_MS)


def scale_overrides(trials: int, output_dir: str | Path) -> list[str]:
    """Overrides of a sim sweep of about `trials` tiny trials (a multiple of `POINTS`)."""
    repeats = max(1, math.ceil(trials / POINTS))
    return [
        "+experiment=sim_cluster",
        "backend.num_gpus=0",
        "backend.num_cpus=0.5",
        "backend.itl_ms=1",
        f"sweep.grid.backend.ttft_ms=[{','.join(map(str, TTFT_MS))}]",
        f"sweep.grid.workload.concurrency=[{','.join(map(str, CONCURRENCIES))}]",
        f"sweep.repeats={repeats}",
        "workload.num_requests=8",
        "workload.output_len=4",
        "workload.warmup_requests=0",
        "dataset.input_len=16",
        f"output.dir={output_dir}",
    ]


def scale_plan(trials: int, output_dir: str | Path) -> SweepPlan:
    """The plan of `scale_overrides(trials, output_dir)`."""
    return build_plan(scale_overrides(trials, output_dir))


def templates(plan: SweepPlan) -> dict[str, TrialFiles]:
    """One really run trial per grid point (repeat 0), by its label without the repeat."""
    runs: dict[str, TrialFiles] = {}
    for deployment in plan.deployments:
        firsts = tuple(t for t in deployment.trials if t.repeat == 0)
        for item in run_deployment(deployment.with_trials(firsts), {"env.git_sha": "bench"}):
            if isinstance(item, TrialFiles):
                runs[point_of(item.summary.column(R.LABEL)[0].as_py())] = item
    return runs


def write_folder(
    plan: SweepPlan, store: ResultStore, runs: dict[str, TrialFiles], upto: int | None = None
) -> int:
    """Write the plan's trials (the first `upto` of them) from `runs`; returns how many."""
    written = 0
    for trial in plan.trials[:upto]:
        store.write_trial(copy_of(runs[point_of(trial.label)], trial))
        written += 1
    return written


def copy_of(files: TrialFiles, trial: TrialSpec) -> TrialFiles:
    """`files` as if trial `trial` had produced them: its ids, label, repeat and some noise."""
    noise = _noise(trial.trial_id)
    summary = files.summary
    for name, value in (
        (R.TRIAL_ID, trial.trial_id),
        (R.DEPLOYMENT_ID, trial.deployment_id),
        (R.LABEL, trial.label),
        (R.REPEAT, trial.repeat),
    ):
        summary = _set(summary, name, value)
    for name in summary.column_names:
        if pa.types.is_floating(summary.schema.field(name).type) and _scaled(name):
            summary = summary.set_column(
                summary.schema.get_field_index(name), name, pc.multiply(summary[name], noise)
            )
    tables = {
        f.name: _set(value, R.TRIAL_ID, trial.trial_id)
        for f in dataclasses.fields(files)
        if f.name != "summary" and isinstance(value := getattr(files, f.name), pa.Table)
    }
    return dataclasses.replace(
        files,
        trial_id=trial.trial_id,
        deployment_id=trial.deployment_id,
        summary=summary,
        backend_log=None,
        **tables,
    )


def _set(table: pa.Table, name: str, value: object) -> pa.Table:
    """`table` with column `name` holding `value` in every row (unchanged without it)."""
    if name not in table.column_names:
        return table
    index = table.schema.get_field_index(name)
    column = pa.array([value] * len(table), type=table.schema.field(name).type)
    return table.set_column(index, name, column)


def _scaled(name: str) -> bool:
    """Metrics that a repeat measures a little differently: latencies and throughputs.

    Config (`backend.ttft_ms`) and environment columns are dotted: they stay as planned.
    """
    return "." not in name and name.endswith(("_ms", "_tok_s", "_req_s")) or "throughput" in name


def _noise(trial_id: str) -> float:
    """A factor in [0.95, 1.05], fixed by the trial id."""
    return 0.95 + int(hashlib.sha1(trial_id.encode()).hexdigest()[:6], 16) / 0xFFFFFF * 0.1


def point_of(label: str) -> str:
    """The grid point of a trial's label: the label without its repeat."""
    return label.rsplit("-r", 1)[0] if "-r" in label else label
