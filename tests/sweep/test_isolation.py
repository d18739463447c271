"""The load generator's own cores (`sweep.isolation`): the split rule, and real affinities moved.

The Ray path (daemons moved, the trial's record) is checked end to end in
tests/e2e/test_capacity_search.py, which runs with `cluster.isolate_client=on`.
"""

import os
import subprocess
import sys
import threading

import psutil
import pytest

from sweep.isolation import isolate, restore, split


@pytest.mark.parametrize(
    ("allowed", "mode", "client"),
    [
        ({0, 1}, "auto", None),  # too few cores to spare
        ({0, 1}, "on", {1}),
        ({0, 1, 2, 3}, "auto", {3}),
        (set(range(16)), "auto", {12, 13, 14, 15}),
        (set(range(16)), "off", None),
        ({0}, "on", None),  # nothing to split
    ],
)
def test_the_client_gets_the_highest_quarter(allowed, mode, client):
    result = split(allowed, mode)
    if client is None:
        assert result is None
        return
    assert set(result.client) == client
    assert set(result.rest) == allowed - client


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_isolate_moves_children_and_every_thread_then_restores():
    before = os.sched_getaffinity(0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)  # a thread started before isolating
    worker.start()
    try:
        state = isolate("on")
        highest = max(before)
        assert state.client_cpus == str(highest)
        assert set(psutil.Process(child.pid).cpu_affinity()) == before - {highest}
        for thread in psutil.Process().threads():
            assert os.sched_getaffinity(thread.id) == {highest}
        restore(state)
        assert set(psutil.Process(child.pid).cpu_affinity()) == before
        for thread in psutil.Process().threads():
            assert os.sched_getaffinity(thread.id) == before
    finally:
        stop.set()
        worker.join()
        child.kill()
        child.wait()
        os.sched_setaffinity(0, before)


def test_off_changes_nothing():
    before = os.sched_getaffinity(0)
    state = isolate("off")
    assert state.client_cpus is None
    assert os.sched_getaffinity(0) == before
    restore(state)


DEPLOYMENT = """
import sys
from pathlib import Path
import psutil
from sweep.isolation import isolate, restore
state = isolate("on", daemons=[psutil.Process(int(sys.argv[1]))], registry=Path(sys.argv[2]))
print("isolated", flush=True)
sys.stdin.readline()
restore(state)
print("restored", flush=True)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
def test_the_daemons_go_back_only_when_the_last_deployment_of_the_node_ends(tmp_path):
    """Two deployments measuring on one node: the first to end leaves the daemons where they
    are, since the other still measures; the last one puts them back as they were."""
    before = os.sched_getaffinity(0)
    rest = before - {max(before)}
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    registry = tmp_path / "isolation.json"

    def deployment():
        proc = subprocess.Popen(
            [sys.executable, "-c", DEPLOYMENT, str(daemon.pid), str(registry)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "isolated"
        return proc

    def end(proc):
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "restored"
        proc.wait(timeout=30)

    try:
        first = deployment()
        assert set(psutil.Process(daemon.pid).cpu_affinity()) == rest
        second = deployment()
        end(first)
        assert set(psutil.Process(daemon.pid).cpu_affinity()) == rest  # the second measures
        end(second)
        assert set(psutil.Process(daemon.pid).cpu_affinity()) == before
    finally:
        daemon.kill()
        daemon.wait()
