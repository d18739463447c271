"""Tools a user of the sweep runs on their own machine or cluster, beside `python -m sweep`.

- `gpu_smoke`: the first checks on a GPU node, as a pass / fail table (`scripts/gpu_smoke.sh`);
- `parity` (with `parity_clients`, `parity_report`, `parity_workload`, `server_counters`,
  `process_watch`): our load generator against vLLM's own client (`scripts/compare_vllm_client.py`);
- `loadgen_accuracy`: how much load the load generator offers faithfully on this machine
  (`scripts/bench_loadgen.py`);
- `netns_cluster` (with `netns_hosts`, `netns_jobs`): a multi-host Ray cluster of network
  namespaces on one machine, to rehearse a cluster sweep (`scripts/netns_cluster.py`).

The project's own benchmarks live outside the package, in `scripts/bench/`. This package sits at
the top of the layers: it may import the rest of `sweep`, `backends` and `analysis`, and nothing
imports it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: children run from it, as a user would
