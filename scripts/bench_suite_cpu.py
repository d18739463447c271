"""Where the test suite's CPU goes: each test unit run alone, its processes' CPU by kind.

    .venv/bin/python scripts/bench_suite_cpu.py tests/e2e/test_cluster.py tests/multihost [--top 6]
    .venv/bin/python scripts/bench_suite_cpu.py --whole   # the README's test command, by kind

The benchmark itself, and what it prints: `sweep.bench.suite_cpu`.
"""

from sweep.bench import suite_cpu

if __name__ == "__main__":
    suite_cpu.run(suite_cpu.parser().parse_args())
