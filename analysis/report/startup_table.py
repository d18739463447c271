"""The start-up table: how long each deployment's server took from launch to its first answer.

Reads the start-up columns every trial of a deployment carries (`records.SERVER_START_S`, its
phases `START_PHASES` and what the server reported, `backends.process.startup`) and shows one
line per deployment, fastest first: does this configuration come up from zero fast enough to
scale on demand, and where does its start go (process and imports, loading the model, the
engine's set-up, the API server)? `vllm bench startup` answers the same question for vLLM alone.
"""

from __future__ import annotations

import pandas as pd

from analysis.report.sections import MISSING, Section, formatted
from analysis.stats.startup import DEPLOYMENT, deployment_startups
from sweep.core import records as rec

PHASE_NAMES = {
    rec.START_PROCESS_S: "Process (s)",
    rec.START_LOAD_S: "Model load (s)",
    rec.START_ENGINE_S: "Engine set-up (s)",
    rec.START_API_S: "API up (s)",
    rec.START_COMPILE_S: "of which compile (s)",
    rec.START_GRAPHS_S: "of which graphs (s)",
}


def startup_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row of display strings per deployment that started, fastest first."""
    rows = deployment_startups(trials)
    if rows.empty:
        return rows

    def col(name: str) -> pd.Series:
        return formatted(pd.to_numeric(rows[name], errors="coerce"), ",.1f")

    table = pd.DataFrame({"Deployment": rows[DEPLOYMENT], "Start-up (s)": col(rec.SERVER_START_S)})
    for column, name in PHASE_NAMES.items():
        if column in rows and rows[column].notna().any():
            table[name] = col(column)
    if rec.START_CACHE in rows and rows[rec.START_CACHE].notna().any():
        table["Compile cache"] = rows[rec.START_CACHE].fillna(MISSING).astype(str)
    return table


def startup_sections(trials: pd.DataFrame) -> list[Section]:
    """The start-up table; nothing when no trial recorded its deployment's start."""
    table = startup_table(trials)
    if table.empty:
        return []
    text = (
        "From launching each deployment's server to its first healthy answer (an in-process "
        "engine: loading its model), fastest first. The phases are consecutive on that clock, "
        "split at the lines the server's log printed as it started (`backends.process.startup`): "
        "process start and imports, loading the model, the engine's set-up (profiling, KV cache, "
        "compilation, warm-up), the API server; a phase the log did not mark is merged into the "
        "next. Compile and graph times are as the server reported them, within the engine's "
        "set-up. A cold compile cache is a new node's first start; warm, a restart on a node "
        "that kept it."
    )
    return [Section("Server start-up", text, table=table)]
