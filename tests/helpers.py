"""Small builders shared by the load-generator and sim tests, and the recorded fixtures."""

import contextlib
import dataclasses
import functools
import io
import math
import os
import subprocess
from pathlib import Path

from backends.base import GenRequest
from sweep.core.config import WorkloadConfig

FIXTURES = Path(__file__).parent / "fixtures"  # real bytes recorded from real servers
REPO = Path(__file__).resolve().parents[1]


def inner_pytest_env(monkeypatch, *, own_run: bool = False) -> None:
    """The environment of a pytest run inside a test (pytester's subprocess, in its own folder):
    the project's `tests` package found by path; with `own_run`, a controller of its own (none of
    this worker's xdist variables) with a run tag of its own, so its locks are not this run's."""
    import uuid

    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    if own_run:
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "SWEEP_TEST_SHARE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SWEEP_TEST_RUN", uuid.uuid4().hex)


def make_requests(count, max_tokens, prompt="hello world"):
    return [GenRequest(i, prompt, (1, 2), max_tokens) for i in range(count)]


def workload(name="closed_loop", **values):
    values.setdefault("warmup_requests", 0)
    return WorkloadConfig(name=name, **values)


# A closed loop small enough for a test: no warm-up, 16-token prompts.
SMALL_CLOSED_LOOP = ("workload=closed_loop", "workload.warmup_requests=0", "dataset.input_len=16")


def own_processes(needle: str) -> list:
    """Processes of this test run (the `SWEEP_TEST_RUN` tag they inherit) whose command line
    holds `needle`; another run's processes on the same machine are not looked at."""
    import psutil

    from tests.conftest import TEST_RUN_TAG

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if needle not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            if proc.environ().get("SWEEP_TEST_RUN") == TEST_RUN_TAG:
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile, or not ours to read
    return found


def sweep_in_process(*overrides: str) -> subprocess.CompletedProcess:
    """`python -m sweep OVERRIDES` run by its main function in this process, output captured.

    Answers as `subprocess.run` would (exit code, stdout, stderr as text) without a Python start
    and its imports. A sweep that runs trials needs Ray: pass `cluster.address=` the session's
    `ray_cluster`, or it starts (and stops) a local one of its own.
    """
    from sweep.__main__ import main

    return _main_in_process(main, "sweep", overrides)


def analysis_in_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` run by its main function in this process, as `sweep_in_process`.

    The entry as a separate program is `tests/analysis/test_report.py`'s CLI test; the others
    check what the command does and says, which needs no Python start of its own.
    """
    from analysis.__main__ import main

    return _main_in_process(main, "analysis", args)


def _main_in_process(main, name: str, args) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors exit, as the program would
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


@functools.cache
def experiment_plan(name: str):
    """`build_plan(["+experiment=NAME"])`, once per test process (a frozen `SweepPlan`).

    The plan, plan-id and study tests check the same experiments' plans, one to four seconds of
    Hydra each; they run as one xdist group (`tests/conftest.py`, `_GROUPS`), so each
    experiment is planned once in the run.
    """
    from sweep.plan.plan import build_plan

    return build_plan([f"+experiment={name}"])


def run_sweep_here(out, overrides, collect=None):
    """Plan `overrides` and run every deployment in this process, as its Ray task would.

    The driver's part (writing each trial's files) is done by the store; returns the sweep's
    results folder, and appends each trial's `TrialFiles` to `collect` when given. For tests of
    what a trial records, without a Ray cluster's start-up.
    """
    from sweep.core.results import ResultStore, TrialFiles
    from sweep.plan.plan import build_plan
    from sweep.worker.trial import run_deployment

    plan = build_plan([*overrides, f"output.dir={out}"])
    store = ResultStore(str(out), plan.name)
    with environment_restored():
        for deployment in plan.deployments:
            for item in run_deployment(deployment, {"env.git_sha": "test"}):
                if isinstance(item, TrialFiles):
                    store.write_trial(item)
                    if collect is not None:
                        collect.append(item)
    return out / plan.name


def deployment_of(overrides):
    """The one deployment a sweep of `overrides` plans."""
    from sweep.plan.plan import build_plan

    (deployment,) = build_plan(overrides).deployments
    return deployment


def table(files, name):
    """One table of a trial's `TrialFiles` (`summary`, `requests`, ...) as a DataFrame."""
    return getattr(files, name).to_pandas()


@contextlib.contextmanager
def environment_restored():
    """Put `os.environ` back as it was: a deployment's task sets variables in its own process
    (a Ray worker's), and here that process is the test run's."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


@dataclasses.dataclass
class Served:
    """A launched server shared by a test module: what the trial runner made of it."""

    backend: object
    starts: int  # how many times the trial runner started the backend
    resets: int  # and reset it between trials
    trials: list  # each trial's files
    runner: object  # the suspended trial runner: closing it stops the server
    tree: list  # the server's processes, seen while it ran (none for an in-process engine)


def counting(backend_class):
    """The real backend class, counting the trial runner's starts and resets."""

    class Counting(backend_class):
        starts, resets, last = 0, 0, None

        def start(self):
            type(self).starts += 1
            type(self).last = self
            super().start()

        def reset_between_trials(self):
            type(self).resets += 1
            super().reset_between_trials()

    return Counting


@contextlib.contextmanager
def serve(deployment, backend_class, what, env=None):
    """Run every trial of `deployment` with the trial runner and keep its server up after them.

    The runner is left suspended after its last trial, so the server (one start for all the
    module's tests) stays up until the block ends. Fails the test with the first trial's error
    when the server did not serve. `env`: variables set in this process while the trials run
    (and the engine starts), put back after them as the rest. The trials run here as in a Ray
    worker of the deployment, whose OpenMP threads Ray sets to the CPUs the task holds
    (`ray._private.utils.set_omp_num_threads_if_unset`): a server started here inherits that.
    """
    import psutil
    import pytest

    import sweep.worker.trial as trial_module
    from sweep.core import records as R

    counted = counting(backend_class)
    # What the runner sets in this process (its deployment's id, an in-process engine's
    # LD_PRELOAD, ...) is put back once its trials ran, so the tests in between, and the
    # processes they start, see this process's own environment.
    with environment_restored():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trial_module, "backend_class", lambda name: counted)
            threads = max(math.floor(deployment.config.backend.num_cpus), 1)
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # as Ray: only when unset
            os.environ.update(env or {})
            runner = trial_module.run_deployment(deployment, {})
            items = [next(runner) for _ in range(1 + len(deployment.trials))]
    try:
        first = items[1].summary.to_pylist()[0]
        if first[R.TRIAL_STATUS] != R.STATUS_OK:
            pytest.fail(f"the shared {what} did not serve: {first[R.ERROR_MESSAGE]}")
        pid = getattr(counted.last, "pid", None)  # an in-process engine has no server
        leader = psutil.Process(pid) if pid else None
        tree = [leader, *leader.children(recursive=True)] if leader else []
        yield Served(counted.last, counted.starts, counted.resets, items[1:], runner, tree)
    finally:
        with environment_restored():
            runner.close()  # also when a test failed: stops the server
