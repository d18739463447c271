"""How late this machine wakes a waiting load generator.

    .venv/bin/python scripts/bench_wakeups.py [--rounds 4] [--waits 1000]

The benchmark itself, and what it prints: `sweep.tools.wakeups`.
"""

from sweep.tools import wakeups

if __name__ == "__main__":
    wakeups.run(wakeups.parser().parse_args())
