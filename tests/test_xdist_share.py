"""Under pytest-xdist (scripts/test.sh runs two workers), a test file is one unit of work. A test
marked `alone` has the CPU first where the run has cgroups (tests/cpu_priority.py), the other
worker going on beside it; elsewhere it runs with no other test beside it but a `light` one
(tests/conftest.py's share of the machine). Checked on small suites run by pytest in a
subprocess of its own, with a run tag of its own so that its locks and groups are not this run's.
"""

import json
import os
from pathlib import Path

import pytest

from tests import cpu_priority
from tests.helpers import inner_pytest_env

pytest_plugins = ["pytester"]

RECORD = """
import json, os, time
import pytest

def record(name, seconds):
    start = time.monotonic()
    time.sleep(seconds)
    row = {"name": name, "worker": os.environ["PYTEST_XDIST_WORKER"],
           "start": start, "end": time.monotonic()}
    with open(os.environ["SHARE_PROBE_LOG"], "a") as log:
        log.write(json.dumps(row) + "\\n")
"""
BESIDE = (
    RECORD
    + """
@pytest.mark.parametrize("n", range(COUNT))
def test_beside(n):
    record(f"{__name__}{n}", 0.4)
"""
)
ALONE = (
    RECORD
    + """
@pytest.mark.alone
@pytest.mark.parametrize("n", range(2))
def test_alone(n):
    record(f"alone{n}", 0.75)
"""
)


LIGHT = (
    RECORD
    + """
pytestmark = pytest.mark.light

@pytest.mark.parametrize("n", range(4))
def test_light(n):
    record(f"light{n}", 0.3)
"""
)


def inner_run(pytester, monkeypatch, tmp_path, tests: int, priority=False, **files) -> list[dict]:
    """Run `files` under two xdist workers with this suite's hooks; each test's row. Without
    `priority`, with no cgroups (an `alone` test takes the machine alone)."""
    inner_pytest_env(monkeypatch, own_run=True)
    if not priority:
        monkeypatch.setenv(cpu_priority.SWITCH_VAR, "0")
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("SHARE_PROBE_LOG", str(log))
    pytester.makeconftest("pytest_plugins = ['tests.conftest']\n")
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           "--dist", "loadscope")  # fmt: skip
    result.assert_outcomes(passed=tests)
    if not priority:  # the run says why its alone tests took the machine alone
        assert "(no CPU priority: SWEEP_TEST_PRIORITY=0;" in result.stdout.str()
    return [json.loads(line) for line in log.read_text().splitlines()]


GROUPS = """
import json, os, subprocess, time
from pathlib import Path
import pytest
from tests.cpu_priority import _cpu_hierarchy

def record(name, seconds):
    start = time.monotonic()
    time.sleep(seconds)
    own = _cpu_hierarchy()
    child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True).stdout
    row = {"name": name, "worker": os.environ["PYTEST_XDIST_WORKER"],
           "start": start, "end": time.monotonic(), "group": str(own),
           "child": next(l.split(":", 2)[2] for l in child.splitlines()
                         if "cpu" in l.split(":")[1].split(",")),
           "idle": {g.name: int((g / "cpu.idle").read_text())
                    for g in own.parent.iterdir() if g.is_dir()}}
    with open(os.environ["SHARE_PROBE_LOG"], "a") as log:
        log.write(json.dumps(row) + "\\n")

@pytest.mark.parametrize("n", range(COUNT))
def test_it(n):
    record(f"{__name__}{n}", 0.4)
"""

ALONE_MARK = "@pytest.mark.alone\ndef test_it"
ALONE_GROUPS = GROUPS.replace("COUNT", "2").replace("def test_it", ALONE_MARK)


