"""Grid expansion: the composed experiment becomes trials with stable ids, grouped by deployment.

An axis of `sweep.grid` is either a config group (`backend: [hf, vllm]`), swapped through Hydra's
compose API for each point, or a dotted value path (`workload.batch_size: [1, 8]`). Each point
and repeat becomes a `TrialSpec` whose ids follow the rules of `sweep.spec`, and trials with the
same `deployment_id` share one `Deployment`. A `proxy` in front of the server is a trial's
setting (its trials share the deployment's server with the proxy-less ones); a proxy in front of
anything but an OpenAI-compatible server is refused here (`backends.proxy.launch.check_plan`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from backends.proxy.launch import check_plan as check_proxy
from sweep.core.config import GROUPS, Config
from sweep.core.errors import ConfigError
from sweep.core.records import GROUP_CHOICES
from sweep.datasets import CHECKS, check_dataset
from sweep.datasets.context import limit, local_model_path
from sweep.datasets.multi_turn import check_plan as check_multi_turn
from sweep.datasets.quality_texts import check_plan as check_quality
from sweep.plan.compose import Composer
from sweep.plan.search_plan import check_search, check_tune, seed_hash_tree, seed_mode
from sweep.spec import (
    Deployment,
    SearchSeed,
    TrialSpec,
    deployment_id,
    flat_columns,
    hash_tree,
    stable_hash,
)

SHORT_NAMES = {"batch_size": "b", "concurrency": "c", "request_rate": "r", "num_requests": "n"}


@dataclass(frozen=True)
class SweepPlan:
    """The expanded sweep: its base config, axes and deployments in submission order."""

    name: str
    base: Config
    base_yaml: str
    axes: dict[str, list[Any]]
    deployments: tuple[Deployment, ...]

    @property
    def trials(self) -> list[TrialSpec]:
        """Every trial of the sweep, deployment by deployment."""
        return [t for d in self.deployments for t in d.trials]


def build_plan(overrides: list[str], point: dict[str, Any] | None = None) -> SweepPlan:
    """Compose the experiment, validate its grid and expand it into deployments and trials.

    `point`: dotted field -> value, planned as the only grid point instead of `sweep.grid` (a
    configuration the tuner asked for, `sweep.tune`).
    """
    with Composer(overrides) as composer:
        base_tree, base_choices = composer.compose_point([])
        grid = composer.to_config(base_tree, unknown_ok=GROUPS).sweep.grid
        group_axes = tuple(a for a in grid if a in GROUPS)
        # A key under a grid's group may belong to another option of that group (extra_args of
        # vllm_server beside hf): it must be known to at least one point, not to every one.
        base = composer.to_config(base_tree, unknown_ok=group_axes)
        _check_name(base.sweep.name)
        check_tune(base, lambda dotted: _has_key(base_tree, dotted))
        axes = {axis: list(values) for axis, values in base.sweep.grid.items()}
        if point is not None:
            axes = {axis: [value] for axis, value in point.items()}
        search_axis = check_search(base, list(axes))
        value_axes = [a for a in axes if a not in GROUPS]
        for axis in value_axes:
            if not _has_key(base_tree, axis):
                raise ConfigError(
                    f"sweep.grid axis {axis!r} names neither a config group "
                    f"({', '.join(GROUPS)}) nor a config value"
                )
        trials = []
        everywhere: set[str] | None = None  # keys that no point of the grid knows
        messages: dict[str, str] = {}
        tokenizers: dict[Any, Any] = {}  # the quality set's check: one tokenizer per model
        # One Hydra compose per combination of group options (a quarter second each), not per
        # point: points that differ only in values share their combination's tree.
        composed = {(): (base_tree, base_choices)}
        for point in itertools.product(*axes.values()):
            chosen = dict(zip(axes, point, strict=True))
            groups = tuple(f"{a}={chosen[a]}" for a in group_axes)
            if groups not in composed:
                composed[groups] = composer.compose_point(list(groups))
            tree, choices = composed[groups]
            unknown: dict[str, str] = {}
            config = composer.point_config(
                tree, {a: chosen[a] for a in value_axes}, group_axes, unknown
            )
            check_multi_turn(config)  # sessions need a server, whole sessions, the context
            check_proxy(config)  # a proxy needs an OpenAI-compatible server behind it
            _check_dataset(config)  # a trace file's rows, against the worker's context limit
            check_quality(config, tokenizers)  # the quality set: there, not empty, fits
            everywhere = set(unknown) if everywhere is None else everywhere & set(unknown)
            messages.update(unknown)
            trials.extend(
                _trials_of_point(config, chosen, choices, base.sweep.repeats, search_axis)
            )
    if everywhere:
        raise ConfigError(messages[min(everywhere)])
    _check_quality_baseline(base, trials)
    return SweepPlan(
        name=base.sweep.name,
        base=base,
        base_yaml=OmegaConf.to_yaml(base_tree),
        axes=axes,
        deployments=_group(trials),
    )


def _check_dataset(config: Config) -> None:
    """A dataset's input, judged as its worker will judge it: the same rows, the same context."""
    if config.dataset.name not in CHECKS:
        return
    workload = config.workload
    context = limit(config, local_model_path(config.model))
    check_dataset(config.dataset, context, workload.num_requests + workload.warmup_requests)


