"""What one streamed request costs each HTTP client, side by side in one run.

    .venv/bin/python scripts/bench_http_clients.py [--requests 400] [--concurrency 32] [--repeats 5]

The benchmark itself, and what it prints: `sweep.tools.http_clients`.
"""

from sweep.tools import http_clients

if __name__ == "__main__":
    http_clients.run(http_clients.parser().parse_args())
