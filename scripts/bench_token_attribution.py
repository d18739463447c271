"""What attributing tokens to streamed chunks costs the client.

    .venv/bin/python scripts/bench_token_attribution.py [--tokens 100000]

The benchmark itself, and what it prints: `sweep.bench.token_attribution`.
"""

from sweep.bench import token_attribution

if __name__ == "__main__":
    token_attribution.run(token_attribution.parser().parse_args())
