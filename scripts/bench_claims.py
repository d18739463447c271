"""Whether the quickstart's findings state the same claims on a quiet machine and a busy one.

    .venv/bin/python scripts/bench_claims.py [--quiet-runs 3] [--busy-runs 1] [OVERRIDES ...]

The benchmark itself, and what it prints: `sweep.tools.claims`.
"""

import sys

from sweep.tools import claims

if __name__ == "__main__":
    sys.exit(claims.run(claims.parser().parse_args()))
