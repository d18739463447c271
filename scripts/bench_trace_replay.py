"""How faithfully a trace replay keeps the trace's own times.

    .venv/bin/python scripts/bench_trace_replay.py [--trace bursty] [--speedup 4] [--runs 3]

The benchmark itself, and what it prints: `sweep.tools.trace_replay`.
"""

from sweep.tools import trace_replay

if __name__ == "__main__":
    trace_replay.run(trace_replay.parser().parse_args())
