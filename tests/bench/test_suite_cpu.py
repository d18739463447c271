"""The suite's CPU by kind (`sweep.bench.suite_cpu`): what a process is, and what it used."""

import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest

from sweep.bench.suite_cpu import Sampler, kind, table

# Burns CPU for the seconds given in argv[1], then sleeps until killed; its command line names
# a sim server, so it is counted under that kind.
BURN = "import sys, time\nend = time.process_time() + float(sys.argv[1])\n"
BURN += "while time.process_time() < end: pass\ntime.sleep(60)  # backends.sim_server"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("ray::_deployment_task", "Ray worker: deployment"),
        ("ray::IDLE", "Ray worker: idle"),
        ("python .../workers/default_worker.py --node-ip-address=1", "Ray worker: booting"),
        ("ray::DashboardAgent", "Ray dashboard agent"),
        (".../ray/core/src/ray/raylet/raylet --raylet_socket_name=x", "Ray raylet"),
        (  # the commands of what it starts come later: still a raylet
            ".../raylet --raylet_socket_name=x --store_socket_name=y "
            "--python_worker_command=python .../workers/default_worker.py",
            "Ray raylet",
        ),
        ("python -u -c import sys;exec(eval(sys.stdin.readline()))", "pytest: xdist worker"),
        ("python -m backends.sim_server --port 1", "sim server"),
        ("VLLM::EngineCore", "vLLM engine"),
        ("python -m vllm.entrypoints.openai.api_server --model m", "vLLM server"),
        ("python -m sweep +experiment=quickstart", "python -m sweep"),
        ("/bin/sleep 1", "other"),
    ],
)  # fmt: skip
def test_a_process_is_named_by_its_command_line(cmdline, expected):
    head, code = cmdline.split(" -c ", 1) if " -c " in cmdline else (cmdline, None)
    words = head.split() + (["-c", code] if code is not None else [])
    assert kind(words) == expected


def burner(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BURN, str(seconds)])


def cpu_of(proc: subprocess.Popen) -> float:
    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def test_only_the_cpu_used_while_sampling_is_counted():
    before = burner(0.6)  # burns before the sampler starts: none of it counts
    deadline = time.monotonic() + 30
    while cpu_of(before) < 0.6 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler = Sampler()
    thread = threading.Thread(target=sampler.run)
    thread.start()
    during = burner(0.8)  # burns while sampled: counted, to within a sampling interval
    try:
        deadline = time.monotonic() + 30
        while cpu_of(during) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # at least two samples after the burn
    finally:
        sampler.stop.set()
        thread.join()
        for proc in (before, during):
            proc.kill()
            proc.wait()
    counted = sampler.by_kind()["sim server"]
    assert 0.7 <= counted <= 1.0, counted  # the second burner's 0.8 s, not the first's 0.6 s too


def test_the_table_names_each_unit_with_its_largest_kinds():
    row = {"unit": "tests/x.py", "wall_s": 12.34, "machine_cpu_s": 20.0, "outcome": "1 passed",
           "kinds": Counter({"Ray raylet": 5.0, "sim server": 9.0, "other": 1.0})}  # fmt: skip
    line = table([row], top=2).splitlines()[-1]
    assert line == "| tests/x.py | 12.3 | 20.0 | sim server 9.0, Ray raylet 5.0 | 1 passed |"
