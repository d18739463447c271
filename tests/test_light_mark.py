"""A test marked `light` may run beside an `alone` one (tests/conftest.py), so it must start no
process: tests/light.py fails it if it does, even where it caught the error itself."""

import multiprocessing
import os
import subprocess
import sys

import pytest

from tests.helpers import inner_pytest_env
from tests.light import ProcessStarted, no_process_started

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    "start",
    [
        lambda: subprocess.run(["true"], check=True),
        lambda: subprocess.Popen("true", shell=True).wait(),
        lambda: os.system("true"),
        lambda: multiprocessing.get_context("fork").Process(target=print).start(),
        lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    ],
    ids=["subprocess.run", "shell", "os.system", "fork", "spawn"],
)
def test_every_way_to_start_a_process_is_refused(start):
    with pytest.raises(ProcessStarted, match="started a process"), no_process_started():
        start()


def test_a_refusal_the_code_caught_still_fails_the_block():
    with pytest.raises(ProcessStarted, match=r"subprocess\._fork_exec"), no_process_started():
        try:
            subprocess.run(["true"])
        except ProcessStarted:
            pass  # as a test of "a server that cannot start is a failed trial" would


def test_processes_start_again_after_the_block():
    with no_process_started():
        pass
    done = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert done.stdout.strip() == "42"


def test_a_light_test_that_starts_a_process_fails_and_says_why(pytester, monkeypatch):
    inner_pytest_env(monkeypatch, own_run=True)
    pytester.makeconftest("pytest_plugins = ['tests.conftest']\n")
    pytester.makepyfile(
        test_marked="""
import subprocess
import pytest

pytestmark = pytest.mark.light

@pytest.fixture(scope="module")
def server():
    return subprocess.Popen(["sleep", "5"])

def test_pure():
    assert sum(range(10)) == 45

def test_starts_one():
    subprocess.run(["true"])

def test_catches_the_refusal():
    try:
        subprocess.run(["true"])
    except Exception:
        pass

def test_through_a_fixture(server):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, failed=2, errors=1)
    assert result.stdout.str().count("a test marked `light` started a process") >= 3
