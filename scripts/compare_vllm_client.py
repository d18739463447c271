"""Parity check: our load generator against vLLM's own benchmark client.

    .venv/bin/python scripts/compare_vllm_client.py [--server sim] [--rounds 3] [--same-arrivals]

The benchmark itself, and what it prints: `sweep.tools.parity`.
"""

from sweep.tools import parity

if __name__ == "__main__":
    parity.run(parity.parser().parse_args())
