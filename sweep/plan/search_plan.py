"""What a search is before it runs: its load axis, its seed in the plan, its checks.

With `search.mode` other than `none`, each grid point (and repeat) of each deployment becomes
one search instead of one trial: a seed `TrialSpec` whose `search` holds a `SearchSeed` (both in
`sweep.spec`, which the worker reads too). The seed's id (the search id) hashes the point with
its load axis left out; the worker (`sweep.worker.search_run`) turns the seed into probes, each an
ordinary trial at one load. `known` carries the probes already recorded (from the results folder
on resume, or from a lost task), so a search continues where it stopped instead of starting again.
"""

from __future__ import annotations

from typing import Any

from sweep.core.config import Config
from sweep.core.errors import ConfigError
from sweep.core.slo import check_names, known_limit_columns
from sweep.spec import LOAD_AXES, TrialSpec


def load_axis(config: Config) -> str:
    """The axis a search of `config` varies; a one-line ConfigError when there is none."""
    mode = config.search.mode
    axis = LOAD_AXES.get(config.workload.name)
    if axis is None:
        raise ConfigError(
            f"search={mode} needs a load to raise, but workload {config.workload.name!r} has "
            f"none; use workload=open_loop (request_rate) or workload=closed_loop (concurrency)"
        )
    if mode == "profile" and axis != LOAD_AXES["open_loop"]:
        raise ConfigError(
            "search=profile sweeps request rates: use workload=open_loop "
            f"(workload {config.workload.name!r} varies concurrency)"
        )
    return axis


def check_search(base: Config, grid_axes: list[str]) -> str | None:
    """Check the search settings before Ray starts; the load axis, or None without a search."""
    search = base.search
    if search.mode == "none":
        return None
    if base.workload.stages:
        raise ConfigError(
            f"search={search.mode} chooses one load per probe; workload.stages set their own"
        )
    axis = load_axis(base)
    if axis in grid_axes:
        raise ConfigError(
            f"sweep.grid varies {axis}, which search={search.mode} chooses itself: remove the "
            f"axis (search.start, search.min_load and search.max_load bound the search)"
        )
    if search.mode == "capacity" and not base.slo.is_set:
        raise ConfigError(
            "search=capacity needs an SLO to meet: set e.g. slo.ttft_ms_p99=500, or "
            "slo.goodput_fraction=0.95 with slo.ttft_ms / slo.tpot_ms / slo.e2e_ms"
        )
    check_names(base.slo, known_limit_columns())
    return axis


def seed_hash_tree(hashed: dict[str, Any], axis: str, mode: str) -> dict[str, Any]:
    """The trial-id tree of a grid point with its load left out and the search mode added."""
    section, key = axis.split(".")
    part = {k: v for k, v in hashed[section].items() if k != key}
    return {**hashed, section: part, "search": mode}


def probe_budget(spec: TrialSpec) -> int:
    """Trials `spec` stands for in the progress count: 1, or its search's most probes."""
    if spec.search is None:
        return 1
    search = spec.config.search
    return search.points + 2 if spec.search.mode == "profile" else search.max_probes
