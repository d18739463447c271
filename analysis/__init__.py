"""Analysis of sweep results: metrics, loading, comparison, plots, reports and W&B tracking.

`metrics` is pure and is also what the sweep worker calls to summarize each trial; `load` reads a
results folder into pandas; `compare`, `roofline` and `sweep_diff` compare engines, load points
and sweeps; `plots` and `timeline_plots` draw figures; `report` writes `summary.csv`,
`report.md` and (through `html`) `report.html`; `tracking` is the one module that imports wandb.
`python -m analysis RESULTS_DIR` runs the whole chain.
"""
