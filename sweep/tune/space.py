"""The search space as Optuna suggestions: one call per field, conditional fields skipped.

Fields are suggested in the order the space lists them (define-by-run), so a field whose `when`
is not met is never suggested: Optuna then records no value for it, and the configuration keeps
the field's configured value. The distributions are also written beside each trial in
`tune.parquet` (Optuna's JSON), so analysis rebuilds the study without the config.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweep.core.tune_config import ParamSpec


def distribution(spec: ParamSpec) -> BaseDistribution:
    """Optuna's distribution of one field."""
    if spec.choices is not None:
        return CategoricalDistribution(list(spec.choices))
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        step = int(spec.step) if spec.step else 1
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=step)
    return FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=spec.step)


def suggest(trial: optuna.trial.Trial, specs: list[ParamSpec]) -> dict[str, Any]:
    """The values of `trial`, field by field (those whose condition holds)."""
    chosen: dict[str, Any] = {}
    for spec in specs:
        if spec.active(chosen):
            chosen[spec.name] = _suggest_one(trial, spec)
    return chosen


def _suggest_one(trial: optuna.trial.Trial, spec: ParamSpec) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(spec.name, list(spec.choices))
    assert spec.low is not None and spec.high is not None
    if spec.integer:
        step = int(spec.step) if spec.step else 1
        return trial.suggest_int(spec.name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(spec.name, spec.low, spec.high, step=spec.step, log=spec.log)


def distributions(specs: list[ParamSpec], params: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The distributions of the fields in `params`."""
    return {s.name: distribution(s) for s in specs if s.name in params}
