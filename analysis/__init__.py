"""Analysis of sweep results: per-trial metrics, loading, plots and the Markdown report.

`metrics` is pure and is also what the sweep worker calls to summarize each trial; `load` reads a
results folder into pandas; `plots` and `report` turn the summary into figures, `summary.csv` and
`report.md`; `python -m analysis RESULTS_DIR` runs the whole chain.
"""
