"""The load generator's own cores (`sweep.worker.isolation`): the split rule, and real affinities
moved.

The Ray path (daemons moved, the trial's record) is checked end to end in
tests/e2e/test_capacity_search.py, which runs with `cluster.isolate_client=on`.
"""

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from sweep.worker.isolation import core_loads, isolate, pin_quietest, quietest, restore, split


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
from sweep.worker.isolation import isolate, restore
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


@pytest.mark.parametrize(
    ("loads", "held", "count", "chosen"),
    [
        ({0: 95.0, 1: 3.0}, set(), 1, {1}),  # the busy core is left alone
        ({0: 3.0, 1: 95.0}, set(), 1, {0}),
        ({0: 3.0, 1: 95.0}, {0}, 1, {1}),  # another deployment's core is taken last
        ({0: 50.0, 1: 10.0, 2: 90.0, 3: 20.0}, {1}, 2, {0, 3}),
        ({0: 5.0, 1: 5.0}, set(), 1, {0}),  # a tie: the lowest core, so a choice is repeatable
    ],
)
def test_a_cpu_deployment_gets_the_quietest_cores_no_other_holds(loads, held, count, chosen):
    assert set(quietest(set(loads), loads, held, count)) == chosen


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to choose from")
def test_pinning_moves_every_thread_registers_the_cores_and_restores(tmp_path):
    before = os.sched_getaffinity(0)
    registry = tmp_path / "isolation.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    lowest, highest = min(before), max(before)
    # Another live deployment of the node holds the lowest core; a dead one's claim is ignored.
    registry.write_text(json.dumps({"pinned": {str(other.pid): [lowest], "999999999": [highest]}}))
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)  # a thread started before pinning
    worker.start()
    try:
        loads = {cpu: (1.0 if cpu == lowest else 50.0) for cpu in before}  # the lowest is quietest
        state = pin_quietest(1, registry=registry, loads=loads)
        assert state.pinned != {lowest}  # held by the other deployment
        assert len(state.pinned) == 1 and state.client_cpus == str(min(before - {lowest}))
        for thread in psutil.Process().threads():
            assert os.sched_getaffinity(thread.id) == set(state.pinned)
        held = json.loads(registry.read_text())["pinned"]
        assert held == {str(other.pid): [lowest], str(os.getpid()): sorted(state.pinned)}
        restore(state)
        for thread in psutil.Process().threads():
            assert os.sched_getaffinity(thread.id) == before
        assert json.loads(registry.read_text())["pinned"] == {str(other.pid): [lowest]}
    finally:
        stop.set()
        worker.join()
        other.kill()
        other.wait()
        os.sched_setaffinity(0, before)


def test_a_deployment_that_asks_for_every_core_is_not_pinned(tmp_path):
    before = os.sched_getaffinity(0)
    state = pin_quietest(len(before), registry=tmp_path / "isolation.json")
    assert state.pinned is None and state.client_cpus is None
    assert os.sched_getaffinity(0) == before
    restore(state)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to compare")
def test_the_sampled_loads_see_a_busy_core():
    busy = max(os.sched_getaffinity(0))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(burner.pid, {busy})
        time.sleep(0.2)
        assert core_loads(0.5)[busy] >= 80.0  # a busy loop owns its core, whatever else runs
    finally:
        burner.kill()
        burner.wait()
