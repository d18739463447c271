"""Analysis of sweep results, in folders from the bottom up (docs/architecture.md, Layers).

`read` reads a results folder into pandas; `stats` compares configurations with their
uncertainty (noise, Pareto front, capacity, roofline, sweep against sweep); `figures` draws;
`report` writes `summary.csv`, `report.md` and `report.html`; `tracking` logs to W&B.
`python -m analysis RESULTS_DIR` runs the whole chain.
"""
