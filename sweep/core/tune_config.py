"""The tuning settings (`search=tune`): the search space, the objective, the budget.

`TuneConfig` sits under `search.tune`. Its `space` maps a dotted config field to how it varies:

    backend.max_num_seqs: {low: 2, high: 64, int: true, log: true}
    backend.chunked_prefill: {choices: [true, false]}
    backend.max_num_batched_tokens: {low: 256, high: 16384, int: true, log: true,
                                     when: "backend.chunked_prefill == true"}

`choices` (a list of values), or a range `low`..`high` with `int` (whole numbers), `log` (sampled
evenly in log) and `step`; `when` makes a field conditional on one chosen before it
(`FIELD == VALUE` or `FIELD != VALUE`): without it met, the field keeps its configured value.
`parse_space` checks every entry and returns `ParamSpec`s in the order written, each fault one
line (`ConfigError`); whether a field exists is checked against the composed config by the
plan (`sweep.plan.search_plan.check_tune`). The objective is `capacity` (the capacity search's
answer, maximised), `cost_per_mtok` (the cost per million output tokens at that capacity,
minimised) or any numeric summary column with a `direction`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sweep.core.errors import check_choice, check_positive, raise_config

TUNE_OBJECTIVES = ("capacity", "cost_per_mtok")  # or a summary column, with a direction
DIRECTIONS = ("maximize", "minimize")
DEFAULT_DIRECTION = {"capacity": "maximize", "cost_per_mtok": "minimize"}
SPEC_KEYS = ("choices", "low", "high", "int", "log", "step", "when")
_WHEN = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=)\s*(.+?)\s*$")


@dataclass(frozen=True)
class ParamSpec:
    """One field of the space: its choices or its range, and the condition it is tuned under."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool = False
    log: bool = False
    step: float | None = None
    when: tuple[str, str, Any] | None = None  # (field, "==" or "!=", value)

    def active(self, chosen: dict[str, Any]) -> bool:
        """Whether the field is tuned given the fields chosen before it."""
        if self.when is None:
            return True
        name, op, value = self.when
        if name not in chosen:
            return False  # what it depends on was itself inactive
        return (chosen[name] == value) == (op == "==")


@dataclass
class TuneConfig:
    """How `search=tune` chooses configurations (see the module docstring for `space`).

    `budget`: configurations to try in all (a re-run with a larger one adds trials);
    `parallel`: configurations in flight at once (0: as many deployments as the cluster has room
    for); `seed`: the sampler's; `startup`: configurations sampled at random before the model
    guides the choice (0: a quarter of the budget, at least 3); `prune`: stop a configuration's
    capacity search once a probe proves it below the best found so far.
    """

    space: dict[str, Any] = field(default_factory=dict)
    objective: str = "capacity"
    direction: str | None = None
    budget: int = 20
    parallel: int = 0
    seed: int = 0
    startup: int = 0
    prune: bool = True

    def __post_init__(self) -> None:
        check_positive("search.tune", budget=self.budget)
        if self.parallel < 0 or self.startup < 0:
            raise_config("search.tune.parallel and search.tune.startup must be >= 0")
        if self.direction is not None:
            check_choice("search.tune", "direction", self.direction, DIRECTIONS)

    @property
    def goal(self) -> str:
        """`maximize` or `minimize`: the direction given, else the objective's own."""
        direction = self.direction or DEFAULT_DIRECTION.get(self.objective)
        if direction is None:
            raise_config(
                f"search.tune.objective={self.objective!r} is a summary column: set "
                "search.tune.direction to maximize or minimize"
            )
        return str(direction)

    @property
    def startup_trials(self) -> int:
        """Configurations sampled at random first."""
        return self.startup or max(3, self.budget // 4)


def parse_space(space: dict[str, Any]) -> list[ParamSpec]:
    """The space's fields in the order written, each checked; a one-line ConfigError if not."""
    entries = _entries(space)
    if not entries:
        raise_config("search=tune needs a search space: set search.tune.space (see docs/tuning.md)")
    specs: list[ParamSpec] = []
    for name, spec in entries.items():
        specs.append(_param(name, spec, [s.name for s in specs]))
    return specs


def _entries(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys are dotted fields (`{backend: {max_num_seqs: {...}}}` from the command line)."""
    found: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & set(SPEC_KEYS):
            found.update(_entries(value, f"{name}."))
        else:
            found[name] = value
    return found


def _param(name: str, spec: Any, before: list[str]) -> ParamSpec:
    where = f"search.tune.space.{name}"
    if not isinstance(spec, dict):
        raise_config(f"{where} must be a mapping: {{choices: [...]}} or {{low: .., high: ..}}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise_config(f"{where} has unknown keys {unknown}; use {', '.join(SPEC_KEYS)}")
    when = _when(where, spec.get("when"), before)
    if "choices" in spec:
        if {"low", "high", "step", "log"} & set(spec):
            raise_config(f"{where}: give either choices or a range (low, high), not both")
        choices = spec["choices"]
        if not isinstance(choices, list | tuple) or not choices:
            raise_config(f"{where}.choices is empty: list at least one value")
        return ParamSpec(name, choices=tuple(choices), when=when)
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None:
        raise_config(f"{where} needs choices, or both low and high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise_config(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low >= high:
        raise_config(f"{where} is an empty range: low={low} is not below high={high}")
    log, integer, step = (
        bool(spec.get("log", False)),
        bool(spec.get("int", False)),
        spec.get("step"),
    )
    if log and low <= 0:
        raise_config(f"{where} is a log range through 0 or below (low={low}): set low > 0")
    if step is not None and (log or step <= 0):
        raise_config(f"{where}.step must be > 0 and cannot go with log")
    if integer and (low != int(low) or high != int(high)):
        raise_config(f"{where}: an int range needs whole bounds, got low={low} and high={high}")
    return ParamSpec(name, low=low, high=high, integer=integer, log=log, step=step, when=when)


def _when(where: str, text: Any, before: list[str]) -> tuple[str, str, Any] | None:
    if text is None:
        return None
    match = _WHEN.match(str(text))
    if match is None:
        raise_config(f"{where}.when={text!r} must read 'FIELD == VALUE' or 'FIELD != VALUE'")
    name, op, value = match.groups()
    if name not in before:
        raise_config(
            f"{where}.when names {name!r}, which is not a field of the space listed before it"
        )
    return name, op, yaml.safe_load(value)
