"""A server's scratch folder is removed by the next one made once its owner was killed."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

from backends.process.launcher import ServerLauncher
from backends.process.scratch import OWNER_FILE, remove_orphans, scratch_folder
from tests.helpers import REPO

MAKE_AND_WAIT = """
import sys, time
from backends.process.scratch import scratch_folder
print(scratch_folder("sim"), flush=True)
time.sleep(120)
"""


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what gettempdir() answers
    return tmp_path


def owner_killed(root):
    """The folder a process made before it was killed with SIGKILL (as a worker is)."""
    env = {**os.environ, "TMPDIR": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", MAKE_AND_WAIT], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        folder = proc.stdout.readline().strip()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert folder.startswith(str(root)), folder
    return folder


def test_the_folder_of_a_killed_owner_goes_when_the_next_is_made(root):
    orphan = owner_killed(root)
    (root / orphan / "sim.log").write_text("the server's last words")
    mine = scratch_folder("tgi")
    assert not os.path.exists(orphan)
    assert mine.is_dir() and mine.name.startswith("tgi-")
    assert (mine / OWNER_FILE).read_text().split()[0] == str(os.getpid())


def test_live_owners_and_unmarked_folders_are_kept(root):
    mine = scratch_folder("sim")
    unmarked = root / "sim-someone-else"
    unmarked.mkdir()
    assert remove_orphans(root) == []
    assert mine.is_dir() and unmarked.is_dir()


def test_a_reused_process_id_is_not_the_owner(root):
    """The owner's id now names another process (this one): its start time tells them apart."""
    reused = root / "sim-reused"
    reused.mkdir()
    (reused / OWNER_FILE).write_text(f"{os.getpid()} 1")  # started at tick 1: not this process
    assert remove_orphans(root) == [reused]
    assert not reused.exists()


def test_a_launcher_that_stops_removes_its_folder_and_one_killed_leaves_it_to_the_next(root):
    launcher = ServerLauncher("sim")
    folder = launcher.folder
    assert folder.parent == root and (folder / OWNER_FILE).exists()
    launcher.stop()
    assert not folder.exists()
    orphan = owner_killed(root)
    assert os.path.exists(orphan)  # nothing ran at the kill
    after = ServerLauncher("sim")
    assert after.folder.is_dir() and not os.path.exists(orphan)
    after.stop()
