"""Comparisons of configurations, each with its uncertainty.

`intervals`, `noise`, `noise_check` (A/A), `compare` (decomposition and Pareto front),
`sweep_diff`, `roofline` and `capacity`.
"""
