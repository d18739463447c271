"""The suite's timeline (`sweep.bench.suite_timeline`): each test's start and end, and the tail."""

from sweep.bench.suite_timeline import (
    PLUGIN,
    TIMELINE_VAR,
    beside_alone,
    files_table,
    idle_by_file,
    idle_table,
    read_timeline,
    tail,
    timeline_table,
)

pytest_plugins = ["pytester"]


def row(test, worker, start, end, alone=False, cpu_s=0.0, light=False):
    return {"test": test, "worker": worker, "start": start, "end": end, "alone": alone,
            "light": light, "cpu_s": cpu_s}  # fmt: skip


def test_the_tail_starts_when_a_worker_has_no_test_left_and_lists_what_ran_in_it():
    rows = [
        row("a.py::t", "gw0", 100.0, 160.0),  # both workers busy
        row("b.py::t", "gw1", 100.0, 150.0),
        row("c.py::slow", "gw1", 150.0, 170.0),  # ends inside the tail: it is listed
        row("d.py::alone", "gw0", 165.0, 195.0, alone=True),
        row("d.py::quick", "gw0", 195.0, 195.2),  # too short to list
        row("e.py::alone", "gw1", 195.5, 205.5, alone=True),  # gw1's last: the tail's start
        row("f.py::light", "gw0", 196.0, 210.0, light=True),  # 9.5 s beside the alone test
    ]
    assert tail(rows) == (205.5, 210.0)
    # beside d's 30 s: c's last 5 s; beside e's 10 s: d.py::quick's 0 s and f's 9.5 s
    assert beside_alone(rows) == (40.0, 9.5, 5.0)
    lines = timeline_table(rows, shortest_s=0.5).splitlines()
    assert lines[0] == (
        "7 tests over 110.0 s on 2 workers; alone tests 40.0 s, beside them light tests 9.5 s "
        "and others 5.0 s; the tail from 105.5 s, once a worker had no test left: 4.5 s"
    )
    assert lines[4:] == ["| 96.0 | 14.0 | gw0 | light | f.py::light |"]


def test_a_files_cpu_is_its_tests_in_pytest_and_the_processes_they_started():
    rows = [
        row("a.py::t1", "gw0", 0.0, 10.0, cpu_s=2.0),
        row("a.py::t2", "gw0", 10.0, 12.0, cpu_s=1.0),
        row("b.py::t", "gw1", 0.0, 5.0, cpu_s=4.0),
        row("c.py::t", "gw1", 5.0, 6.0, cpu_s=0.5),
    ]
    started = {"a.py": 20.0, "b.py": 1.0, "": 7.0}  # "": pytest's own processes, no test's
    lines = files_table(rows, started, top=2).splitlines()
    assert lines[0] == "CPU by test file: 28.5 CPU-s in all, the 2 largest"
    assert lines[4:] == ["| a.py | 12.0 | 23.0 | 3.0 | 20.0 |", "| b.py | 5.0 | 5.0 | 4.0 | 1.0 |"]


def test_idle_cores_are_shared_among_the_tests_running_then():
    """Two cores sampled each second: a file's share of the idle cores while its tests ran."""
    rows = [
        row("a.py::t", "gw0", 0.0, 2.0),  # alone at first, then beside b
        row("b.py::t", "gw1", 1.0, 3.0),
        row("c.py::t", "gw1", 10.0, 11.0),  # after a gap with no test: the gap counts for none
    ]
    busy = [0.0, 2.0, 2.5, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # the machine's busy CPU-s
    machine = list(zip(range(12), busy, strict=True))
    idle, free, span = idle_by_file(rows, machine, cores=2)
    # second 0-1: a alone, 0 idle; 1-2: a and b, 1.5 idle; 2-3: b, 0.5 idle; 10-11: c, 2 idle
    assert idle == {"a.py": 0.75, "b.py": 0.75 + 0.5, "c.py": 2.0}
    assert (free, span) == (4.0, 8.0)
    lines = idle_table(rows, machine, cores=2, top=2).splitlines()
    assert lines[0] == (
        "Idle cores by test file: 4.0 of 8.0 core-s idle while tests ran (50%), the 2 files "
        "with most"
    )
    assert lines[4:] == ["| c.py | 1.0 | 2.0 | 2.00 |", "| b.py | 2.0 | 1.2 | 0.62 |"]


def test_one_worker_has_no_tail_and_nothing_beside_its_alone_tests():
    rows = [row("a.py::t", "main", 0.0, 2.0, alone=True), row("b.py::t", "main", 2.0, 3.0)]
    assert tail(rows) == (3.0, 3.0)
    assert beside_alone(rows) == (2.0, 0.0, 0.0)
    assert timeline_table(rows).splitlines()[0].endswith("had no test left: 0.0 s")


def test_the_plugin_writes_each_tests_span_and_whether_it_is_alone_or_light(pytester, monkeypatch):
    log = pytester.path / "timeline.jsonl"
    monkeypatch.setenv(TIMELINE_VAR, str(log))
    pytester.makeconftest(
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'alone: nothing beside it')\n"
        "    config.addinivalue_line('markers', 'light: may run beside an alone test')\n"
    )
    pytester.makepyfile(
        test_one="import time, pytest\n"
        "def test_plain(): time.sleep(0.05)\n"
        "@pytest.mark.timing\n"
        "def test_alone(): time.sleep(0.05)\n"
        "@pytest.mark.light\n"
        "def test_light(): time.sleep(0.05)\n"
    )
    pytester.runpytest("-p", PLUGIN).assert_outcomes(passed=3)
    rows = read_timeline(log)
    assert [(r["test"], r["alone"], r["light"], r["worker"]) for r in rows] == [
        ("test_one.py::test_plain", False, False, "main"),
        ("test_one.py::test_alone", True, False, "main"),
        ("test_one.py::test_light", False, True, "main"),
    ]
    assert all(r["end"] - r["start"] >= 0.05 for r in rows)
    assert all(0 <= r["cpu_s"] < 1.0 for r in rows)  # sleeping: little of pytest's CPU
    assert rows[0]["end"] <= rows[1]["start"] <= rows[1]["end"] <= rows[2]["start"]


def test_under_xdist_each_test_is_written_once_by_its_worker(pytester, monkeypatch):
    """The controller hears every worker's tests again: it writes none of them."""
    log = pytester.path / "timeline.jsonl"
    monkeypatch.setenv(TIMELINE_VAR, str(log))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # the inner run's own workers
    pytester.makepyfile(test_a="def test_one(): pass\n", test_b="def test_two(): pass\n")
    result = pytester.runpytest_subprocess("-p", PLUGIN, "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    rows = read_timeline(log)
    assert sorted(r["test"] for r in rows) == ["test_a.py::test_one", "test_b.py::test_two"]
    assert {r["worker"] for r in rows} <= {"gw0", "gw1"}