@pytest.mark.skipif(bool(cpu_priority.why_not()), reason=f"no cgroups: {cpu_priority.why_not()}")
def test_an_alone_test_has_the_cpu_first_and_the_other_worker_goes_on(
    pytester, monkeypatch, tmp_path
):
    rows = inner_run(
        pytester, monkeypatch, tmp_path, 10, priority=True,
        test_a=GROUPS.replace("COUNT", "6"),
        test_c_alone=ALONE_GROUPS,
        test_d_alone=ALONE_GROUPS,
    )  # fmt: skip
    run = os.environ["SWEEP_TEST_RUN"]  # the inner run's tag (inner_run set it)
    alones = [r for r in rows if "alone" in r["name"]]
    others = [r for r in rows if "alone" not in r["name"]]
    (alone_worker,) = {r["worker"] for r in alones}  # every alone unit to one worker
    assert {r["worker"] for r in others} == {"gw0", "gw1"} - {alone_worker}, rows
    alone = span(alones)
    beside = [r for r in others if r["start"] < alone["end"] and r["end"] > alone["start"]]
    assert len(beside) >= 2, rows  # the other worker went on meanwhile
    for row in rows:  # each worker, and what its tests start, in its own group of the run's
        group = Path(row["group"])
        assert (group.parent.name, group.name) == (f"sweep-tests-{run}", row["worker"]), row
        assert row["group"].endswith(row["child"]), row
    for row in alones:  # the other worker's group idle while an alone test runs
        assert row["idle"] == {row["worker"]: 0, beside[0]["worker"]: 1}, row
    after = [r for r in others if r["start"] > alone["end"]]  # 2.4 s of them, 1.6 s alone
    assert after and all(r["idle"] == {"gw0": 0, "gw1": 0} for r in after), rows  # given back
    assert not Path(rows[0]["group"]).parent.exists()  # the run's groups are removed at its end


def test_three_workers_only_where_an_alone_test_has_the_cpu_first(monkeypatch):
    monkeypatch.setenv(cpu_priority.SWITCH_VAR, "0")
    assert cpu_priority.why_not() == "SWEEP_TEST_PRIORITY=0"
    assert cpu_priority.workers() == 2
    monkeypatch.delenv(cpu_priority.SWITCH_VAR)
    group, why = cpu_priority.make_run_group(f"probe-{os.getpid()}", 1)
    try:  # three workers exactly where a run's group can be made
        assert cpu_priority.workers() == (3 if group is not None else 2), why
    finally:
        if group is not None:
            assert cpu_priority.remove_run_group(group) == []


@pytest.mark.skipif(bool(cpu_priority.why_not()), reason=f"no cgroups: {cpu_priority.why_not()}")
def test_a_runs_groups_are_removed_and_a_process_left_in_them_is_named():
    import subprocess

    group, why = cpu_priority.make_run_group(f"probe-{os.getpid()}", 2)
    assert group is not None, why
    stray = subprocess.Popen(["sleep", "30"])
    try:
        (group / "gw0" / "inner").mkdir(parents=True)  # a run inside a test left its group
        (group / "gw0" / "inner" / "cgroup.procs").write_text(str(stray.pid))
        assert cpu_priority.remove_run_group(group) == [stray.pid]
        assert not group.exists()
        mine = cpu_priority._cpu_hierarchy()  # the process is back in this one's group
        assert str(stray.pid) in (mine / "cgroup.procs").read_text().split()
    finally:
        stray.kill()
        stray.wait()


def span(rows: list[dict]) -> dict:
    return {"start": min(r["start"] for r in rows), "end": max(r["end"] for r in rows)}


def test_an_alone_test_runs_with_nothing_beside_it(pytester, monkeypatch, tmp_path):
    # One worker takes the short file, then the alone test, while the other is in the long file.
    rows = inner_run(
        pytester, monkeypatch, tmp_path, 13,
        test_a=BESIDE.replace("COUNT", "1"),
        test_b=BESIDE.replace("COUNT", "10"),
        test_c_alone=ALONE,
    )  # fmt: skip
    # The file's two alone tests keep the machine between them: one span, nothing beside it.
    alones = [r for r in rows if r["name"].startswith("alone")]
    alone = span(alones)
    others = [r for r in rows if not r["name"].startswith("alone")]
    assert len({r["worker"] for r in rows}) == 2, rows  # both workers ran tests
    long_file = {r["worker"] for r in rows if r["name"].startswith("test_b")}
    assert len(long_file) == 1, rows  # a file is one unit of work: its module fixtures start once
    overlapping = [
        r["name"] for r in others if r["start"] < alone["end"] and r["end"] > alone["start"]
    ]
    assert not overlapping, f"ran beside the alone test: {overlapping}"


