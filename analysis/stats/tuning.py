"""A tuning study read back from `tune.parquet`: the best configuration, its rivals, importances.

The tuner (`search=tune`) writes one row per configuration it asked for. Here:
- the best: the complete configuration with the best objective, with its interval (for the
  capacity, its search's bracket: the highest load that met the SLO and the lowest that failed);
- the runners-up within noise: complete configurations whose interval reaches the best's (their
  failing load is above the best's passing one, or none failed), so the probes cannot rank them;
- the best so far against deployment-hours, in the order the configurations ended;
- each argument's importance: Optuna's PED-ANOVA evaluator on a study rebuilt in memory from
  the rows (`optuna.trial.create_trial`), so nothing but the folder is read. A pruned
  configuration enters with the middle of its interval (its capacity is below its failing load);
  a conditional argument (one with `when`) is judged where it applied, as PED-ANOVA does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.core.records import TUNE_TABLE

COMPLETE, PRUNED = "complete", "pruned"
TOP_QUANTILE = 0.25  # importance: what it takes to reach the best quarter of configurations
MIN_FOR_IMPORTANCE = 4


@dataclass(frozen=True)
class Importance:
    """One argument's importance and the configurations it was judged on."""

    param: str
    importance: float
    judged_on: int
    conditional: bool


@dataclass(frozen=True)
class Tuning:
    """What a tuning study found."""

    rows: pd.DataFrame  # tune.parquet, ordered by trial number
    objective: str
    direction: str
    best: pd.Series | None
    runners_up: pd.DataFrame
    progress: pd.DataFrame  # deployment_hours, best_so_far: one row per configuration ended
    importances: list[Importance] = field(default_factory=list)
    importance_note: str = ""

    @property
    def deployment_hours(self) -> float:
        """Deployment-hours the study spent."""
        return float(self.rows["deployment_s"].fillna(0).sum()) / 3600

    @property
    def saved_hours(self) -> float:
        """Deployment-hours pruning saved (estimated: `sweep.tune.table`)."""
        return float(self.rows["saved_s"].fillna(0).sum()) / 3600


def load_tuning(results_dir: str | Path) -> Tuning | None:
    """The study of a results folder; None when the sweep did not tune."""
    path = Path(results_dir) / TUNE_TABLE
    if not path.is_file():
        return None
    rows = pd.read_parquet(path).sort_values("number").reset_index(drop=True)
    if rows.empty:
        return None
    objective, direction = str(rows["objective"].iloc[0]), str(rows["direction"].iloc[0])
    complete = rows[rows["state"] == COMPLETE]
    best = None
    if len(complete):
        order = complete["value"].astype(float)
        best = complete.loc[order.idxmax() if direction == "maximize" else order.idxmin()]
    runners = _runners_up(complete, best, objective)
    importances, note = _importances(rows, direction)
    return Tuning(rows, objective, direction, best, runners, _progress(rows, direction),
                  importances, note)  # fmt: skip


def params_of(row: pd.Series) -> dict[str, Any]:
    """A row's parameters, dotted field -> value."""
    return dict(json.loads(row["params"]))


def describe(params: dict[str, Any]) -> str:
    """`max_num_seqs=12, chunked_prefill=True`: fields by their last name."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


def _runners_up(complete: pd.DataFrame, best: pd.Series | None, objective: str) -> pd.DataFrame:
    if best is None or objective != "capacity" or best["low"] is None or pd.isna(best["low"]):
        return complete.iloc[0:0]
    others = complete[complete["number"] != best["number"]]
    reaches = others["high"].isna() | (others["high"].astype(float) > float(best["low"]))
    return others[reaches].sort_values("value", ascending=False)


def _progress(rows: pd.DataFrame, direction: str) -> pd.DataFrame:
    ended = rows[rows["state"] != "duplicate"]
    hours = ended["deployment_s"].fillna(0).cumsum() / 3600
    values = ended["value"].where(ended["state"] == COMPLETE).astype(float)
    best = values.cummax() if direction == "maximize" else values.cummin()
    return pd.DataFrame({"number": ended["number"], "deployment_hours": hours,
                         "best_so_far": best}).reset_index(drop=True)  # fmt: skip


def _importances(rows: pd.DataFrame, direction: str) -> tuple[list[Importance], str]:
    """Optuna's importance of each argument (PED-ANOVA), from the rows alone."""
    scored = []
    for _, row in rows.iterrows():
        value = _score(row)
        if value is not None and math.isfinite(value):
            scored.append((params_of(row), json.loads(row["distributions"]), value))
    names = sorted({k for params, _, _ in scored for k in params})
    if len(scored) < MIN_FOR_IMPORTANCE or not names:
        return [], "too few configurations ended to judge the arguments' importance"
    weights = _evaluate(scored, direction)
    counts = {n: sum(n in params for params, _, _ in scored) for n in names}
    found = [Importance(n, w, counts[n], counts[n] < len(scored)) for n, w in weights.items()]
    return sorted(found, key=lambda i: -i.importance), ""


def _score(row: pd.Series) -> float | None:
    """The value a configuration enters the importance study with (None: left out)."""
    if row["state"] == COMPLETE and row["value"] is not None and not pd.isna(row["value"]):
        return float(row["value"])
    if row["state"] == PRUNED and row["high"] is not None and not pd.isna(row["high"]):
        low = 0.0 if row["low"] is None or pd.isna(row["low"]) else float(row["low"])
        return (low + float(row["high"])) / 2
    return None


def _evaluate(scored: list[tuple[dict, dict, float]], direction: str) -> dict[str, float]:
    """Importances over the configurations `scored`, normalised to sum 1.

    PED-ANOVA: how much each argument matters for reaching the best quarter of the
    configurations (Optuna's evaluator that handles conditional arguments, and needs no
    scikit-learn, which fANOVA would).
    """
    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params=values,
                distributions={k: json_to_distribution(v) for k, v in dists.items()},
                value=value,
            )
            for values, dists, value in scored
        ]
    )
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
