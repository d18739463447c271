"""`python -m sweep +experiment=NAME [overrides]`: plan, run on Ray, write results and a report.

The entry function reads as the pipeline; each step lives in the module named after it.
"""

from __future__ import annotations

import logging
import sys

import ray
import yaml

from analysis.console import print_paths, print_table
from analysis.load import load_summary
from analysis.report import main_table, save_report
from sweep import environment as env
from sweep.display import console, print_plan, print_resume
from sweep.driver import connect, run_deployments
from sweep.errors import SweepError
from sweep.plan import SweepPlan, build_plan
from sweep.progress import SweepProgress
from sweep.results import ResultStore
from sweep.resume import select_pending
from sweep.secrets import scrub

log = logging.getLogger("sweep")

USAGE = """usage: python -m sweep +experiment=NAME [key=value ...] [group=option ...]
  sweep.dry_run=true     print the planned trials and run nothing
  sweep.overwrite=true   re-run trials that already have results
  cluster=auto           join the running Ray cluster instead of starting a local one"""


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
        store = ResultStore(plan.base.output.dir, plan.name)
        state = select_pending(plan, store)
        print_resume(state)
        store.write_sweep_yaml(sweep_yaml(plan, overrides))
        if state.deployments:
            run_on_ray(plan, state.deployments, store)
        summary = load_summary(store.root)
        report = save_report(summary, store.root, plan.name)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished trials are saved; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print_table(main_table(summary), title=f"Sweep {plan.name}")
    print_paths(report)
    return 0


def run_on_ray(plan: SweepPlan, deployments: list, store: ResultStore) -> None:
    """Connect to Ray, run the deployments with live progress, disconnect if we started Ray."""
    started = connect(plan.base.cluster)
    total = sum(len(d.trials) for d in deployments)
    console.print(
        f"running {total} trials in {len(deployments)} deployments; results in {store.display_root}"
    )
    try:
        with SweepProgress(total, len(deployments)) as progress:
            outcome = run_deployments(
                deployments,
                store,
                {"env.git_sha": env.git_sha()},
                plan.base.cluster.max_retries,
                progress,
            )
    finally:
        if started:
            ray.shutdown()
    console.print(f"finished: {len(outcome.ok)} ok, {len(outcome.failed)} failed")


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
    sys.exit(main())
