"""One load-generator shard, run as `python -m sweep.loadgen.shard_process` by `run_sharded`.

It reads its job (endpoint, requests, workload, its `Share`) as a pickle on stdin, warms up,
says it is ready, waits for the start time the parent writes, offers its share of the load and
writes its trackers back as a pickle on stdout. It exits on its own if the parent goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys

from sweep.loadgen.http import run_share
from sweep.loadgen.recorder import Trackers
from sweep.loadgen.shards import PARENT_CHECK_S, READY


def main() -> None:
    """A shard: read its job, warm up, wait for the start, offer its share, write the trackers."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries the protocol only
    endpoint, requests, warmup, workload, share = pickle.load(sys.stdin.buffer)

    async def start() -> float:
        out.write(READY)
        out.flush()
        line = sys.stdin.buffer.readline()  # blocks briefly: every shard is warm and idle now
        if not line:
            raise SystemExit("the parent went away before the start")
        return float(line)

    async def run() -> Trackers:
        watchdog = asyncio.create_task(_exit_with_parent(os.getppid()))
        try:
            return await run_share(endpoint, requests, warmup, workload, share, start)
        finally:
            watchdog.cancel()

    trackers = asyncio.run(run())
    pickle.dump((list(trackers), trackers.client), out)
    out.flush()


async def _exit_with_parent(parent: int) -> None:
    """Stop offering load once the parent (the trial) is gone: nobody would read the results."""
    while True:
        await asyncio.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