def test_a_light_unit_is_handed_out_beside_an_alone_one(pytester, monkeypatch, tmp_path):
    """The worker that would wait for an alone test runs the light units meanwhile."""
    rows = inner_run(
        pytester, monkeypatch, tmp_path, 6,
        test_b_alone=ALONE,  # to one worker (units with an alone test come before light ones)
        test_c_light=LIGHT,  # to the other, since the alone test runs elsewhere
    )  # fmt: skip
    alones = [r for r in rows if r["name"].startswith("alone")]
    alone = span(alones)

    lights = [r for r in rows if r["name"].startswith("light")]
    beside = [r for r in lights if r["start"] < alone["end"] and r["end"] > alone["start"]]
    assert len(beside) >= 2, rows  # the light ones ran beside it
    assert {r["worker"] for r in lights} != {alones[0]["worker"]}


def test_an_alone_test_waits_for_the_unit_beside_it_not_only_its_test(
    pytester, monkeypatch, tmp_path
):
    """A unit of work is not cut in two by an alone one: its worker, once it is done, takes
    light units while the alone test runs, instead of waiting mid-unit."""
    rows = inner_run(
        pytester, monkeypatch, tmp_path, 14,
        test_a=BESIDE.replace("COUNT", "6"),  # one worker: 2.4 s
        test_b=BESIDE.replace("COUNT", "2"),  # the other, then the alone test, mid-test_a
        test_c_alone=ALONE,
        test_d_light=LIGHT,
    )  # fmt: skip
    alone = span([r for r in rows if r["name"].startswith("alone")])
    unit = span([r for r in rows if r["name"].startswith("test_a")])
    assert unit["end"] <= alone["start"] or unit["start"] >= alone["end"], rows


@pytest.mark.parametrize("priority", [False, True], ids=["alone-taken", "cpu-first"])
def test_the_order_of_units(pytester, monkeypatch, priority):
    """Slow units first within each rank, light ones last; units with an alone test last but
    the light ones, or first where they have the CPU first (they wait for nothing)."""
    inner_pytest_env(monkeypatch, own_run=True)  # not a worker of this run: its own order
    if priority:  # where the run has cgroups (only the variable is read in collection)
        monkeypatch.setenv(cpu_priority.GROUP_VAR, "/sys/fs/cgroup/cpu/sweep-tests-probe")
    pytester.makeconftest(
        "from tests.conftest import pytest_collection_modifyitems, pytest_configure  # noqa\n"
    )
    slow = "import pytest\npytestmark = pytest.mark.slow\ndef test_one(): pass\n"
    pytester.makepyfile(
        test_a_alone="import pytest\n@pytest.mark.alone\ndef test_one(): pass\n",
        test_b_quick="def test_one(): pass\n",
        test_c_slow=slow,
        test_d_slow_alone=slow + "@pytest.mark.alone\ndef test_two(): pass\n",
        test_0_light="import pytest\npytestmark = pytest.mark.light\ndef test_one(): pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    files = [line.split("::")[0] for line in result.outlines if "::" in line]
    alone = ["test_d_slow_alone.py", "test_d_slow_alone.py", "test_a_alone.py"]
    rest = ["test_c_slow.py", "test_b_quick.py"]  # within each rank too, slow units first
    light = ["test_0_light.py"]  # they may run beside an alone one
    assert files == (alone + rest + light if priority else rest + alone + light)


def test_each_worker_has_a_run_tag_of_its_own():
    from tests.conftest import TEST_RUN_TAG

    assert os.environ["SWEEP_TEST_RUN"] == TEST_RUN_TAG
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # scripts/test.sh's two workers
        assert TEST_RUN_TAG.endswith(f"@{worker}"), TEST_RUN_TAG
    else:  # SWEEP_TEST_WORKERS=0: one process, the run's own tag
        assert "@" not in TEST_RUN_TAG, TEST_RUN_TAG
