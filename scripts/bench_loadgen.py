"""How much load the load generator offers faithfully, against the sim's truth.

    .venv/bin/python scripts/bench_loadgen.py [--rates 1000,2500,5000] [--processes 2] [--no-vllm]
        [--ours ours,ours-aiohttp]

The benchmark itself, and what it prints: `sweep.tools.loadgen_accuracy`.
"""

from sweep.tools import loadgen_accuracy

if __name__ == "__main__":
    loadgen_accuracy.run(loadgen_accuracy.parser().parse_args())
