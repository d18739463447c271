"""What attributing tokens to streamed chunks costs the client.

    .venv/bin/python scripts/bench_token_attribution.py [--tokens 100000]

The benchmark itself, and what it prints: `sweep.tools.token_attribution`.
"""

from sweep.tools import token_attribution

if __name__ == "__main__":
    token_attribution.run(token_attribution.parser().parse_args())
