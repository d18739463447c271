"""What the Python interpreter costs a sweep's processes: the same work on each, in turn.

    .venv/bin/python scripts/bench_interpreters.py [--runs 8] [PYTHON ...]

The benchmark itself, and what it prints: `sweep.bench.interpreters`.
"""

from sweep.bench import interpreters

if __name__ == "__main__":
    interpreters.run(interpreters.parser().parse_args())
