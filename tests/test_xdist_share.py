"""Under pytest-xdist (scripts/test.sh runs two workers), a test file is one unit of work and a
test marked `alone` runs with no other test beside it but a `light` one, while the others do run
two at a time (tests/conftest.py's share of the machine). Checked on a small suite run by pytest
in a subprocess of its own, with a run tag of its own so that its locks are not this run's."""

import json
import os

import pytest

from tests.helpers import inner_pytest_env

pytest_plugins = ["pytester"]
# Its inner runs mostly sleep (30 s, 10 CPU-s): scheduled first, where the other worker's units
# fill the cores, not last, where the first alone test waited 28 s for it.
pytestmark = pytest.mark.slow

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


def inner_run(pytester, monkeypatch, tmp_path, tests: int, workers=2, **files) -> list[dict]:
    """Run `files` under xdist workers with this suite's hooks; each test's row."""
    inner_pytest_env(monkeypatch, own_run=True)
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("SHARE_PROBE_LOG", str(log))
    pytester.makeconftest("pytest_plugins = ['tests.conftest']\n")
    pytester.makepyfile(**files)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", str(workers),
                                           "--dist", "loadscope")  # fmt: skip
    result.assert_outcomes(passed=tests)
    return [json.loads(line) for line in log.read_text().splitlines()]


def overlaps(row: dict, other: dict) -> bool:
    """Whether two spans (a test's row, or `span` of several) ran at the same time."""
    return row["start"] < other["end"] and row["end"] > other["start"]


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
    overlapping = [r["name"] for r in others if overlaps(r, alone)]
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
    beside = [r for r in lights if overlaps(r, alone)]
    assert len(beside) >= 2, rows  # the light ones ran beside it
    assert {r["worker"] for r in lights} != {alones[0]["worker"]}


SOLITARY = ALONE.replace("alone{n}", "solitary{n}").replace(
    "@pytest.mark.alone", "@pytest.mark.alone(company=False)"
)


def solitary_run(pytester, monkeypatch, tmp_path, workers: int) -> tuple[list, dict]:
    """A plain, an alone, a solitary and a light file under `workers` workers: every row, and
    the solitary file's span, after checking nothing ran beside it."""
    rows = inner_run(
        pytester, monkeypatch, tmp_path, 10, workers=workers,
        test_a=BESIDE.replace("COUNT", "2"),
        test_b_alone=ALONE,
        test_c_solitary=SOLITARY,
        test_d_light=LIGHT,
    )  # fmt: skip
    solitary = span([r for r in rows if r["name"].startswith("solitary")])
    others = [r for r in rows if not r["name"].startswith("solitary")]
    assert [r["name"] for r in others if overlaps(r, solitary)] == [], rows
    return rows, solitary


def test_an_alone_test_without_company_has_no_light_test_beside_it(pytester, monkeypatch, tmp_path):
    """`alone(company=False)`: the other worker waits with the next alone unit instead of
    taking light ones; they run beside the plain alone unit afterwards."""
    rows, solitary = solitary_run(pytester, monkeypatch, tmp_path, workers=2)
    alone = span([r for r in rows if r["name"].startswith("alone")])
    assert solitary["end"] <= alone["start"], rows  # the solitary unit first of the alone ones
    lights = [r for r in rows if r["name"].startswith("light")]
    assert any(overlaps(r, alone) for r in lights), rows  # beside the plain alone unit, as before


def test_no_light_test_runs_beside_a_solitary_one_whatever_the_workers(
    pytester, monkeypatch, tmp_path
):
    """With three workers the third is handed a light unit while the second waits with the
    next alone one: the light test waits for the solitary one to end (the `company` lock)."""
    solitary_run(pytester, monkeypatch, tmp_path, workers=3)


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


def test_units_with_an_alone_test_come_last_and_slow_ones_first(pytester, monkeypatch):
    inner_pytest_env(monkeypatch)
    pytester.makeconftest(
        "from tests.conftest import pytest_collection_modifyitems, pytest_configure  # noqa\n"
    )
    slow = "import pytest\npytestmark = pytest.mark.slow\ndef test_one(): pass\n"
    pytester.makepyfile(
        test_a_alone="import pytest\n@pytest.mark.alone\ndef test_one(): pass\n",
        test_b_quick="def test_one(): pass\n",
        test_c_slow=slow,
        test_d_slow_alone=slow + "@pytest.mark.alone\ndef test_two(): pass\n",
        test_e_solitary="import pytest\n@pytest.mark.alone(company=False)\ndef test_one(): pass\n",
        test_0_light="import pytest\npytestmark = pytest.mark.light\ndef test_one(): pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    files = [line.split("::")[0] for line in result.outlines if "::" in line]
    assert files == [  # within each rank too, slow units first
        "test_c_slow.py",
        "test_b_quick.py",
        "test_e_solitary.py",  # first of the alone units: no light one beside it
        "test_d_slow_alone.py",
        "test_d_slow_alone.py",
        "test_a_alone.py",
        "test_0_light.py",  # light units after those: they may run beside an alone one
    ]


def test_each_worker_has_a_run_tag_of_its_own():
    from tests.conftest import TEST_RUN_TAG

    assert os.environ["SWEEP_TEST_RUN"] == TEST_RUN_TAG
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # scripts/test.sh's workers
        assert TEST_RUN_TAG.endswith(f"@{worker}"), TEST_RUN_TAG
    else:  # SWEEP_TEST_WORKERS=0: one process, the run's own tag
        assert "@" not in TEST_RUN_TAG, TEST_RUN_TAG
