"""Chaos benchmark: a submitted sweep on the namespace cluster, one fault per run.

    sudo .venv/bin/python scripts/bench_chaos.py [--runs 24] [--seed 0] [--kinds raylet,...]

The benchmark itself, and what it prints: `sweep.tools.chaos`.
"""

from sweep.tools import chaos

if __name__ == "__main__":
    raise SystemExit(chaos.run(chaos.parser().parse_args()))
