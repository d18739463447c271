"""Whether the capacity search finds what a dense grid of rates finds.

    .venv/bin/python scripts/bench_search.py [--quick] [--capacities 4,8] [--out DIR]

The benchmark itself, and what it prints: `sweep.tools.capacity_search`.
"""

from sweep.tools import capacity_search

if __name__ == "__main__":
    raise SystemExit(capacity_search.run(capacity_search.parser().parse_args()))
