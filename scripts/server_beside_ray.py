"""Does an idle Ray (or a CPU burner) on the client's core slow a vLLM server.

    .venv/bin/python scripts/server_beside_ray.py [--rounds 10] [--burn 0.2 [--burn-mb 64]]

The benchmark itself, and what it prints: `sweep.tools.neighbours`.
"""

from sweep.tools import neighbours

if __name__ == "__main__":
    neighbours.run(neighbours.parser().parse_args())
