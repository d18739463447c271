"""Figures, each drawn on the Agg canvas of `canvas`.

`plots`, `capacity_plots`, `timeline_plots` and `quality_front`.
"""
