"""A new matplotlib Figure on the Agg canvas, the one shape every plot of the report starts from.

matplotlib is imported when the first figure is made, not when a plotting module is: a sweep
that writes no report (`sweep.report=false`), a dry run or a config error never pays its import
(about 1 CPU-s, which every `python -m sweep` paid before it could print its first line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def new_figure(width: float, height: float) -> Figure:
    """A `width` x `height` inch figure at `DPI`, laid out by matplotlib's constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plain_log_ticks(axis: object) -> None:
    """Label a log axis's major ticks as plain numbers (`8`, `16`, not `10^1`)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # type: ignore[attr-defined]
