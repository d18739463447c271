"""Under pytest-xdist (scripts/test.sh runs two workers), a test file is one unit of work and a
test marked `alone` runs with no other test beside it, while the others do run two at a time
(tests/conftest.py's share of the machine). Checked on a small suite run by pytest in a
subprocess of its own, with a run tag of its own so that its locks are not this run's."""

import json
import os
import uuid
from pathlib import Path

REPO = Path(__file__).parents[1]
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


def test_an_alone_test_runs_with_nothing_beside_it(pytester, monkeypatch, tmp_path):
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "SWEEP_TEST_SHARE"):
        monkeypatch.delenv(name, raising=False)  # the inner run is a controller of its own
    monkeypatch.setenv("SWEEP_TEST_RUN", uuid.uuid4().hex)
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("SHARE_PROBE_LOG", str(log))
    pytester.makeconftest(
        "from tests.conftest import (  # noqa: F401\n"
        "    pytest_collection_modifyitems, pytest_configure, pytest_runtest_protocol,\n"
        "    pytest_sessionfinish, pytest_xdist_make_scheduler)\n"
    )
    # One worker takes the short file, then the alone test, while the other is in the long file.
    pytester.makepyfile(
        test_a=BESIDE.replace("COUNT", "1"),
        test_b=BESIDE.replace("COUNT", "10"),
        test_c_alone=ALONE,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2",
                                           "--dist", "loadscope")  # fmt: skip
    result.assert_outcomes(passed=13)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    # The file's two alone tests keep the machine between them: one span, nothing beside it.
    alones = [r for r in rows if r["name"].startswith("alone")]
    alone = {"start": min(r["start"] for r in alones), "end": max(r["end"] for r in alones)}
    others = [r for r in rows if not r["name"].startswith("alone")]
    assert len({r["worker"] for r in rows}) == 2, rows  # both workers ran tests
    long_file = {r["worker"] for r in rows if r["name"].startswith("test_b")}
    assert len(long_file) == 1, rows  # a file is one unit of work: its module fixtures start once
    overlapping = [
        r["name"] for r in others if r["start"] < alone["end"] and r["end"] > alone["start"]
    ]
    assert not overlapping, f"ran beside the alone test: {overlapping}"


def test_units_with_an_alone_test_come_last_and_slow_ones_first(pytester, monkeypatch):
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    pytester.makeconftest(
        "from tests.conftest import pytest_collection_modifyitems, pytest_configure  # noqa\n"
    )
    slow = "import pytest\npytestmark = pytest.mark.slow\ndef test_one(): pass\n"
    pytester.makepyfile(
        test_a_alone="import pytest\n@pytest.mark.alone\ndef test_one(): pass\n",
        test_b_quick="def test_one(): pass\n",
        test_c_slow=slow,
        test_d_slow_alone=slow + "@pytest.mark.alone\ndef test_two(): pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    files = [line.split("::")[0] for line in result.outlines if "::" in line]
    assert files == [  # within each rank too, slow units first
        "test_c_slow.py",
        "test_b_quick.py",
        "test_d_slow_alone.py",
        "test_d_slow_alone.py",
        "test_a_alone.py",
    ]


def test_each_worker_has_a_run_tag_of_its_own():
    from tests.conftest import TEST_RUN_TAG

    assert os.environ["SWEEP_TEST_RUN"] == TEST_RUN_TAG
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # scripts/test.sh's two workers
        assert TEST_RUN_TAG.endswith(f"@{worker}"), TEST_RUN_TAG
    else:  # SWEEP_TEST_WORKERS=0: one process, the run's own tag
        assert "@" not in TEST_RUN_TAG, TEST_RUN_TAG
