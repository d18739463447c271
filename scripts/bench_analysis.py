"""Time and peak memory of the analysis at 1,000 / 10,000 trials, and a re-run after 100 more.

    .venv/bin/python scripts/bench_analysis.py [--trials 1000 10000] [--keep DIR]

The benchmark itself, and what it prints: `sweep.tools.analysis_scale`.
"""

from sweep.tools import analysis_scale

if __name__ == "__main__":
    analysis_scale.run(analysis_scale.parser().parse_args())
