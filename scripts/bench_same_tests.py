"""The ids of a reference checkout's tests that this one still has, for `scripts/test.sh @FILE`.

    .venv/bin/python scripts/bench_same_tests.py REFERENCE_CHECKOUT > /tmp/same.txt

What it matches, and what it prints: `sweep.bench.same_tests`.
"""

import sys

from sweep.bench import same_tests

if __name__ == "__main__":
    sys.exit(same_tests.main())
