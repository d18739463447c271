"""Time to first token by turn, for multi-turn trials: a table and a plot for the report.

A conversation's turn k sends its whole history, so its prefill grows with k (less where the
server's prefix cache holds the earlier turns). From the request records (`records.SESSION`,
`records.TURN`; null in other trials) of the completed requests inside the steady-state window,
one row per trial and turn: requests, mean input tokens, TTFT median and p90 (computed as the
summary computes its statistics), and where the server reports them the share of the input its
prefix cache held (`records.CACHED_INPUT_TOKENS`). Trials without sessions add nothing, and then
neither the section nor the plot appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.figures.canvas import new_figure
from analysis.report.sections import Image, Section, formatted
from sweep.core import records as rec
from sweep.core.summary import statistic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TURNS_FILE = "ttft_by_turn.png"
TRIAL, TURN, REQUESTS, INPUT_MEAN = "trial", "turn", "requests", "input_tokens_mean"
TTFT_MEDIAN, TTFT_P90 = "ttft_ms_median", "ttft_ms_p90"
CACHED = "cached_input_percent"


def turn_table(requests: pd.DataFrame | None, trials: pd.DataFrame) -> pd.DataFrame:
    """Per trial (its label) and turn: requests, mean input tokens, TTFT median and p90 (ms)."""
    columns = [TRIAL, TURN, REQUESTS, INPUT_MEAN, TTFT_MEDIAN, TTFT_P90, CACHED]
    if requests is None or rec.TURN not in requests or requests[rec.TURN].isna().all():
        return pd.DataFrame(columns=columns)
    ok = requests[(requests[rec.STATUS] == rec.STATUS_OK) & requests[rec.TURN].notna()]
    ok = ok[ok[rec.IN_WINDOW].fillna(True).astype(bool)]
    labels = dict(
        zip(trials[rec.TRIAL_ID], trials.get(rec.LABEL, trials[rec.TRIAL_ID]), strict=True)
    )
    rows = []
    for (trial_id, turn), group in ok.groupby([rec.TRIAL_ID, rec.TURN], sort=True):
        ttft_ms = pd.to_numeric(group[rec.TTFT_S], errors="coerce").to_numpy(dtype=float) * 1e3
        rows.append(
            {
                TRIAL: labels.get(trial_id, trial_id),
                TURN: int(turn),
                REQUESTS: len(group),
                INPUT_MEAN: pd.to_numeric(group[rec.INPUT_TOKENS], errors="coerce").mean(),
                TTFT_MEDIAN: statistic(ttft_ms, "median"),
                TTFT_P90: statistic(ttft_ms, "p90"),
                CACHED: _cached_percent(group),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _cached_percent(group: pd.DataFrame) -> float | None:
    """The share of the turn's input the server's prefix cache held; None where not reported."""
    if rec.CACHED_INPUT_TOKENS not in group:
        return None
    known = group[group[rec.CACHED_INPUT_TOKENS].notna()]
    inputs = pd.to_numeric(known[rec.SERVER_INPUT_TOKENS], errors="coerce").sum()
    if known.empty or not inputs > 0:
        return None
    return 100.0 * float(pd.to_numeric(known[rec.CACHED_INPUT_TOKENS]).sum()) / float(inputs)


def turn_figure(table: pd.DataFrame, sweep: str | None = None) -> Figure:
    """TTFT against turn, one colour per trial: the median solid, the p90 dashed."""
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    for index, (trial, rows) in enumerate(table.groupby(TRIAL, sort=True)):
        colour = f"C{index % 10}"
        ax.plot(rows[TURN], rows[TTFT_MEDIAN], marker="o", color=colour, label=f"{trial} p50")
        ax.plot(rows[TURN], rows[TTFT_P90], ls="--", marker=".", color=colour, label=f"{trial} p90")
    ax.set_xlabel("turn of the session")
    ax.set_ylabel("TTFT (ms)")
    ax.set_xticks(sorted(table[TURN].unique()))
    ax.set_title("Time to first token by turn" + (f" — {sweep}" if sweep else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def write_turn_plot(
    table: pd.DataFrame, out_dir: str | Path, sweep: str | None = None
) -> list[Path]:
    """Save the TTFT-by-turn plot as PNG when some trial ran sessions; the paths written."""
    if table.empty:
        return []
    path = Path(out_dir) / TURNS_FILE
    turn_figure(table, sweep).savefig(path)
    return [path]


def turn_sections(table: pd.DataFrame, images: list[Path]) -> list[Section]:
    """The "TTFT by turn" section, when some trial ran multi-turn sessions."""
    if table.empty:
        return []
    shown = pd.DataFrame(
        {
            "Trial": table[TRIAL],
            "Turn": table[TURN].astype(str),
            "Requests ok": table[REQUESTS].astype(str),
            "Input tok (mean)": formatted(table[INPUT_MEAN], ",.0f"),
            "TTFT p50 (ms)": formatted(table[TTFT_MEDIAN], ",.1f"),
            "TTFT p90 (ms)": formatted(table[TTFT_P90], ",.1f"),
        }
    )
    if table[CACHED].notna().any():  # the server said what its prefix cache held
        shown["Cached input (%)"] = formatted(table[CACHED], ".1f")
    text = (
        "Each turn sends its session's whole history, so its input grows turn by turn; TTFT "
        "per turn over the completed requests (p50 is the median)."
    )
    figures = tuple(Image("TTFT by turn", path) for path in images)
    return [Section("TTFT by turn", text, table=shown, images=figures)]
