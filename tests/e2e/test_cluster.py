"""Multi-node sweeps on a real simulated Ray cluster (`ray.cluster_utils.Cluster`, 127.0.0.1).

Nodes declare fake GPUs and accelerator resources; the `sim` backend stands in for a GPU
engine (it needs no GPU), so placement, retries and resume are exercised with real Ray.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from sweep.__main__ import main as sweep_main
from sweep.core import records as R
from sweep.driver.driver import NO_PRESTART
from tests.helpers import own_processes

pytestmark = pytest.mark.slow  # its sweeps start clusters and servers: scheduled first

REPO = Path(__file__).parents[2]
SECRET = "planted-secret-4f7c1e"
# These tests check where trials ran and what was recorded, not the report: their sweeps write
# none (about 3 CPU-s each); the killed driver's rerun writes it, and the secret is looked for
# in it too.
NO_REPORT = "sweep.report=false"
SMALL = [  # 4 deployments x 2 trials of short sim work
    "+experiment=sim_cluster",
    "+sweep.grid.backend.ttft_ms=[5,6,7,8]",
    "+sweep.grid.workload.concurrency=[2,4]",
    "workload.num_requests=12",
    "workload.output_len=8",
    NO_REPORT,
]


@pytest.fixture(scope="module")
def cluster():
    os.environ["MY_SERVICE_TOKEN"] = SECRET  # inherited by every Ray worker started below
    c = Cluster(  # no dashboard, as the sweep's own local start (its processes cost CPU)
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "_system_config": dict(NO_PRESTART),
        },
    )
    nodes = [
        c.add_node(
            num_cpus=2,
            num_gpus=2,
            resources={"accelerator_type:L4": 1},
            node_ip_address="127.0.0.1",
        )
        for _ in range(2)
    ]
    nodes.append(
        c.add_node(
            num_cpus=2,
            num_gpus=2,
            resources={"accelerator_type:T4": 1},
            node_ip_address="127.0.0.1",
        )
    )
    c.wait_for_nodes()
    yield c, nodes
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    os.environ.pop("MY_SERVICE_TOKEN", None)


def node_resources(cluster):
    ray.init(address=cluster.address)
    try:
        return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


def summaries(root: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))


def sim_servers() -> list[psutil.Process]:
    """Sim servers started by this test run (see TEST_RUN_TAG)."""
    return own_processes("backends.sim_server")


def most_at_once(frame: pd.DataFrame) -> int:
    """The most deployments running at one moment (first trial's start to last trial's end)."""
    ends = frame[R.STARTED_UNIX_S] + frame[R.WALL_S]
    spans = (
        frame.assign(end=ends)
        .groupby(R.DEPLOYMENT_ID)
        .agg(start=(R.STARTED_UNIX_S, "min"), end=("end", "max"))
    )
    return max(((spans["start"] <= t) & (spans["end"] > t)).sum() for t in spans["start"])


def test_deployments_land_on_matching_nodes_in_parallel(cluster, tmp_path):
    c, _ = cluster
    resources = node_resources(c)
    assert sweep_main([*SMALL, f"cluster.address={c.address}", f"output.dir={tmp_path}"]) == 0
    frame = summaries(tmp_path / "sim_cluster")
    assert len(frame) == 8 and (frame[R.TRIAL_STATUS] == R.STATUS_OK).all()
    for _, row in frame.iterrows():
        assert "accelerator_type:L4" in resources[row["env.ray_node_id"]]
        assert row["env.cuda_visible_devices"] in {"0", "1"}  # one fake GPU, set by Ray
        # ... and the server process the backend launched saw the same devices (the row may
        # have run in a helper task on an idle GPU, whose log is kept beside backend.log)
        folder = tmp_path / "sim_cluster" / row[R.DEPLOYMENT_ID]
        logs = [p.read_text() for p in folder.glob("backend*.log")]
        assert any(f"CUDA_VISIBLE_DEVICES={row['env.cuda_visible_devices']}" in t for t in logs)
    # four deployments on four L4 GPUs: some ran at the same time (in a row, none would overlap)
    assert most_at_once(frame) >= 2
    assert frame["env.ray_node_id"].nunique() == 2  # both L4 nodes used
    assert not sim_servers()


def test_t4_deployment_lands_only_on_the_t4_node(cluster, tmp_path):
    c, _ = cluster
    resources = node_resources(c)
    # two deployments, one for each of the T4 node's GPUs: where each lands is the question
    args = [*SMALL, "hardware=t4", "sweep.grid.backend.ttft_ms=[5,6]"]
    assert sweep_main([*args, f"cluster.address={c.address}", f"output.dir={tmp_path}"]) == 0
    frame = summaries(tmp_path / "sim_cluster")
    assert len(frame) == 4
    assert all("accelerator_type:T4" in resources[n] for n in frame["env.ray_node_id"])


def test_unplaceable_deployment_is_reported_at_once(cluster, tmp_path):
    c, _ = cluster
    args = [*SMALL, "hardware=h100", f"cluster.address={c.address}", f"output.dir={tmp_path}"]
    assert sweep_main(args) == 0
    frame = summaries(tmp_path / "sim_cluster")
    assert len(frame) == 8
    assert (frame[R.ERROR_KIND] == "unplaceable").all()
    # recorded by the driver: no task was submitted, no worker ran them
    assert R.ENV_WORKER_PID not in frame or frame[R.ENV_WORKER_PID].isna().all()
    assert frame[R.ERROR_MESSAGE].str.contains("no node has accelerator type H100").all()
    too_big = [
        *SMALL,
        "backend.num_gpus=3",
        f"cluster.address={c.address}",
        f"output.dir={tmp_path}/big",
    ]
    assert sweep_main(too_big) == 0
    frame = summaries(tmp_path / "big" / "sim_cluster")
    assert frame[R.ERROR_MESSAGE].str.contains("needs 3 GPUs").all()


def test_node_removed_mid_sweep_every_trial_once(cluster, tmp_path, caplog):
    """Six deployments on six L4 GPUs: the extra node's two run there; it is removed after the
    first of its trials is saved, while the next runs, and the driver retries what it lost."""
    c, nodes = cluster
    extra = c.add_node(
        num_cpus=2, num_gpus=2, resources={"accelerator_type:L4": 1}, node_ip_address="127.0.0.1"
    )
    c.wait_for_nodes()
    args = [
        *SMALL,
        "sweep.grid.backend.ttft_ms=[5,6,7,8,9,10]",
        "workload.num_requests=40",
        f"cluster.address={c.address}",
        f"output.dir={tmp_path}",
    ]
    result = {}
    caplog.set_level(logging.WARNING, logger="sweep.driver.driver")
    thread = threading.Thread(target=lambda: result.setdefault("rc", sweep_main(args)))
    thread.start()
    root = tmp_path / "sim_cluster"
    deadline = time.monotonic() + 300
    while not on_node(root, extra.node_id) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not on_node(root, extra.node_id):
        thread.join(timeout=300)
        ran = summaries(root)["env.ray_node_id"].value_counts().to_dict()
        pytest.fail(f"no trial ran on the node to remove ({extra.node_id}): {ran}")
    c.remove_node(extra)
    thread.join(timeout=300)
    assert result.get("rc") == 0
    frame = summaries(root)
    assert len(frame) == 12 and frame[R.TRIAL_ID].is_unique
    assert (frame[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert not list(root.rglob("*.tmp-*"))
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retried, "the removed node's deployments were not retried"
    # a deployment that began on the removed node finished its trials on a node that stayed
    began = frame.loc[frame["env.ray_node_id"] == extra.node_id, R.DEPLOYMENT_ID]
    moved = frame[frame[R.DEPLOYMENT_ID].isin(began) & (frame["env.ray_node_id"] != extra.node_id)]
    assert len(moved) >= 1, frame[[R.DEPLOYMENT_ID, "env.ray_node_id"]]
    # the lost task's server log is kept beside that of the task that went on elsewhere
    for deployment_id in moved[R.DEPLOYMENT_ID].unique():
        logs = sorted((root / deployment_id).glob("backend*.log"))
        assert len(logs) >= 2 and R.BACKEND_LOG in {p.name for p in logs}, logs
        assert all(p.read_text().count("sim_server on") == 1 for p in logs), logs


def on_node(root: Path, node_id: str) -> bool:
    """Whether a trial saved under `root` ran on the node `node_id`."""
    for path in root.glob(f"*/*/{R.SUMMARY_FILE}"):
        try:
            if pd.read_parquet(path)["env.ray_node_id"].iloc[0] == node_id:
                return True
        except (OSError, ValueError):  # being renamed into place
            continue
    return False


def test_killed_driver_rerun_completes_only_missing(cluster, tmp_path):
    c, _ = cluster
    command = [
        sys.executable,
        "-m",
        "sweep",
        *SMALL,
        "workload.num_requests=40",
        f"cluster.address={c.address}",
        f"output.dir={tmp_path}",
        f"sweep.description=uses {SECRET}",
        "sweep.report=true",  # the secret is looked for in the report too
    ]
    root = tmp_path / "sim_cluster"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(root.glob(f"*/*/{R.SUMMARY_FILE}"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(root.glob(f"*/*/{R.SUMMARY_FILE}")))
    assert 2 <= done_before < 8
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"skipping {done_before} completed trials" in rerun.stdout
    assert f"running {8 - done_before} trials" in rerun.stdout
    frame = summaries(root)
    assert len(frame) == 8 and frame[R.TRIAL_ID].is_unique
    assert not list(root.rglob("*.tmp-*"))
    time.sleep(2)
    assert not sim_servers()  # the killed driver's servers went with their workers
    # the planted secret is in the environment and in a config value, and in no output file
    assert (root / "report.md").is_file()
    for path in root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_idle_gpus_take_half_of_a_deployments_trials(cluster, tmp_path):
    """One deployment of 6 trials (about 3 s each) and idle L4 GPUs: a helper task claims
    trials from the back while the original goes on from the front; each trial runs once."""
    c, _ = cluster
    args = [
        "+experiment=sim_cluster",
        "sweep.grid.backend.ttft_ms=[10]",
        "sweep.grid.workload.concurrency=[2]",
        "+sweep.grid.workload.num_requests=[20,21,22,23,24,25]",
        NO_REPORT,
        f"cluster.address={c.address}",
        f"output.dir={tmp_path}",
    ]
    assert sweep_main(args) == 0
    frame = summaries(tmp_path / "sim_cluster")
    assert len(frame) == 6 and frame[R.TRIAL_ID].is_unique
    assert (frame[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert frame[R.DEPLOYMENT_ID].nunique() == 1
    # the original task runs from the front; a helper on another GPU from the back
    frame["gpu"] = frame["env.ray_node_id"] + "/" + frame["env.cuda_visible_devices"]
    by_size = frame.sort_values("workload.num_requests")
    first, last = by_size["gpu"].iloc[0], by_size["gpu"].iloc[-1]
    assert first != last
    assert (by_size["gpu"] == first).sum() >= 2  # the first, and the next as it ended
    assert by_size["gpu"].nunique() == 2  # one helper per deployment
    # each task's server log is kept: the deployment's own as backend.log, the helper's beside it
    folder = tmp_path / "sim_cluster" / frame[R.DEPLOYMENT_ID].iloc[0]
    helper_log = R.task_log_name(R.HELPER_TASK, 1)
    assert {p.name for p in folder.glob("backend*.log")} == {R.BACKEND_LOG, helper_log}
    devices = by_size["env.cuda_visible_devices"]
    own, helpers = (folder / R.BACKEND_LOG).read_text(), (folder / helper_log).read_text()
    assert f"CUDA_VISIBLE_DEVICES={devices.iloc[0]}" in own
    assert f"CUDA_VISIBLE_DEVICES={devices.iloc[-1]}" in helpers
    assert own.count("sim_server on") == helpers.count("sim_server on") == 1  # one server each


FORWARDED = "forwarded-secret-91d2"


@pytest.mark.parametrize("forward", [True, False])
def test_the_driver_forwards_named_secrets_to_the_workers(cluster, tmp_path, monkeypatch, forward):
    """A variable set only on the driver reaches the cluster's workers when cluster.forward_env
    names it (the nodes were started without it: without forwarding the trial fails)."""
    from tests.strict_server import Running, StrictServer

    c, _ = cluster
    monkeypatch.setenv("FWD_GW_TOKEN", FORWARDED)
    server = StrictServer(required_headers={"X-Api-Key": FORWARDED})
    running = Running(server)
    try:
        names = "[FWD_GW_TOKEN,NOT_SET_ANYWHERE_42]" if forward else "[]"
        args = ["backend=openai", f"backend.url={server.url}", "sweep.name=fwd",
                "+backend.headers.X-Api-Key={env:FWD_GW_TOKEN}", "workload=closed_loop",
                "workload.warmup_requests=0", "dataset.input_len=16", "workload.num_requests=3",
                "workload.output_len=4", "workload.concurrency=1", f"cluster.forward_env={names}",
                NO_REPORT,
                f"cluster.address={c.address}", f"output.dir={tmp_path}"]  # fmt: skip
        assert sweep_main(args) == 0
    finally:
        running.stop()
    row = summaries(tmp_path / "fwd").iloc[0]
    if forward:
        assert row[R.TRIAL_STATUS] == R.STATUS_OK, row[R.ERROR_MESSAGE]
        assert len(server.seen) == 3
        assert all(s.headers["X-Api-Key"] == FORWARDED for s in server.seen)
    else:
        assert row[R.ERROR_KIND] == R.ERROR_BACKEND_START
        assert "FWD_GW_TOKEN, which is not set" in row[R.ERROR_MESSAGE]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if FORWARDED.encode() in p.read_bytes()]
