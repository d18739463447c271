"""Tuning (`search=tune`): an Optuna study asks for configurations, the driver runs them.

`space` turns `search.tune.space` into Optuna's suggestions, `study` keeps the study in the
results folder (a journal file), `loop` is the tuner the driver asks for deployments while it
runs, `outcome` reads a configuration's result from the folder and `table` writes `tune.parquet`.
"""
