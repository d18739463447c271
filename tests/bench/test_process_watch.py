"""What the parity script reads of the server's processes: CPU seconds by process, and steal."""

import os
import subprocess
import sys
import time

import psutil

from sweep.tools.process_watch import cpu_seconds, steal_seconds
from tests.burn_wait import TICK_S, burned

# burns 0.4 s of CPU, then sleeps
BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
CHILD = f"{BURN}time.sleep(30)\n"
PARENT = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {CHILD!r}])\n"
PARENT += "time.sleep(30)\n"


def test_cpu_seconds_give_each_process_of_the_tree_what_it_used():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        deadline = time.monotonic() + 20
        while len(psutil.Process(parent.pid).children()) < 1:
            assert time.monotonic() < deadline, "the parent started no child"
            time.sleep(0.05)
        (started,) = psutil.Process(parent.pid).children()
        burned(started.pid, 0.4)
        used = cpu_seconds(parent.pid)
        mine = used.pop(next(k for k in used if k.endswith(f":{parent.pid}")))
        ((child, burnt),) = used.items()
        assert 0.4 - 2 * TICK_S <= burnt < 1.0, used  # the child's burn, on its own line
        assert child.endswith(f":{started.pid}")
        assert mine < 0.3 and not child.endswith(f":{parent.pid}")
    finally:
        for proc in [*psutil.Process(parent.pid).children(recursive=True)]:
            proc.kill()
        parent.kill()
        parent.wait()


def test_a_tree_that_has_gone_uses_nothing():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) == {}


def test_steal_is_read_in_seconds_and_never_goes_back():
    cpus = os.sched_getaffinity(0)
    first = steal_seconds(cpus)
    assert first >= 0.0 and steal_seconds(cpus) >= first
    assert steal_seconds(set()) == 0.0
