"""Makespan of a sweep on a simulated multi-node cluster against the ideal.

    .venv/bin/python scripts/bench_sweep.py [--nodes 3] [--gpus 2] [--remove-at S] [--timeline]

The benchmark itself, and what it prints: `sweep.bench.makespan`.
"""

import os

# Ray reads this as it is imported: the drivers of a local multi-node cluster stay on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from sweep.bench import makespan  # noqa: E402

if __name__ == "__main__":
    makespan.run(makespan.parser().parse_args())
