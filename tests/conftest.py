"""Test-wide settings.

Ray rewrites a loopback cluster address (127.0.0.1:PORT) to the machine's outward address before
connecting, and that address is closed on these machines; this switch (read when ray is first
imported) keeps drivers on loopback, where every test cluster is bound.
"""

import os
import uuid

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Every process this test run starts (Ray nodes, workers, servers) inherits this tag, so leak
# checks count only our own processes, not those of another run on the same machine.
TEST_RUN_TAG = os.environ.setdefault("SWEEP_TEST_RUN", uuid.uuid4().hex)


import pytest  # noqa: E402


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
