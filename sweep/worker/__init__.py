"""What a Ray worker runs for one deployment: start the backend, run its trials, hand back tables.

`trial` (`run_deployment`, `run_trial`), `search_run` and `search` (a search's probes and its
next load), `quality_run` (the quality set's scores), `isolation` (the load generator's own
cores), `environment` (what a result was measured on) and `cuda_driver` (whether the node's
NVIDIA driver runs torch's CUDA).
"""
