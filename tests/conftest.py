"""Test-wide settings and the fixtures every test may use.

- `ray_cluster`: one local Ray cluster (127.0.0.1) shared by the whole session, for tests that
  only need "a cluster"; a sweep joins it with `cluster.address=...`. Tests that need a cluster of
  their own shape (fake GPUs, several nodes, an autoscaler, a node removed) start their own.
- an autouse guard that fails a test leaving `os.environ` changed (set or removed keys named).
- vLLM told it runs in CI (`VLLM_CPU_CI_ENV`: no inductor compile of a model on CPU), its
  engine core running the model itself (`VLLM_ENABLE_V1_MULTIPROCESSING=0`).

Ray rewrites a loopback cluster address (127.0.0.1:PORT) to the machine's outward address before
connecting, and that address is closed on these machines; this switch (read when ray is first
imported) keeps drivers on loopback, where every test cluster is bound.
"""

import os
import uuid

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# vLLM's CPU build compiles a model with torch's inductor at its engine's first start, and warms
# it up, unless told it runs in CI (`VLLM_CPU_CI_ENV`, vLLM's own switch for its CPU CI: dynamo
# with the eager backend, no warm-up). The tests check what this project does with vLLM, not
# vLLM's compiler; a CI machine has no compile cache: `test_engines` on empty caches took 68.1 s
# without the switch and 52.9 s with it (2026-11-26, one run each). Every process the suite
# starts inherits it; engines with LoRA adapters never compile on CPU, so they are unchanged.
os.environ.setdefault("VLLM_CPU_CI_ENV", "1")

# A vLLM server is two processes on a GPU (API server; engine core running the model), three on
# CPU, where vLLM runs the model in a worker process of its own unless multiprocessing is off
# (`CpuPlatform.check_and_update_config`), and the engine core and the worker wait on each other
# through shared memory by polling, each on a core of two. Off, the server runs as on a GPU, its
# engine core with the OpenMP threads its environment gives it (a Ray worker sets them to the
# task's CPUs; `tests.helpers.serve` does the same). Beside a busy loop on the other core,
# `tests/backends/on_vllm` took 124.92 and 126.72 s (251.8 and 257.2 machine CPU-s, the loop's
# included) against 160.91 and 168.94 s (326.4 and 344.3) with it on (alternated, 2026-11-27).
# The offline engine then runs in the process that drives it, as vLLM's own tests run it;
# `tests/backends/on_vllm` starts its offline engine with the switch on, and checks that
# engine's processes and sockets.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

# Every process this test run starts (Ray nodes, workers, servers) inherits this tag, so leak
# checks count only our own processes, not those of another run on the same machine. Under
# pytest-xdist (scripts/test.sh runs two workers) each worker has a tag of its own, so it never
# counts the processes of the tests running beside it.
_RUN = os.environ.setdefault("SWEEP_TEST_RUN", uuid.uuid4().hex).split("@")[0]
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    os.environ["SWEEP_TEST_RUN"] = f"{_RUN}@{_WORKER}"
TEST_RUN_TAG = os.environ["SWEEP_TEST_RUN"]


import fcntl  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.light import no_process_started  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "alone(company=True): measures time or CPU share, so no other test runs beside it but "
        "a `light` one, nor that with company=False (under pytest-xdist the other worker waits; "
        "see _take_share)",
    )
    config.addinivalue_line(
        "markers",
        "light: runs in pytest's process and starts no other (tests/light.py), so it may run "
        "beside an `alone` test, as a busy loop on the other core would",
    )


