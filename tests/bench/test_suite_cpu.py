"""The suite's CPU by kind (`sweep.bench.suite_cpu`): what a process is, and what it used."""

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from sweep.bench.netns_cluster import NetnsCluster
from sweep.bench.suite_cpu import (
    TAG_VAR,
    TEST_VAR,
    Sampler,
    kind,
    kinds_table,
    measure_command,
    parser,
    run,
    table,
)
from tests.burn_wait import burned

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


def burner(seconds: float, tag: str | None = None, test: str | None = None) -> subprocess.Popen:
    """A burner; with `tag`, one of the measured command's processes (it inherits the tag); with
    `test`, started for that test (pytest's `TEST_VAR`, else this test's own)."""
    env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
    if tag:
        env[TAG_VAR] = tag
    if test:
        env[TEST_VAR] = test
    return subprocess.Popen([sys.executable, "-c", BURN, str(seconds)], env=env)


@contextlib.contextmanager
def stranger(seconds: float):
    """A sim-server-named burner that is not the measured command's: another test's, say."""
    proc = burner(seconds)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_only_the_cpu_used_while_sampling_is_counted():
    sampler = Sampler("tag-1")
    before = burner(0.6, sampler.tag)  # burns before the sampler starts: none of it counts
    burned(before.pid, 0.6)
    thread = threading.Thread(target=sampler.run)
    thread.start()
    during = burner(0.8, sampler.tag)  # burns while sampled: counted, to within an interval
    try:
        burned(during.pid, 0.8)
        time.sleep(0.6)  # at least two samples after the burn
    finally:
        sampler.stop.set()
        thread.join()
        for proc in (before, during):
            proc.kill()
            proc.wait()
    counted = sampler.by_kind()["sim server"]
    assert 0.7 <= counted <= 1.0, counted  # the second burner's 0.8 s, not the first's 0.6 s too


def test_a_process_that_is_not_the_commands_is_not_counted():
    """Only the tagged processes count: a sim server of another test running meanwhile (CI's
    other worker) was counted as the measured command's."""
    with stranger(0.8) as other:
        sampler = Sampler("tag-2")
        thread = threading.Thread(target=sampler.run)
        thread.start()
        try:
            burned(other.pid, 0.8)
            time.sleep(0.6)
        finally:
            sampler.stop.set()
            thread.join()
    assert sampler.counts()["sim server"] == 0, sampler.counts()
    assert sampler.by_kind()["sim server"] == 0.0


def test_a_process_counts_for_the_test_file_it_was_started_for():
    """A process inherits the name of the test that started it (pytest's `TEST_VAR`): its CPU
    is that test file's, whatever the test it runs beside."""
    sampler = Sampler("tag-3")
    thread = threading.Thread(target=sampler.run)
    thread.start()
    procs = [burner(0.4, sampler.tag, "tests/a.py::test_one (call)"),
             burner(0.8, sampler.tag, "tests/b.py::test_two[x] (setup)")]  # fmt: skip
    try:
        burned(procs[0].pid, 0.4)
        burned(procs[1].pid, 0.8)
        time.sleep(0.6)
    finally:
        sampler.stop.set()
        thread.join()
        for proc in procs:
            proc.kill()
            proc.wait()
    units = sampler.by_unit()
    assert set(units) == {"tests/a.py", "tests/b.py"}, units
    assert 0.3 <= units["tests/a.py"] <= 0.6, units
    assert 0.7 <= units["tests/b.py"] <= 1.0, units


def test_the_table_names_each_unit_with_its_largest_kinds():
    row = {"unit": "tests/x.py", "wall_s": 12.34, "machine_cpu_s": 20.0, "outcome": "1 passed",
           "kinds": Counter({"Ray raylet": 5.0, "sim server": 9.0, "other": 1.0})}  # fmt: skip
    line = table([row], top=2).splitlines()[-1]
    assert line == "| tests/x.py | 12.3 | 20.0 | sim server 9.0, Ray raylet 5.0 | 1 passed |"


