"""The overnight path of docs/cluster.md, on hosts that share no code and no results.

`scripts/submit_sweep.sh` submits from this machine to the head's job endpoint; the driver runs
on the head (`cluster=auto`) in the job's copy of the code, trials run on the worker hosts with
the code their own Ray fetched from the job's runtime environment (the checkout's code folders
are hidden from every host), and results land in `~/llm-sweep-results` on the head only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from sweep.core import records as R
from sweep.tools.netns_hosts import HIDDEN, STATE, ClusterError, run
from tests.multihost.conftest import REPO, submit, summaries

pytestmark = pytest.mark.slow
NAME = "overnight"
SWEEP = [
    "+experiment=sim_cluster",
    f"sweep.name={NAME}",
    "sweep.grid.backend.ttft_ms=[5,6]",
    "sweep.grid.workload.concurrency=[2,4]",
    "workload.num_requests=16",
    "workload.output_len=8",
]


def test_the_readme_path_end_to_end(cluster, tmp_path):
    job = submit(cluster, tmp_path, SWEEP)
    assert job.wait(300) == 0, job.text()[-3000:]
    root = cluster.results_home / "llm-sweep-results" / NAME
    log = job.text()
    assert f"results in {root}" in log  # the driver ran on the head, `~` being the head's home
    assert "finished: 4 ok, 0 failed" in log

    rows = summaries(root)
    assert len(rows) == 4 and len({r[R.TRIAL_ID] for r in rows}) == 4
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    workers = {h.ip for h in cluster.workers}
    assert {r["env.node_ip"] for r in rows} <= workers  # GPU trials ran on the L4 worker hosts
    assert {r["env.cuda_visible_devices"] for r in rows} <= {"0", "1"}

    # Results only where docs/cluster.md says: nothing on the workers, in the job's copy of the code
    # or in the checkout submitted from.
    written = {p for p in STATE.rglob(R.SUMMARY_FILE) if f"/{NAME}/" in str(p)}
    assert written == set(root.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert not (REPO / "results" / NAME).exists()

    # Code reached each host that ran a trial through the runtime env: the working_dir package
    # its own Ray downloaded, while the checkout's code folders are empty there.
    for host in cluster.workers:
        if host.ip not in {r["env.node_ip"] for r in rows}:
            continue
        assert list(host.temp_dir.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*"))
        seen = run("nsenter", "-t", str(cluster.raylet(host)), "-m", "ls", "-A",
                   *(str(REPO / d) for d in HIDDEN)).stdout  # fmt: skip
        assert not [line for line in seen.splitlines() if line and not line.endswith(":")], seen

    # In the morning: fetch the folder (`ray rsync-down` on a real cluster) and analyse it here.
    fetched = tmp_path / "results" / NAME
    shutil.copytree(root, fetched)
    done = subprocess.run(
        [sys.executable, "-m", "analysis", str(fetched)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = (fetched / "report.md").read_text()
    for row in rows:
        assert row[R.LABEL] in report


def test_a_host_that_cannot_be_made_fails_with_the_reason(cluster):
    """Making a namespace that fails raises the command's own words (tests fail, never skip)."""
    with pytest.raises(ClusterError, match=f"ip netns add {cluster.head.netns} failed: .*exists"):
        cluster._plug(cluster.head)