def _lock_path(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"sweep-tests-{_RUN}.{name}.lock"


def _rw_lock(name: str, exclusive: bool) -> list:
    """A reader-writer lock on two files across workers: `NAME.share`, held shared by readers
    and exclusively by a writer, and `NAME.gate`, which gives a waiting writer precedence: a
    reader about to start passes through the gate, which a writer holds while it waits and
    runs. Returns the open lock files: closing them releases the lock."""
    gate, share = open(_lock_path(f"{name}-gate"), "a"), open(_lock_path(f"{name}-share"), "a")
    if exclusive:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(share, fcntl.LOCK_EX)
    else:
        fcntl.flock(gate, fcntl.LOCK_SH)
        fcntl.flock(share, fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
    return [gate, share]


def _take_share(alone: bool, solitary: bool = False) -> list:
    """Take the machine shared (any test) or alone (a test marked `alone`) across workers.

    Every test but a `light` one holds the `machine` lock shared; an `alone` test holds it
    exclusively. A light test holds the `company` lock shared while it runs, and an
    `alone(company=False)` test holds that exclusively too, so no light test runs beside it
    whatever the scheduler hands out (with three workers, the third took a light unit while
    the second waited with an alone one). The machine is taken first, so a solitary test that
    waits for it holds no light test back meanwhile.
    """
    held = _rw_lock("machine", exclusive=alone)
    return held + (_rw_lock("company", exclusive=True) if solitary else [])


_HELD: list = []  # the lock files of the share this worker holds now


def _is_alone(item) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


def _is_solitary(item) -> bool:
    """An `alone` test that takes no `light` test beside it either (`alone(company=False)`)."""
    mark = item.get_closest_marker("alone")
    return mark is not None and mark.kwargs.get("company", True) is False


def _is_light(item) -> bool:
    return item.get_closest_marker("light") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test's set-up, call and tear-down inside its share of the machine (xdist only).

    A unit of work keeps its share from its first test to its last (while they are of one
    kind): an `alone` file makes the other worker wait once, not once for each of its tests, and
    an `alone` test waits for the unit beside it to end, not for its test. Stopped mid-unit, the
    other worker waited through every alone test of the tail; with its unit done it is handed
    light units meanwhile (`pytest_xdist_make_scheduler`).
    """
    if not _WORKER or os.environ.get("SWEEP_TEST_SHARE"):
        yield  # not under xdist, or a pytest run inside a test that holds the share already
        return
    alone = _is_alone(item)
    company = []  # a light test takes no share of the machine: it may run beside an alone one
    if _is_light(item):
        company = _rw_lock("company", exclusive=False)
    elif not _HELD:
        _HELD.extend(_take_share(alone, _is_solitary(item)))
    os.environ["SWEEP_TEST_SHARE"] = _WORKER
    try:
        yield
    finally:
        del os.environ["SWEEP_TEST_SHARE"]
        while company:
            company.pop().close()
        same_unit = nextitem is not None and work_unit(nextitem.nodeid) == work_unit(item.nodeid)
        if not (same_unit and _is_alone(nextitem) == alone and not _is_light(nextitem)):
            while _HELD:
                _HELD.pop().close()  # closing a file releases its lock


def _light_checked(item):
    """A phase of a `light` test, failed if it started a process (wherever the test runs)."""
    if not _is_light(item):
        return (yield)
    with no_process_started():
        return (yield)


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_light_checked)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_light_checked)
pytest_runtest_teardown = pytest.hookimpl(wrapper=True)(_light_checked)


# Under pytest-xdist a unit of work is a test file (its module fixtures start once), except in
# these folders, whose files share a package fixture that must exist once (the multihost tests'
# network namespaces, of fixed names and addresses; one vLLM server and one offline engine for
# the vLLM tests): one worker runs the whole folder.
_ONE_UNIT = ("tests/multihost/", "tests/backends/on_vllm/")
# Files that check the same objects, cached per process, run as one unit: the experiments' plans
# (`tests.helpers.experiment_plan`), planned once instead of once per file.
_SHARED_UNITS = dict.fromkeys(
    ("tests/sweep/test_plan.py", "tests/sweep/test_plan_ids.py",
     "tests/sweep/test_study_experiments.py"),
    "tests/sweep/test_plan.py",
)  # fmt: skip


def work_unit(nodeid: str) -> str:
    """The unit of work of a test under pytest-xdist: its file, a folder of `_ONE_UNIT`, or the
    first file of its group in `_SHARED_UNITS`."""
    path = nodeid.split("::", 1)[0]
    path = _SHARED_UNITS.get(path, path)
    return next((folder for folder in _ONE_UNIT if path.startswith(folder)), path)


def _units_path() -> Path:
    """Where the workers leave each unit's kind for the scheduler (which collects nothing)."""
    return Path(tempfile.gettempdir()) / f"sweep-tests-{_RUN}.units.json"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Hand out whole `work_unit`s in collection order (see pytest_collection_modifyitems),
    holding back the units of `light` tests for the times an `alone` unit runs on another worker.

    While an `alone` test runs, the other worker would wait; handed a light unit instead, it
    works beside it (light tests take no share). Light units go to anyone once nothing else is
    left. A unit of `alone(company=False)` tests ("solitary") counts for no one as alone
    elsewhere, and comes first of the alone units: the other worker takes the next alone unit
    and waits on the share, so no light test runs beside it.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        kinds: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _kind(self, unit: str) -> str:
            if self.kinds is None:  # written by the workers before they report their collection
                path = _units_path()
                self.kinds = json.loads(path.read_text()) if path.exists() else {}
            return self.kinds.get(unit, "")

        def _assign_work_unit(self, node) -> None:
            alone_elsewhere = any(
                self._kind(unit) == "alone" and not all(tests.values())
                for other, units in self.assigned_work.items()
                if other is not node
                for unit, tests in units.items()
            )
            wanted = [u for u in self.workqueue if (self._kind(u) == "light") == alone_elsewhere]
            if wanted:
                self.workqueue.move_to_end(wanted[0], last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False  # xdist's own order puts the largest units first
    return ByWorkUnit(config, log)


def pytest_collection_modifyitems(config, items):
    """Units of work with a `slow` test first, so that none of them is left for the end; units
    with an `alone` test after every other (those of `alone(company=False)` first among them),
    then units of `light` tests only.

    An `alone` test waits for the test beside it to end before it starts (`_take_share`). Handed
    out early it waited for a slow one (a vLLM start: two minutes of a core left idle); handed
    out last, it waits for one of the quick tests left at the end. Under pytest-xdist each unit's
    kind is written down for the scheduler (`pytest_xdist_make_scheduler`).
    """
    slow = {work_unit(item.nodeid) for item in items if item.get_closest_marker("slow")}
    alone = {work_unit(item.nodeid) for item in items if _is_alone(item)}
    solitary = {work_unit(item.nodeid) for item in items if _is_solitary(item)}
    heavy = {work_unit(item.nodeid) for item in items if not _is_light(item)}
    light = {work_unit(item.nodeid) for item in items} - heavy

    def rank(item) -> tuple[int, bool, bool]:
        unit = work_unit(item.nodeid)
        return (unit in alone) + 2 * (unit in light), unit not in solitary, unit not in slow

    items.sort(key=rank)  # stable: files keep their order within a rank
    if _WORKER:
        kinds = {unit: "alone" for unit in alone} | {unit: "light" for unit in light}
        kinds |= {unit: "solitary" for unit in solitary}  # counted as alone by no one
        path = _units_path()
        spare = path.with_name(f"{path.name}.{_WORKER}")
        spare.write_text(json.dumps(kinds))
        spare.replace(path)  # whole, whichever worker writes it last


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a local Ray cluster shared by the session, stopped at its end.

    Started like the sweep's own local cluster (`cluster=local`: loopback, its system config), so
    a sweep joining it with `cluster.address=ADDRESS` runs as it would on the one it starts. The
    test process is not connected to it: a sweep run in process connects and disconnects itself.
    """
    import ray
    from ray.cluster_utils import Cluster

    from sweep.driver import LOCAL_SYSTEM_CONFIG

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": len(os.sched_getaffinity(0)),  # as Ray's own local start counts them
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "_system_config": dict(LOCAL_SYSTEM_CONFIG),
        },
    )
    yield cluster.address
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


# Set in a process and left there, by libraries and by the trial runner: `ray.init` its
# debugger hook on every connect (a sweep run in process connects), the first `import ray` its
# client switch (to the default, off), torch its compile cache folder when a transformers model
# class is first imported, the first `import llama_cpp` its library folder on LD_LIBRARY_PATH,
# and the trial runner its quieting of transformers (meant for a Ray worker;
# `sweep.trial._quiet_transformers`) while transformers is not imported yet. Most are set only
# the first time in a process, so a test that ran first failed where another ran after. Put
# back after each test without failing it.
_LEFT_BY_LIBRARIES_AND_RUNNER = frozenset(
    {
        "PYTHONBREAKPOINT",
        "RAY_CLIENT_MODE",
        "TORCHINDUCTOR_CACHE_DIR",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_VERBOSITY",
        "LD_LIBRARY_PATH",
    }
)


@pytest.fixture(autouse=True)
def _environment_unchanged():
    """Fail a test that leaves `os.environ` changed (a later test would inherit it)."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and k != "PYTEST_CURRENT_TEST"  # pytest's own
    )
    for key in changed:  # the next test starts from what this one found
        if key in before:
            os.environ[key] = before[key]
        else:
            os.environ.pop(key)
    changed = [k for k in changed if k not in _LEFT_BY_LIBRARIES_AND_RUNNER]
    if changed:
        pytest.fail(f"the test left os.environ changed: {', '.join(changed)}", pytrace=False)


@pytest.fixture
def sim():
    """Start sim backends with config overrides; all stopped afterwards."""
    from backends.sim import SimBackend, SimBackendConfig

    started = []

    def start(**overrides):
        backend = SimBackend(SimBackendConfig(**overrides), "sim-model")
        started.append(backend)
        backend.start()
        return backend

    yield start
    for backend in started:
        backend.stop()


# In CI every optional engine is installed (scripts/test.sh installs the `engines` extra), so a
# test skipped for a missing extra means the set-up broke: fail the run instead of going green.
_MISSING_EXTRA_SKIPS: list[str] = []


def _note_missing_extra(report) -> None:
    if report.skipped and "needs the" in str(report.longrepr) and "extra" in str(report.longrepr):
        _MISSING_EXTRA_SKIPS.append(report.nodeid)


def pytest_collectreport(report):
    _note_missing_extra(report)


def pytest_runtest_logreport(report):
    _note_missing_extra(report)


def pytest_sessionfinish(session, exitstatus):
    if not _WORKER:  # the controller removes the workers' lock files
        for path in Path(tempfile.gettempdir()).glob(f"sweep-tests-{_RUN}.*"):
            path.unlink(missing_ok=True)  # the workers' lock files, the units' kinds
    if os.environ.get("CI") and _MISSING_EXTRA_SKIPS and session.exitstatus == 0:
        print(
            f"\nCI: {len(_MISSING_EXTRA_SKIPS)} tests skipped for a missing extra "
            f"({', '.join(_MISSING_EXTRA_SKIPS[:5])}"
        )
        session.exitstatus = 1