def test_a_whole_command_is_measured_with_its_outcome_and_processes():
    """`--whole` runs a command (the suite) under the sampler: a child that burns 0.5 s as a
    sim server is counted under that kind, and the pytest summary line is its outcome."""
    code = BURN.replace("time.sleep(60)", "print('== 3 passed, 1 skipped in 0.5s ==')")
    with stranger(60.0):  # another sim server burns all along: not the command's
        row = measure_command("the whole suite", [sys.executable, "-c", code, "0.5"])
    assert row["outcome"] == "3 passed, 1 skipped in 0.5s"
    assert row["counts"]["sim server"] == 1
    assert 0.3 <= row["kinds"]["sim server"] <= 0.7, row["kinds"]
    assert row["machine_cpu_s"] >= row["kinds"]["sim server"] - 0.1
    # each process listed with its command's first words (`--processes`), the stranger not
    (listed,) = [p for p in row["processes"] if p["kind"] == "sim server"]
    assert listed["command"].startswith(f"{sys.executable} -c "), listed
    assert listed["cpu_s"] == pytest.approx(row["kinds"]["sim server"])
    # the machine's busy CPU at each sample, for the idle cores beside each test: the burn is in
    times, busy = zip(*row["machine"], strict=True)
    assert len(times) >= 2 and list(times) == sorted(times)
    assert busy[-1] - busy[0] >= 0.3  # at least the command's own burn (the stranger's too)


def test_the_kinds_table_gives_each_kind_its_share_and_processes():
    row = {"unit": "the whole suite", "wall_s": 100.0, "machine_cpu_s": 150.0,
           "outcome": "9 passed in 99.0s", "kinds": Counter({"Ray raylet": 15.0, "other": 60.0}),
           "counts": Counter({"Ray raylet": 3, "other": 40})}  # fmt: skip
    lines = kinds_table(row).splitlines()
    assert lines[0] == "the whole suite: 100.0 s wall, 150.0 machine CPU-s, 9 passed in 99.0s"
    assert lines[-2:] == ["| other | 60.0 | 40% | 40 |", "| Ray raylet | 15.0 | 10% | 3 |"]


def test_a_failed_run_names_its_failures_under_its_outcome():
    code = "print('FAILED tests/x.py::test_a - assert 1 == 2'); print('== 1 failed in 0.1s ==')"
    row = measure_command("the whole suite", [sys.executable, "-c", code])
    assert row["failures"] == ["FAILED tests/x.py::test_a - assert 1 == 2"]
    lines = kinds_table(row).splitlines()
    assert lines[0].endswith(", 1 failed in 0.1s")
    assert lines[1] == "FAILED tests/x.py::test_a - assert 1 == 2"


@pytest.mark.parametrize("argv", [[], ["tests/x.py", "--whole"]])
def test_units_or_the_whole_suite_not_both_nor_neither(argv):
    with pytest.raises(SystemExit, match="name test units, or --whole"):
        run(parser().parse_args(argv))


def test_a_namespace_hosts_processes_are_the_measured_commands_too(monkeypatch):
    """The multihost tests' Ray hosts start with an environment of their own: the measurement's
    tags are passed on (their CPU, about a sixth of the suite's, was counted under no kind),
    and nothing else of this process's environment is."""
    cluster = NetnsCluster()
    monkeypatch.setenv(TAG_VAR, "tag-4")
    monkeypatch.setenv("SOMETHING_ELSE", "x")
    env = cluster.environment(cluster.workers[0])
    assert env[TAG_VAR] == "tag-4"
    assert env[TEST_VAR] == os.environ[TEST_VAR]  # this test's name, which pytest sets
    assert "SOMETHING_ELSE" not in env
    monkeypatch.delenv(TAG_VAR)  # no measurement: pytest's own variable stays here too
    assert not {TAG_VAR, TEST_VAR} & set(cluster.environment(cluster.head))
