"""The driver's own cost per trial at 100 / 1,000 / 10,000 trials: what grows with the sweep.

    .venv/bin/python -m scripts.bench.makespan --trials 100 1000 10000 [--run-upto 1000]

Two measurements, each size in a fresh process (so its memory is its own):
- `run`: a real sweep of the sim backend on a local Ray (`results_folder.scale_overrides`: tiny
  trials of 8 requests), through the pipeline of `python -m sweep` with the driver's steps
  timed: submit, record (the trial's files written), progress, and the driver process's CPU
  time per trial and its peak memory. Sizes above `--run-upto` are skipped (a 10,000-trial
  sweep takes longer than a benchmark should on a 2-core machine).
- `path`: the same code without Ray's tasks, at every size: each trial's `Driver._record` (the
  store's write, the outcome, the progress line), the driver's bookkeeping of a step
  (`Driver.pending`), a claim in the trial ledger (Ray's key-value store), and resume of the
  sweep killed at 90% (`resume.select_pending` over the folder). Printed per trial for the first
  and the last tenth of the trials, so a cost that grows with the trials recorded shows.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import tempfile
import time
from types import SimpleNamespace

import pandas as pd
import ray
from rich.console import Console

from analysis.report.sections import markdown_table
from scripts.bench.child import measure_in_child
from scripts.bench.results_folder import (
    copy_of,
    point_of,
    scale_overrides,
    scale_plan,
    templates,
)
from sweep.core.results import ResultStore
from sweep.driver.driver import Driver, _Task, connect
from sweep.driver.ledger import TrialLedger
from sweep.driver.progress import SweepProgress
from sweep.driver.resume import select_pending
from sweep.plan.plan import build_plan


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Timed:
    """Seconds spent in each named step, summed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):  # noqa: ANN201
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


class _TimedDriver(Driver):
    """The driver with its submit, record and progress steps timed."""

    def __init__(self, *args, timed: _Timed, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.timed = timed

    def _submit(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        with self.timed.step("submit"):
            super()._submit(*args, **kwargs)

    def _record(self, files) -> None:  # noqa: ANN001
        with self.timed.step("record"):
            super()._record(files)


class _TimedProgress:
    """The progress display with its cost timed (`Driver` calls these)."""

    def __init__(self, progress: SweepProgress, timed: _Timed) -> None:
        self.progress, self.timed = progress, timed

    def trial_finished(self, files) -> None:  # noqa: ANN001
        with self.timed.step("progress"):
            self.progress.trial_finished(files)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.progress, name)


def _quiet_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, soft_wrap=True)


def run_sweep(trials: int) -> dict:
    """A real sweep of about `trials` tiny trials on a local Ray; the driver's costs per trial."""
    with tempfile.TemporaryDirectory() as tmp:
        plan = build_plan([*scale_overrides(trials, tmp), "cluster.num_cpus=2"])
        store = ResultStore(tmp, plan.name)
        timed = _Timed()
        with timed.step("resume"):
            state = select_pending(plan, store)
        connect(plan.base.cluster)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            with SweepProgress(len(plan.trials), len(plan.deployments), _quiet_console()) as shown:
                driver = _TimedDriver(store, {}, plan.base.cluster, _TimedProgress(shown, timed),
                                      timed=timed)  # fmt: skip
                outcome = driver.run(state.deployments)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            ray.shutdown()
    n = len(plan.trials)
    row = {"trials": n, "ok": len(outcome.ok), "wall_s": round(wall, 1)}
    row["driver_cpu_ms_per_trial"] = round(cpu / n * 1e3, 2)
    for name in ("submit", "record", "progress"):
        row[f"{name}_ms_per_trial"] = round(timed.seconds.get(name, 0.0) / n * 1e3, 3)
    row["resume_s"] = round(timed.seconds["resume"], 3)
    row["peak_rss_mb"] = round(_peak_mb())
    return row


def run_path(trials: int) -> dict:
    """The driver's per-trial code at `trials` without Ray tasks; first and last tenth apart."""
    with tempfile.TemporaryDirectory() as tmp:
        plan = scale_plan(trials, tmp)
        runs = templates(scale_plan(1, tmp))  # one real trial per grid point
        store = ResultStore(tmp, plan.name)
        specs = plan.trials
        n = len(specs)
        cluster = SimpleNamespace(share_idle_gpus=False)
        ray.init(  # a Ray of its own ("local"), never another one running on this machine
            address="local",
            num_cpus=1,
            include_dashboard=False,
            logging_level="ERROR",
            _node_ip_address="127.0.0.1",
        )
        try:
            ledger = TrialLedger()
            with SweepProgress(n, len(plan.deployments), _quiet_console()) as progress:
                driver = Driver(store, {}, cluster, progress)
                tasks = [_Task(d, None, 0, 0.0) for d in plan.deployments]
                by_deployment = {t.deployment.deployment_id: t for t in tasks}
                times = []
                for spec in specs:
                    files = copy_of(runs[point_of(spec.label)], spec)
                    t = time.perf_counter()
                    ledger.claim(spec.trial_id, "task")
                    driver._record(files)
                    driver.pending(by_deployment[spec.deployment_id])
                    times.append(time.perf_counter() - t)
            ledger.close()
        finally:
            ray.shutdown()
        tenth = max(1, n // 10)
        first, last = sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth
        killed = scale_plan(trials, tmp + "/killed")
        kept = ResultStore(tmp + "/killed", killed.name)
        for spec in specs[: int(n * 0.9)]:
            kept.write_trial(copy_of(runs[point_of(spec.label)], spec))
        t = time.perf_counter()
        state = select_pending(killed, kept)
        resume_s = time.perf_counter() - t
    return {
        "trials": n,
        "first_tenth_ms_per_trial": round(first * 1e3, 3),
        "last_tenth_ms_per_trial": round(last * 1e3, 3),
        "last_over_first": round(last / first, 2),
        "resume_at_90pct_s": round(resume_s, 2),
        "resume_skipped": state.skipped_ok,
        "resume_pending": state.pending,
        "peak_rss_mb": round(_peak_mb()),
    }


def _in_child(kind: str, trials: int) -> dict:
    """`kind`'s measurement at `trials` in a fresh Python: its peak memory is its own."""
    return measure_in_child(
        "scripts.bench.driver_scale", kind, str(trials), what=f"{kind} at {trials} trials"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options, on `python -m scripts.bench.makespan`'s parser."""
    sizes = "measure the driver's cost per trial at these sweep sizes"
    parser.add_argument("--trials", type=int, nargs="+", metavar="N", help=sizes)
    upto = "real sweeps only up to this size (default 1000)"
    parser.add_argument("--run-upto", type=int, default=1000, help=upto)


def run(args: argparse.Namespace) -> None:
    """Print both tables for the sizes asked."""
    paths = [_in_child("path", n) for n in args.trials]
    print("\nThe driver's code per trial without Ray tasks (record + ledger claim + pending):")
    print(markdown_table(pd.DataFrame(paths)))
    sweeps = [_in_child("run", n) for n in args.trials if n <= args.run_upto]
    if sweeps:
        print("\nReal sweeps on a local Ray (sim backend, 8 requests a trial):")
        print(markdown_table(pd.DataFrame(sweeps)))


if __name__ == "__main__":
    kind, size = sys.argv[1], int(sys.argv[2])
    print(json.dumps((run_path if kind == "path" else run_sweep)(size)))
