"""The load generator sharded across processes, for loads one event loop cannot offer.

With `workload.client_processes` = N > 1, `run_sharded` starts N children (`python -m
sweep.loadgen.shard_process`). Each gets the whole request list and its `Share`: every N-th request
(so an open-loop shard sends every N-th arrival of the one seeded schedule) and 1/N of the
concurrency. Each warms up its own connections, says it is ready, and all begin at one start time
the parent picks on the monotonic clock, which every process of the machine shares; so their stamps
need no translation and the merged trackers read as one generator's. Plain subprocesses with
pickles over stdin and stdout rather than multiprocessing: a child must not re-import the Ray
worker's `__main__`, and one that outlives its parent exits on its own.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sweep.loadgen.clock import now_s
from sweep.loadgen.recorder import Trackers
from sweep.loadgen.saturation import merge

READY = b"R"
# Between the last shard saying it is ready and the first send: time to hand out the start.
START_DELAY_S = 0.05
PARENT_CHECK_S = 1.0
REPO_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Share:
    """The part of a trial's load one process offers: shard `index` of `count`."""

    index: int = 0
    count: int = 1

    def take(self, values: Sequence) -> list:
        """Every `count`-th value, from the `index`-th."""
        return list(values[self.index :: self.count])

    def streams(self, total: int | None) -> int | None:
        """This shard's part of a concurrency (None: no limit); the first ones take the rest."""
        if total is None:
            return None
        return total // self.count + (1 if self.index < total % self.count else 0)


WHOLE = Share()


def run_sharded(
    endpoint: object, requests: Sequence, warmup: Sequence, workload: object
) -> Trackers:
    """Offer the load from `workload.client_processes` processes; merge what they measured."""
    count = workload.client_processes
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
    }
    procs: list[subprocess.Popen] = []
    try:
        for index in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "sweep.loadgen.shard_process"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            )  # fmt: skip
            procs.append(proc)
            pickle.dump(
                (endpoint, list(requests), list(warmup), workload, Share(index, count)), proc.stdin
            )
            proc.stdin.flush()
        for index, proc in enumerate(procs):
            if proc.stdout.read(1) != READY:
                raise RuntimeError(f"load generator shard {index} exited before it was ready")
        start = repr(now_s() + START_DELAY_S).encode() + b"\n"
        for proc in procs:
            proc.stdin.write(start)
            proc.stdin.close()
        results = [_result(index, proc) for index, proc in enumerate(procs)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    trackers = sorted((t for shard, _ in results for t in shard), key=lambda t: t.idx)
    return Trackers(trackers, merge([usage for _, usage in results]))


def _result(index: int, proc: subprocess.Popen) -> tuple[list, object]:
    try:
        return pickle.load(proc.stdout)
    except EOFError:
        raise RuntimeError(f"load generator shard {index} exited with code {proc.wait()}") from None
