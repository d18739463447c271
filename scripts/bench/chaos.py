"""Chaos benchmark: a submitted sweep on the namespace cluster, one random fault per run.

Builds the cluster of `sweep.tools.netns_cluster` (as root: a head and two worker hosts of two
fake L4 GPUs), runs the sim sweep below undisturbed (the baseline), then RUNS times with one fault
of a random kind at a random moment: DELAY seconds, uniform in [0, --window], after the first
trial is under way. The faults (`--kinds`):
- `raylet`: kill -9 of the raylet of a worker host running a trial (the node dies);
- `cut_long`: that host's link down for 15 s, past the ~8 s Ray takes to declare it dead, then up;
- `cut_short`: the same for 1.7 s;
- `driver_stop`: `ray job stop`, then the same submission again;
- `driver_kill`: kill -9 of the job's driver process, then the same submission again;
- `disk_full`: results to a `file://` folder on a small tmpfs, filled; emptied, then resubmitted.
A host that died is restarted after its run. Per fault kind it prints:
- trials lost: planned trials with no `ok` summary once the run is over;
- trials duplicated: trials recorded `ok` more than once over all submissions of the run
  (each recorded trial is one progress line `✓ LABEL` in the job's log);
- orphans left: the sweep's processes (sim servers, deployment workers) still running on any
  host 20 s after the run's last job ended;
- extra wall time: the run's wall time (first submission to the last job's end, resubmissions
  included) less the median undisturbed run's.
At the end the cluster is torn down and anything it left (process, namespace, link, mount) is
reported.

    sudo .venv/bin/python -m scripts.bench.chaos [--runs 24] [--seed 0] [--kinds raylet,...]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweep.tools import REPO
from sweep.tools.netns_cluster import NetnsCluster
from sweep.tools.netns_hosts import SMALL_FS, fill, leftovers
from sweep.tools.netns_jobs import SweepJob

SWEEP = [  # 2 deployments x 3 trials of the sim backend, a few seconds each
    "+experiment=sim_cluster",
    "sweep.grid.backend.ttft_ms=[5,6]",
    "sweep.grid.workload.concurrency=[2,3,4]",
    "workload.num_requests=40",
    "workload.output_len=8",
]
TRIALS = 6
# A host cut off for longer than Ray takes to declare it dead (HEALTH_CHECK_DEAD_S, 8 s), or
# for a fraction of it.
CUT_LONG_S = 15.0
CUT_SHORT_S = 1.7
KINDS = ("raylet", "cut_long", "cut_short", "driver_stop", "driver_kill", "disk_full")
PROGRESS = re.compile(r"^✓ (\S+) ", re.MULTILINE)


@dataclass
class Run:
    """One sweep from scratch and what a fault (kind `none`: no fault) cost it."""

    kind: str
    delay_s: float
    wall_s: float = 0.0
    lost: int = 0
    duplicated: int = 0
    orphans: int = 0
    jobs: list[SweepJob] = field(default_factory=list)


class Bench:
    """Submits the chaos sweep to the cluster, injects faults, measures what they cost."""

    def __init__(self, cluster: NetnsCluster, logs: Path, source: Path) -> None:
        self.cluster, self.logs, self.source, self.count = cluster, logs, source, 0

    def submit(self, name: str, output_dir: str = "") -> SweepJob:
        """Submit the sweep `name` (results to `output_dir`, else the head's home)."""
        self.count += 1
        log = self.logs / f"{self.count:03d}-{name}.log"
        overrides = [*SWEEP, f"sweep.name={name}"]
        return SweepJob(self.cluster, overrides, log, output_dir, source=self.source)

    def results(self, name: str, output_dir: str) -> Path:
        """Where the sweep `name` writes its results, seen from this machine."""
        base = Path(output_dir.removeprefix("file://")) if output_dir else None
        return (base or self.cluster.results_home / "llm-sweep-results") / name

    def run(self, kind: str | None, delay_s: float, index: int) -> Run:
        """One sweep from scratch; `kind` None runs it undisturbed."""
        name = f"chaos{index:03d}"
        output_dir = f"file://{SMALL_FS}/results" if kind == "disk_full" else ""
        run = Run(kind or "none", delay_s)
        started = time.monotonic()
        job = self.submit(name, output_dir)
        run.jobs.append(job)
        if kind is not None:
            self.wait_for_a_trial(job)
            time.sleep(delay_s)
            self.inject(kind, run, name, output_dir)
        self.finish(run.jobs[-1])
        run.wall_s = time.monotonic() - started
        run.orphans = self.orphans()
        self.measure(run, self.results(name, output_dir))
        shutil.rmtree(self.results(name, output_dir), ignore_errors=True)
        self.restore()
        return run

    def wait_for_a_trial(self, job: SweepJob, timeout_s: float = 300) -> None:
        """Until a sim server runs on a worker host (a trial is under way)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and job.proc.poll() is None:
            if any(self.cluster.find(h, "backends.sim_server") for h in self.cluster.workers):
                return
            time.sleep(0.2)

    def busy(self):
        """The worker host running a trial now, else a random one."""
        hosts = [h for h in self.cluster.workers if self.cluster.find(h, "backends.sim_server")]
        return hosts[0] if hosts else random.choice(self.cluster.workers)

    def inject(self, kind: str, run: Run, name: str, output_dir: str) -> None:
        """Inject the fault `kind` into the run's latest job (and resubmit where it needs)."""
        job = run.jobs[-1]
        if kind == "raylet":
            signal_pid(self.cluster.raylet(self.busy()), signal.SIGKILL)
        elif kind in ("cut_long", "cut_short"):
            host = self.busy()
            self.cluster.cut(host)
            time.sleep(CUT_LONG_S if kind == "cut_long" else CUT_SHORT_S)
            self.cluster.heal(host)
        elif kind == "driver_stop":
            job.stop()
            self.resubmit(run, name, output_dir)
        elif kind == "driver_kill":
            pid = job.driver_pid()
            if pid is not None:
                signal_pid(pid, signal.SIGKILL)
            self.resubmit(run, name, output_dir)
        elif kind == "disk_full":
            filler = fill(SMALL_FS)
            self.finish(job)
            filler.unlink()
            run.jobs.append(self.submit(name, output_dir))

    def resubmit(self, run: Run, name: str, output_dir: str) -> None:
        """Wait for the run's latest job to end, then submit the same sweep again."""
        self.finish(run.jobs[-1])
        run.jobs.append(self.submit(name, output_dir))

    def finish(self, job: SweepJob) -> None:
        """Wait for `job` to end; a job that hangs is reported and measured, not fatal."""
        try:
            job.wait(600)
        except Exception as exc:  # noqa: BLE001 - a job that hangs is measured, not fatal
            print(f"  {exc}".splitlines()[0], file=sys.stderr)

    def orphans(self, settle_s: float = 20) -> int:
        """The sweep's processes still running on any host after up to `settle_s`."""
        deadline = time.monotonic() + settle_s
        while True:
            found = [
                pid
                for host in self.cluster.hosts
                for text in ("backends.sim_server", "ray::_deployment_task")
                for pid in self.cluster.find(host, text)
            ]
            if not found or time.monotonic() > deadline:
                return len(found)
            time.sleep(0.5)

    def measure(self, run: Run, root: Path) -> None:
        """Trials lost and trials recorded more than once, from the results and job logs."""
        import pyarrow.parquet as pq

        rows = [pq.read_table(p).to_pylist()[0] for p in root.glob("*/*/summary.parquet")]
        ok = {r["trial_id"] for r in rows if r["trial_status"] == "ok"}
        run.lost = TRIALS - len(ok)
        shown: dict[str, int] = {}
        for job in run.jobs:
            own = job.text().split("Status message:")[0]  # Ray repeats a failed job's log
            for label in PROGRESS.findall(own):
                shown[label] = shown.get(label, 0) + 1
        run.duplicated = sum(n - 1 for n in shown.values() if n > 1)

    def restore(self) -> None:
        """Every worker host up again (one a fault killed is restarted)."""
        alive = self.cluster.alive()
        for host in self.cluster.workers:
            self.cluster.heal(host)
            if host.ip not in alive:
                self.cluster.start(host)
        self.cluster.wait_for_nodes(len(self.cluster.hosts))


def signal_pid(pid: int, sig: int) -> None:
    """Send `sig` to `pid`, if it still runs."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def table(runs: list[Run], baseline_s: float) -> str:
    """Per fault kind: trials lost, duplicated, orphans and extra wall time, as Markdown."""
    lines = [
        "| fault | runs | trials lost | trials duplicated | orphans left | extra wall time "
        "(mean / max) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        mine = [r for r in runs if r.kind == kind]
        if not mine:
            continue
        extra = [r.wall_s - baseline_s for r in mine]
        lines.append(
            f"| {kind} | {len(mine)} | {sum(r.lost for r in mine)} | "
            f"{sum(r.duplicated for r in mine)} | {sum(r.orphans for r in mine)} | "
            f"{statistics.mean(extra):+.0f} s / {max(extra):+.0f} s |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.chaos`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--baseline-runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, default=10.0, help="fault delay bound, s")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--logs", type=Path, default=None, help="keep the job logs here")
    parser.add_argument("--source", type=Path, default=REPO, help="the checkout to submit")
    return parser


def run(args: argparse.Namespace) -> int:
    """Baseline runs, then one fault per run; the table; 1 if any trial or process was lost."""
    kinds = args.kinds.split(",")
    rng = random.Random(args.seed)
    # Each kind as often as the others, in random order; each at a random moment.
    plan = [kinds[i % len(kinds)] for i in range(args.runs)]
    rng.shuffle(plan)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with NetnsCluster(workers=2, gpus=2, cpus=2) as cluster:
        bench = Bench(cluster, logs, args.source)
        walls = []
        for i in range(args.baseline_runs):
            base = bench.run(None, 0.0, i)
            walls.append(base.wall_s)
            print(f"undisturbed: {base.wall_s:.0f} s, lost {base.lost}, duplicated "
                  f"{base.duplicated}, orphans {base.orphans}", flush=True)  # fmt: skip
        baseline_s = statistics.median(walls)
        for i, kind in enumerate(plan, start=args.baseline_runs):
            run = bench.run(kind, rng.uniform(0, args.window), i)
            runs.append(run)
            print(f"run {i - args.baseline_runs + 1}/{len(plan)} {kind} after "
                  f"{run.delay_s:.1f} s: {run.wall_s:.0f} s, lost {run.lost}, duplicated "
                  f"{run.duplicated}, orphans {run.orphans}", flush=True)  # fmt: skip
    left = leftovers()
    print(f"\nundisturbed run: {baseline_s:.0f} s (median of {len(walls)}, {min(walls):.0f} to "
          f"{max(walls):.0f} s); logs in {logs}")  # fmt: skip
    print(table(runs, baseline_s))
    print(f"left on the machine after teardown: {left or 'nothing'}")
    bad = any(r.lost or r.duplicated or r.orphans for r in runs) or left
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(run(parser().parse_args()))
