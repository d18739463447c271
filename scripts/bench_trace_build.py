"""How fast a published trace's prompts are built, cold and cached.

    .venv/bin/python scripts/bench_trace_build.py [--trace mooncake_conversation] [--rows 1000]

The benchmark itself, and what it prints: `sweep.tools.trace_build`.
"""

from sweep.tools import trace_build

if __name__ == "__main__":
    trace_build.run(trace_build.parser().parse_args())
