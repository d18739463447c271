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


import pytest  # noqa: E402

# Under pytest-xdist (`--dist loadgroup`, scripts/test.sh) a test file is one group: its module
# fixtures start once. These folders' files share a package fixture that must exist once (the
# multihost tests' network namespaces, of fixed names and addresses; one vLLM server and one
# offline engine for the vLLM tests), and the plan tests share plans cached per process
# (`tests.helpers.experiment_plan`): each runs as one group.
_GROUPS = {
    "tests/multihost/": "multihost",
    "tests/backends/on_vllm/": "on_vllm",
    "tests/sweep/test_plan.py": "plans",
    "tests/sweep/test_plan_ids.py": "plans",
    "tests/sweep/test_study_experiments.py": "plans",
}


def xdist_group(nodeid: str) -> str:
    """The group of a test: a folder or a set of files of `_GROUPS`, else its file."""
    path = nodeid.split("::", 1)[0]
    return next((g for prefix, g in _GROUPS.items() if path.startswith(prefix)), path)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test with its `xdist_group` (before xdist reads the marks)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group(item.nodeid)))


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a local Ray cluster shared by the session, stopped at its end.

    Started like the sweep's own local cluster (`cluster=local`: loopback, its system config), so
    a sweep joining it with `cluster.address=ADDRESS` runs as it would on the one it starts. The
    test process is not connected to it: a sweep run in process connects and disconnects itself.
    """
    import ray
    from ray.cluster_utils import Cluster

    from sweep.driver.driver import LOCAL_SYSTEM_CONFIG

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
# `sweep.worker.trial._quiet_transformers`) while transformers is not imported yet. Most are set
# only the first time in a process, so a test that ran first failed where another ran after. Put
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
    if os.environ.get("CI") and _MISSING_EXTRA_SKIPS and session.exitstatus == 0:
        print(
            f"\nCI: {len(_MISSING_EXTRA_SKIPS)} tests skipped for a missing extra "
            f"({', '.join(_MISSING_EXTRA_SKIPS[:5])}"
        )
        session.exitstatus = 1