def _trials_of_point(
    config: Config,
    chosen: dict[str, Any],
    choices: dict[str, str],
    repeats: int,
    search_axis: str | None = None,
) -> list[TrialSpec]:
    tree = dataclasses.asdict(config)
    deployment = deployment_id(tree)
    hashed = hash_tree(tree)
    flat = flat_columns(tree, choices)
    label = point_label(config, chosen)
    seed = None
    if search_axis is not None:
        mode = str(seed_mode(config.search))
        hashed = seed_hash_tree(hashed, search_axis, mode)
        seed = SearchSeed(mode=mode, axis=search_axis)
        label = f"{label}-{mode}"
    specs = []
    for repeat in range(repeats):
        specs.append(
            TrialSpec(
                trial_id=stable_hash({**hashed, "repeat": repeat}),
                deployment_id=deployment,
                sweep_name=config.sweep.name,
                repeat=repeat,
                label=label if repeats == 1 else f"{label}-r{repeat}",
                config=config,
                flat=flat,
                search=seed,
            )
        )
    return specs


def _group(trials: list[TrialSpec]) -> tuple[Deployment, ...]:
    by_id: dict[str, list[TrialSpec]] = {}
    seen: set[tuple[str, str]] = set()
    for trial in trials:
        if (trial.deployment_id, trial.trial_id) in seen:
            continue  # two grid points that resolve to the same config run once
        seen.add((trial.deployment_id, trial.trial_id))
        by_id.setdefault(trial.deployment_id, []).append(trial)
    deployments = []
    for key, members in by_id.items():
        # Repeats take turns (every point's repeat 0, then every point's repeat 1, ...): a spell
        # of load on the machine then falls on several configurations' repeats, not on all the
        # repeats of one, whose spread would hide it and whose mean would carry it.
        members.sort(key=lambda trial: trial.repeat)
        config = members[0].config
        label = f"{config.backend.name}:{config.model.name}"
        deployments.append(Deployment(key, label, config, tuple(members)))
    return tuple(deployments)


def point_label(config: Config, chosen: dict[str, Any]) -> str:
    """A readable trial name such as `hf-per_request-random-b4`."""
    parts = [config.backend.name]
    for axis, value in chosen.items():
        if axis == "backend":
            if str(value) != config.backend.name:  # a variant file, e.g. vllm_tuning/c2_seqs128
                parts.append(str(value).rsplit("/", 1)[-1])
            continue
        leaf = axis.rsplit(".", 1)[-1]
        text = str(value) if not isinstance(value, dict | list) else stable_hash(value)[:6]
        parts.append(f"{SHORT_NAMES[leaf]}{text}" if leaf in SHORT_NAMES else text)
    return "-".join(parts)


def _check_quality_baseline(base: Config, trials: list[TrialSpec]) -> None:
    """`quality.baseline` must name a deployment of the sweep: a backend option or name."""
    wanted = base.quality.baseline
    if not base.quality.enabled or wanted is None:
        return
    names = set()
    for trial in trials:
        choices = json.loads(trial.flat.get(GROUP_CHOICES, "{}"))
        names |= {str(choices.get("backend")), trial.config.backend.name}
    if wanted not in names:
        raise ConfigError(
            f"quality.baseline={wanted!r} names no deployment of the sweep; its backends: "
            f"{', '.join(sorted(names - {'None'}))}"
        )


def _has_key(tree: Any, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"sweep.name={name!r} must be letters, digits, '_', '.' or '-' (it names a folder)"
        )
