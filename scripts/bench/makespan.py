"""Makespan of a sweep on a simulated multi-node cluster against the ideal.

Starts a real Ray cluster on this machine (`ray.cluster_utils.Cluster`, 127.0.0.1): a head with no
GPUs and NODES nodes of GPUS fake L4 GPUs each, then runs `+experiment=sim_cluster` (24 trials in
6 deployments of the `sim` backend) twice: undisturbed, and with one node removed mid-sweep (by
default at half the undisturbed makespan, while its first trials run: their work is lost).
The measured makespan runs from the command's start to the end of its last trial. The ideals,
each (sum of trial wall times + one backend start per deployment) spread over some GPUs:
- `ideal`: over every GPU of the cluster for the whole sweep (the issue's definition);
- `ideal_as_available`: over the GPU-seconds the nodes offered while they were up;
- `ideal_on_gpus_left`: over the GPUs of the nodes still up at the end.
`--timeline` prints every trial's span and GPU.

Where the time beyond the ideal goes, printed beside it:
- `first_trials_s`: when the deployments' first trials began (from the command's start): booting
  a Ray worker per deployment, importing the trial runner, starting the backend;
- `start_alone_s`: the same for one deployment on the idle cluster (one short sweep run first):
  what a node pays on its own CPUs, while here every node's workers share this machine's cores;
- `ratio_after_start`: the makespan less the first trials' start against the ideal less one
  backend start: how well the driver kept the GPUs busy once the deployments were running.

    .venv/bin/python -m scripts.bench.makespan [--nodes 3] [--gpus 2] [--remove-at S] [--timeline]
"""

from __future__ import annotations

import os

# Ray reads this as it is imported: the drivers of a local multi-node cluster stay on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from ray.cluster_utils import Cluster

from analysis.report.sections import markdown_table
from backends.sim import SimBackend, SimBackendConfig
from sweep.__main__ import main as sweep_main


