"""`tune.parquet`: one row per configuration the tuner asked for, for the report and W&B.

Columns: the Optuna trial `number`, its `state` (complete, pruned, failed, duplicate), the
objective's `value`, the capacity and its interval (`low`, the highest load that met the SLO;
`high`, the lowest that failed above it), the probes run, `deployment_s` (its probes' wall
times and its server's start-up, `start_s`) and `saved_s` (for a pruned configuration: the
probes a complete search took on average here, less those it ran, at its own time per probe),
the ids, the
parameters (as JSON and one `param.<field>` column each), their distributions (Optuna's JSON,
so analysis rebuilds the study without the config), the bound it was pruned against, and the
objective and its direction. Written whole after each configuration ends (a few rows).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from optuna.distributions import distribution_to_json

from sweep.core.records import TUNE_TABLE
from sweep.core.results import ResultStore
from sweep.tune.outcome import COMPLETE, PRUNED, Outcome

DUPLICATE = "duplicate"
PARAM_PREFIX = "param."


class TuneTable:
    """The rows so far (those of an earlier run of the sweep read back first)."""

    def __init__(self, store: ResultStore, objective: str, direction: str) -> None:
        self.store, self.objective, self.direction = store, objective, direction
        self.rows: dict[int, dict[str, Any]] = {}
        path = f"{store.root}/{TUNE_TABLE}"
        if store.fs.get_file_info(path).type.name == "File":
            for row in pq.read_table(path, filesystem=store.fs).to_pylist():
                self.rows[int(row["number"])] = row

    def add(
        self,
        number: int,
        params: dict[str, Any],
        distributions: dict[str, Any],
        outcome: Outcome,
        ids: dict[str, Any],
        state: str | None = None,
    ) -> None:
        """Keep one configuration's row and write the table."""
        self.rows[number] = {
            "number": number,
            "state": state or outcome.state,
            "value": outcome.value,
            "capacity": outcome.capacity,
            "low": outcome.low,
            "high": outcome.high,
            "probes": outcome.probes,
            "deployment_s": outcome.deployment_s,
            "start_s": outcome.start_s,
            "saved_s": 0.0,
            "reason": outcome.reason,
            "seed_id": ids.get("seed_id"),
            "deployment_id": ids.get("deployment_id"),
            "label": ids.get("label"),
            "stop_below": ids.get("stop_below"),
            "duplicate_of": ids.get("duplicate_of"),
            "params": json.dumps(params, sort_keys=True),
            "distributions": json.dumps(
                {k: distribution_to_json(d) for k, d in distributions.items()}, sort_keys=True
            ),
            "objective": self.objective,
            "direction": self.direction,
        }
        self.write()

    def write(self) -> None:
        """Write every row, the pruned ones' saved time estimated from the complete ones."""
        rows = [dict(self.rows[n]) for n in sorted(self.rows)]
        done = [r for r in rows if r["state"] == COMPLETE and r["probes"]]
        mean_probes = sum(r["probes"] for r in done) / len(done) if done else 0.0
        for row in rows:
            if row["state"] == PRUNED and row["probes"]:
                per_probe = (row["deployment_s"] - (row.get("start_s") or 0.0)) / row["probes"]
                row["saved_s"] = max(0.0, mean_probes - row["probes"]) * per_probe
        names = sorted({k for r in rows for k in json.loads(r["params"])})
        for row in rows:
            params = json.loads(row["params"])
            row.update({f"{PARAM_PREFIX}{k}": _cell(params.get(k)) for k in names})
        self.store.write_table(TUNE_TABLE, pa.Table.from_pylist(rows))

    def finished(self) -> int:
        """Configurations ended, duplicates of earlier ones not counted."""
        return sum(r["state"] != DUPLICATE for r in self.rows.values())


def _cell(value: Any) -> Any:
    """A parameter as one column's cell: categorical values of mixed types become text."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else (
        None if value is None else str(value))  # fmt: skip
