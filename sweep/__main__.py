"""`python -m sweep +experiment=NAME [overrides]`: plan, run on Ray, write results and a report.

The entry function reads as the pipeline; each step lives in the module named after it.
"""

from __future__ import annotations

import errno
import faulthandler
import logging
import signal
import sys
from typing import Any

import ray
import yaml

from analysis.read.load import load_summary
from analysis.read.trial_cache import CACHE_DIR
from analysis.report.console import print_capacity, print_findings, print_paths, print_table
from analysis.report.report import ReportPaths, console_table, write_report
from analysis.tracking.tracking import Tracker
from sweep.core import records as rec
from sweep.core.errors import SweepError
from sweep.core.results import ResultStore, TrialFiles
from sweep.core.secrets import scrub
from sweep.display import console, print_plan, print_resume, print_trust_warnings
from sweep.driver.driver import Driver, connect
from sweep.driver.job import check_output_dir
from sweep.driver.progress import SweepProgress
from sweep.driver.resume import select_pending
from sweep.plan.plan import SweepPlan, build_plan
from sweep.plan.search_plan import probe_budget
from sweep.tune.loop import Tuner
from sweep.worker import environment as env

log = logging.getLogger("sweep")

USAGE = """usage: python -m sweep +experiment=NAME [key=value ...] [group=option ...]
  sweep.dry_run=true     print the plan's summary and run nothing
  sweep.list_trials=true with the dry run, list every planned trial too
  sweep.overwrite=true   re-run trials that already have results
  sweep.report=false     write no report at the end (`python -m analysis RESULTS` writes it later)
  cluster=auto           join the running Ray cluster instead of starting a local one
A sweep that seems stuck prints where each of its threads is on `kill -USR1 <pid>`."""


def main(argv: list[str] | None = None) -> int:
    """Run a sweep; returns the process exit code."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in overrides):
        print(USAGE)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = build_plan(overrides)
        if plan.base.sweep.dry_run:
            print_plan(plan)
            return 0
        check_output_dir(plan.base.output.dir)
        store = ResultStore(plan.base.output.dir, plan.name)
        removed = store.remove_partial_files()
        if removed:
            log.warning("removed %d partial files left by an interrupted run", removed)
        tuning = plan.base.search.mode == "tune"  # the tuner chooses the deployments
        state = select_pending(plan, store) if not tuning else None
        if state is not None:
            print_resume(state)
        store.write_sweep_yaml(sweep_yaml(plan, overrides))
        with Tracker(plan.base.tracking, plan.name, store.root, trials=planned(plan)) as tracker:
            if tuning:
                run_on_ray(plan, [], store, tracker, overrides)
            elif state is not None and state.deployments:
                run_on_ray(plan, state.deployments, store, tracker)
            summary = load_summary(store.root, cache_dir=f"{store.root}/{CACHE_DIR}")
            report = write_report(store.root) if plan.base.sweep.report else None
            if report is None:
                tracker.sweep_finished(summary, [])
            else:
                tracker.sweep_finished(
                    summary,
                    list(report.plots),
                    capacity=report.capacity,
                    findings=report.findings,
                    quality=report.quality,
                    tuning=report.tuning,
                )
            print_table(console_table(summary), title=f"Sweep {plan.name}")
            print_report(report, store)
            print_trust_warnings(summary)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        # The trials are saved (a trial the folder refused stops the sweep before this): only
        # the report, written last, found the results folder full.
        print(f"error: the report was not written ({exc}); the trials are saved: make room "
              "and run `python -m analysis` on the results folder", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished trials are saved; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


def print_report(report: ReportPaths | None, store: ResultStore) -> None:
    """The findings, capacity and paths the report wrote; without one, how to write it."""
    if report is None:
        console.print(
            "report not written (sweep.report=false); write it with: "
            f"python -m analysis {store.display_root}",
            highlight=False,
            soft_wrap=True,
        )
        return
    print_findings(report.findings)
    print_capacity(report.capacity)
    print_paths(report)


def planned(plan: SweepPlan) -> int:
    """Trials the sweep may run (its size picks the W&B layout): a tuning sweep's budget's."""
    if plan.base.search.mode == "tune":
        return plan.base.search.tune.budget * probe_budget(plan.trials[0])
    return sum(probe_budget(t) for t in plan.trials)


def run_on_ray(
    plan: SweepPlan,
    deployments: list,
    store: ResultStore,
    tracker: Tracker,
    tune_overrides: list[str] | None = None,
) -> None:
    """Connect to Ray, run the deployments with live progress, disconnect if we started Ray.

    With `tune_overrides` (search=tune) the deployments come from the tuner as it goes.
    """
    started = connect(plan.base.cluster)
    total = sum(probe_budget(t) for d in deployments for t in d.trials)
    searches = sum(t.search is not None for d in deployments for t in d.trials)
    what = f"{searches} searches (at most {total} trials)" if searches else f"{total} trials"
    count = len(deployments)
    if tune_overrides is not None:
        tune = plan.base.search.tune
        total, count = planned(plan), tune.budget
        what = f"a tuning study of {tune.budget} configurations ({tune.objective})"
    console.print(f"running {what} in {count} deployments; results in {store.display_root}")
    try:
        with SweepProgress(total, count) as progress:
            tracked = TrackedProgress(progress, tracker)
            driver = Driver(store, {rec.ENV_GIT_SHA: env.git_sha()}, plan.base.cluster, tracked)
            tuner = None
            if tune_overrides is not None:
                tuner = Tuner(plan, tune_overrides, store, tracked)
            outcome = driver.run(deployments, tuner)
    finally:
        if started:
            ray.shutdown()
    console.print(outcome.line())


class TrackedProgress:
    """The driver's progress interface, also handing each finished trial to the tracker."""

    def __init__(self, progress: SweepProgress, tracker: Tracker) -> None:
        self.progress, self.tracker = progress, tracker

    def trial_finished(self, files: TrialFiles) -> None:
        """Show the trial, then log it (tracking errors never reach the driver)."""
        self.progress.trial_finished(files)
        if self.tracker.enabled:
            self.tracker.trial_finished(files.summary.to_pylist()[0], files.requests.to_pandas(),
                                        files.timeseries.to_pandas())  # fmt: skip

    def note(self, text: str) -> None:
        """A line about the sweep (a deployment waiting for a node)."""
        self.progress.note(text)

    def deployment_finished(self) -> None:
        """One fewer deployment running."""
        self.progress.deployment_finished()

    def search_finished(self, label: str, found: Any, unused: int, unit: str) -> None:
        """A search ended with capacity `found`."""
        self.progress.search_finished(label, found, unused, unit)


def sweep_yaml(plan: SweepPlan, overrides: list[str]) -> str:
    """sweep.yaml: the command, composed config, git sha, versions and the planned trials."""
    meta = {
        "command": "python -m sweep " + " ".join(overrides),
        "git_sha": env.git_sha(),
        "versions": env.package_versions(),
        "trials": {t.trial_id: t.label for t in plan.trials},
        "config": yaml.safe_load(plan.base_yaml),
    }
    return yaml.safe_dump(scrub(meta), sort_keys=False)


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where a stuck sweep is
    sys.exit(main())
