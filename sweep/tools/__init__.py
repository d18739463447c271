"""Benchmark and parity tools: the code behind `scripts/bench_*.py` and the parity scripts.

Each module holds one benchmark (`loadgen_accuracy`, `parity`, `capacity_search`, `trace_replay`,
`makespan`, `start_costs`, `plan_scale`, `chaos`, `wakeups`, `token_attribution`, `neighbours`) or
what several share (`parity_report`, `process_watch`, `server_counters`, `netns_cluster`,
`start_probe`). A benchmark module offers `parser()` and `run(args)`; the script in `scripts/`
parses its arguments and calls them (`start_costs` and `plan_scale` are options of
`scripts/bench_sweep.py`). This package sits at the top of the layers: it may import the rest of
`sweep`, `backends` and `analysis`, and nothing imports it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: children run from it, as a user would
