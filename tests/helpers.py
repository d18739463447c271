"""Small builders shared by the load-generator and sim tests, and the recorded fixtures."""

from pathlib import Path

from backends.base import GenRequest
from sweep.core.config import WorkloadConfig

FIXTURES = Path(__file__).parent / "fixtures"  # real bytes recorded from real servers


def make_requests(count, max_tokens, prompt="hello world"):
    return [GenRequest(i, prompt, (1, 2), max_tokens) for i in range(count)]


def workload(name="closed_loop", **values):
    values.setdefault("warmup_requests", 0)
    return WorkloadConfig(name=name, **values)


# A closed loop small enough for a test: no warm-up, 16-token prompts.
SMALL_CLOSED_LOOP = ("workload=closed_loop", "workload.warmup_requests=0", "dataset.input_len=16")


def run_sweep_here(out, overrides, collect=None):
    """Plan `overrides` and run every deployment in this process, as its Ray task would.

    The driver's part (writing each trial's files) is done by the store; returns the sweep's
    results folder, and appends each trial's `TrialFiles` to `collect` when given. For tests of
    what a trial records, without a Ray cluster's start-up.
    """
    from sweep.core.results import ResultStore, TrialFiles
    from sweep.plan import build_plan
    from sweep.trial import run_deployment

    plan = build_plan([*overrides, f"output.dir={out}"])
    store = ResultStore(str(out), plan.name)
    for deployment in plan.deployments:
        for item in run_deployment(deployment, {"env.git_sha": "test"}):
            if isinstance(item, TrialFiles):
                store.write_trial(item)
                if collect is not None:
                    collect.append(item)
    return out / plan.name
