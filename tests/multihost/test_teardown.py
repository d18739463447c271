"""What a crashed run leaves is found by its prefix and removed: processes, namespaces, links,
mounts. Runs last in this package: it takes the cluster down (the next user builds it anew)."""

from __future__ import annotations

import os
import subprocess

import pytest

from sweep.tools.netns_hosts import BRIDGE, MARKER, PREFIX, STATE, leftovers, namespace_pids, run

pytestmark = pytest.mark.slow


def test_down_removes_a_crashed_runs_leftovers_and_the_cluster(netns):
    # What a run killed with -9 would leave beside the live cluster: a namespace with its cable on
    # the bridge and a process in it, a process that left every namespace, a mount.
    crashed = f"{PREFIX}-crashed"
    run("ip", "netns", "add", crashed)
    run("ip", "link", "add", f"{crashed}-h", "type", "veth", "peer", "name", f"{crashed}-n")
    run("ip", "link", "set", f"{crashed}-n", "netns", crashed)
    run("ip", "link", "set", f"{crashed}-h", "master", BRIDGE, "up")
    env = {**os.environ, MARKER: "crashed"}
    inside = subprocess.Popen(["ip", "netns", "exec", crashed, "sleep", "600"],
                              start_new_session=True)  # fmt: skip
    outside = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    mount_point = STATE / "crashed-mount"
    mount_point.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m", f"{PREFIX}-crashed", str(mount_point))
    assert namespace_pids(crashed) and namespace_pids(netns.head.netns)
    found = "\n".join(leftovers())
    for what in (f"namespace {crashed}", f"link {crashed}-h", f"mount {mount_point}",
                 f"process {outside.pid}"):  # fmt: skip
        assert what in found

    # The hosts' temporary files are their own: the head's dashboard keeps its forkserver's
    # folder there, which a killed head left in this machine's /tmp, one a run.
    assert list(netns.head.tmp.glob("pymp-*")), list(netns.head.tmp.iterdir())
    netns.down()
    assert leftovers() == []
    assert inside.wait(10) is not None and outside.wait(10) is not None
    assert not STATE.exists()
