"""The guard of tests/conftest.py fails a test that leaves `os.environ` changed, naming the keys,
and passes one that restores what it changed (run by pytest in a subprocess of its own)."""

import pytest

from tests.helpers import inner_pytest_env

pytest_plugins = ["pytester"]

LEAKS = """
import os

def test_sets_one(monkeypatch):
    os.environ["GUARD_PROBE_SET"] = "1"

def test_removes_one():
    os.environ.pop("GUARD_PROBE_KEPT")

def test_restores_what_it_changed(monkeypatch):
    monkeypatch.setenv("GUARD_PROBE_PATCHED", "1")

def test_next_test_starts_clean():
    assert "GUARD_PROBE_SET" not in os.environ and os.environ["GUARD_PROBE_KEPT"] == "k"
"""


def test_a_test_leaving_the_environment_changed_fails_with_the_keys(pytester, monkeypatch):
    monkeypatch.setenv("GUARD_PROBE_KEPT", "k")
    # The subprocess runs in pytester's folder: the project's tests package is found by path.
    inner_pytest_env(monkeypatch)
    pytester.makeconftest("from tests.conftest import _environment_unchanged  # noqa: F401\n")
    pytester.makepyfile(test_leaks=LEAKS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*the test left os.environ changed: GUARD_PROBE_SET",
            "*the test left os.environ changed: GUARD_PROBE_KEPT",
        ],
        consecutive=False,
    )
    with pytest.raises(pytest.fail.Exception):
        result.stdout.fnmatch_lines(["*changed: GUARD_PROBE_PATCHED*"])