def backend_start_s(repeats: int = 3) -> float:
    """Median time to start the sim server, measured here."""
    times = []
    for _ in range(repeats):
        backend = SimBackend(SimBackendConfig(), "unused")
        t = time.monotonic()
        backend.start()
        times.append(time.monotonic() - t)
        backend.stop()
    return sorted(times)[len(times) // 2]


# one deployment of one short trial: how long a deployment takes to start on an idle cluster
ALONE = ("sweep.grid.backend.ttft_ms=[10]", "sweep.grid.workload.concurrency=[16]")


def sweep_once(
    cluster: Cluster, out: Path, remove_after_s: float | None, node=None, more: tuple = ()
) -> tuple[float, pd.DataFrame]:
    """Run the sim_cluster sweep (removing `node` after `remove_after_s`); makespan, rows."""
    args = ["+experiment=sim_cluster", f"cluster.address={cluster.address}", f"output.dir={out}"]
    args += list(more)
    started = time.time()
    if remove_after_s is None:
        assert sweep_main(args) == 0
    else:
        thread = threading.Thread(target=sweep_main, args=(args,))
        thread.start()
        time.sleep(remove_after_s)
        cluster.remove_node(node)
        thread.join()
    frame = pd.concat(pd.read_parquet(p) for p in (out / "sim_cluster").glob("*/*/summary.parquet"))
    # from the command's start to the last trial's end: Ray connect and worker start-up count,
    # the report written afterwards does not
    makespan = (frame["started_unix_s"] + frame["wall_s"]).max() - started
    frame["since_start_s"] = frame["started_unix_s"] - started
    return makespan, frame


def timeline(name: str, frame: pd.DataFrame) -> str:
    """Each trial's start and end (s from the command's start) and where it ran."""
    rows = frame.assign(
        start_s=frame["since_start_s"].round(1),
        end_s=(frame["since_start_s"] + frame["wall_s"]).round(1),
        gpu=frame["env.ray_node_id"].str[:6] + "/" + frame["env.cuda_visible_devices"],
    ).sort_values("start_s")
    columns = ["deployment_id", "label", "gpu", "start_s", "end_s"]
    return f"\n{name}:\n" + markdown_table(rows[columns])


def first_trials(frame: pd.DataFrame) -> tuple[float, float]:
    """When the deployments' first trials began, from the command's start: the start-up cost."""
    firsts = frame.groupby("deployment_id")["since_start_s"].min()
    return firsts.min(), firsts.max()


def ideal_as_available(work: float, gpus: int, lost_gpus: int, removed_at: float | None) -> float:
    """The T with `gpus` GPUs until `removed_at`, `gpus - lost_gpus` after, offering `work`."""
    if removed_at is None or work <= gpus * removed_at:
        return work / gpus
    return removed_at + (work - gpus * removed_at) / (gpus - lost_gpus)


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.makespan`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument(
        "--remove-at", type=float, help="seconds in (default: half the undisturbed makespan)"
    )
    parser.add_argument("--timeline", action="store_true", help="print every trial's span")
    return parser


def run(args: argparse.Namespace) -> None:
    """The sweep undisturbed, then with a node removed; print the table against the ideals."""
    start_s = backend_start_s()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    nodes = [
        cluster.add_node(
            num_cpus=args.gpus,
            num_gpus=args.gpus,
            resources={"accelerator_type:L4": 1},
            node_ip_address="127.0.0.1",
        )
        for _ in range(args.nodes)
    ]
    cluster.wait_for_nodes()
    gpus = args.nodes * args.gpus
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, alone = sweep_once(cluster, Path(tmp) / "alone", None, more=ALONE)
            start_alone = first_trials(alone)[0]
            for name in ("all nodes", "one node removed mid-sweep"):
                remove = None
                if rows:
                    remove = args.remove_at or round(rows[0]["makespan_s"] / 2, 1)
                makespan, frame = sweep_once(
                    cluster, Path(tmp) / name.replace(" ", "_"), remove, nodes[-1]
                )
                if args.timeline:
                    print(timeline(name, frame))
                first, last = first_trials(frame)
                deployments = frame["deployment_id"].nunique()
                work = frame["wall_s"].sum() + deployments * start_s
                lost = args.gpus if remove else 0
                available = ideal_as_available(work, gpus, lost, remove)
                rows.append(
                    {
                        "scenario": name,
                        "removed_at_s": remove,
                        "trials": len(frame),
                        "ok": int((frame["trial_status"] == "ok").sum()),
                        "unique": frame["trial_id"].is_unique,
                        "makespan_s": round(makespan, 1),
                        "ideal_s": round(work / gpus, 1),
                        "ratio": round(makespan / (work / gpus), 2),
                        "ideal_as_available_s": round(available, 1),
                        "ratio_as_available": round(makespan / available, 2),
                        "ideal_on_gpus_left_s": round(work / (gpus - lost), 1),
                        "ratio_on_gpus_left": round(makespan / (work / (gpus - lost)), 2),
                        "start_alone_s": round(start_alone, 1),
                        "first_trials_s": f"{first:.1f}-{last:.1f}",
                        "ratio_after_start": round((makespan - first) / (work / gpus - start_s), 2),
                    }
                )
    finally:
        cluster.shutdown()
    print(f"backend start (sim, measured): {start_s:.2f} s; {gpus} GPUs; {os.cpu_count()} cores")
    print(markdown_table(pd.DataFrame(rows)))


def main() -> None:
    """Makespan; with `--trials`, the driver's cost per trial; `--start-costs`, one deployment's
    start step by step; `--plan`, the planner at grids of up to 10,000 points."""
    from scripts.bench import driver_scale, plan_scale, start_costs

    cli = parser()
    driver_scale.add_arguments(cli)
    plan_scale.add_arguments(cli)
    cli.add_argument(
        "--start-costs", action="store_true", help="one deployment's start, step by step"
    )
    cli.add_argument("--repeats", type=int, default=5, help="runs of each step (--start-costs)")
    args = cli.parse_args()
    if args.start_costs:
        print(start_costs.run(args.repeats))
    elif args.plan:
        plan_scale.run(args)
    elif args.trials:
        driver_scale.run(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
