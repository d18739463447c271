"""What a search is before it runs: its load axis, its seed in the plan, its checks.

With `search.mode` other than `none`, each grid point (and repeat) of each deployment becomes
one search instead of one trial: a seed `TrialSpec` whose `search` holds a `SearchSeed` (both in
`sweep.spec`, which the worker reads too). The seed's id (the search id) hashes the point with
its load axis left out; the worker (`sweep.worker.search_run`) turns the seed into probes, each an
ordinary trial at one load. `known` carries the probes already recorded (from the results folder
on resume, or from a lost task), so a search continues where it stopped instead of starting again.
With `search=tune` each configuration the tuner asks for (`sweep.tune`) is planned as one point
whose seed is a capacity search (`seed_mode`), so its ids are those `search=capacity` gives the
same point; its space is checked here against the composed config before Ray starts
(`check_tune`).
"""

from __future__ import annotations

from typing import Any

from sweep.core import records as R
from sweep.core.config import GROUPS, Config, SearchConfig
from sweep.core.errors import ConfigError
from sweep.core.slo import check_names, known_limit_columns
from sweep.core.tune_config import TUNE_OBJECTIVES, parse_space
from sweep.spec import LOAD_AXES, TrialSpec

# What a summary-column objective may name: the limits' columns and the throughputs.
SUMMARY_OBJECTIVES = (
    R.REQUEST_THROUGHPUT, R.OUTPUT_THROUGHPUT, R.PEAK_OUTPUT_THROUGHPUT,
    R.SLO_GOODPUT_OUTPUT_THROUGHPUT, *known_limit_columns(),
)  # fmt: skip


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
    if search.mode == "none" or seed_mode(search) is None:
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
    if seed_mode(search) == "capacity" and not base.slo.is_set:
        raise ConfigError(
            f"search={search.mode} needs an SLO to meet: set e.g. slo.ttft_ms_p99=500, or "
            "slo.goodput_fraction=0.95 with slo.ttft_ms / slo.tpot_ms / slo.e2e_ms"
        )
    check_names(base.slo, known_limit_columns())
    return axis


def seed_mode(search: SearchConfig) -> str | None:
    """The search each grid point's seed runs: `tune` measures by capacity, or by one trial."""
    if search.mode != "tune":
        return search.mode
    return "capacity" if search.tune.objective in TUNE_OBJECTIVES else None


def check_tune(base: Config, has_key: Any) -> None:
    """Check `search=tune`'s space and objective before Ray starts: one line per fault.

    `has_key(dotted)`: whether the composed config has that value (the plan's tree).
    """
    if base.search.mode != "tune":
        return
    tune = base.search.tune
    specs = parse_space(tune.space)
    if base.sweep.grid:
        raise ConfigError(
            "search=tune chooses the configurations itself: empty sweep.grid and give its axes "
            "as choices in search.tune.space"
        )
    if base.sweep.repeats != 1:
        raise ConfigError("search=tune measures each configuration once: set sweep.repeats=1")
    axis = LOAD_AXES.get(base.workload.name) if seed_mode(base.search) == "capacity" else None
    for spec in specs:
        where = f"search.tune.space.{spec.name}"
        if spec.name in GROUPS:
            raise ConfigError(f"{where} names a config group: the space tunes values of fields")
        if not has_key(spec.name):
            raise ConfigError(f"{where} names no field of the config (unknown field)")
        if spec.name == axis:
            raise ConfigError(f"{where} is the load the capacity search raises itself")
    if tune.objective not in TUNE_OBJECTIVES and tune.objective not in SUMMARY_OBJECTIVES:
        raise ConfigError(
            f"search.tune.objective={tune.objective!r} is neither capacity, cost_per_mtok nor "
            "a numeric summary column (request_throughput_req_s, ttft_ms_p99, ...)"
        )
    _ = tune.goal  # a summary column needs its direction


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
