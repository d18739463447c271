"""Hydra composition of one grid point, with Hydra's errors turned into one clear line.

`Composer` wraps Hydra's compose API over `conf/`: config-group overrides go through Hydra,
dotted value overrides are applied to the composed tree (struct mode keeps unknown keys an error),
and the result is converted to the plain dataclasses of `sweep.core.config` and of the backends,
which validate values.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf, ValueNode, open_dict
from omegaconf.errors import OmegaConfBaseException

from sweep.core.config import GROUPS, Config
from sweep.core.errors import ConfigError
from sweep.plan.schema import register_schemas

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GRID = "sweep.grid"


class Composer:
    """Composes configs from `conf/` for the lifetime of a `with` block."""

    def __init__(self, overrides: list[str], config_dir: Path = CONF_DIR) -> None:
        self.overrides = list(overrides)
        self.config_dir = config_dir
        self._context: Any = None
        # Each tree's unknown keys, by id (`point_config`); the tree is kept so its id stays its.
        self._left_out: dict[int, tuple[DictConfig, list[tuple[str, str]]]] = {}

    def __enter__(self) -> Composer:
        register_schemas()
        GlobalHydra.instance().clear()
        self._context = initialize_config_dir(str(self.config_dir), version_base=None)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)

    def options(self, group: str) -> list[str]:
        """The selectable options of a config group (schema entries hidden)."""
        loader = GlobalHydra.instance().config_loader()
        names = loader.get_group_options(group)
        return sorted(n for n in names if not n.endswith("_schema"))

    def compose_tree(self, group_overrides: list[str]) -> DictConfig:
        """Compose the base overrides plus `group_overrides` into an OmegaConf tree."""
        return self.compose_point(group_overrides)[0]

    def compose_point(self, group_overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
        """The composed tree and the option chosen for each config group (`GROUPS`)."""
        try:
            tree = compose(
                "config", overrides=self.overrides + group_overrides, return_hydra_config=True
            )
        except MissingConfigException as exc:
            raise ConfigError(self._missing_option_message(exc)) from None
        except (HydraException, OmegaConfBaseException) as exc:
            match = re.search(r"Could not override '([^']+)'", str(exc))
            if match:
                raise ConfigError(self._override_message(match.group(1), exc)) from None
            raise ConfigError(_one_line(exc)) from None
        choices = {
            group: str(option)
            for group, option in tree.hydra.runtime.choices.items()
            if group in GROUPS and option is not None
        }
        with open_dict(tree):
            del tree["hydra"]
        return tree, choices

    def _override_message(self, key: str, exc: Exception) -> str:
        """Name the valid keys when `key` does not exist, else explain why it can't be set.

        A grid axis (`sweep.grid.workload.batch_size`) is a new key to Hydra, new or not (the
        grid's keys hold dots, which a plain override cannot reach): the fix is the same
        override with a leading `+`, and so it is for any key whose parent does not exist.
        """
        parent, _, leaf = key.rpartition(".")
        mine = [o for o in self.overrides if o.split("=")[0].lstrip("+~") == key]
        added = f"'+{key}={mine[-1].partition('=')[2] if mine else 'VALUE'}'"
        if key.startswith(GRID + "."):
            return f"cannot override {key!r}: a grid axis takes a leading '+'; write {added}"
        kept = [o for o in self.overrides if o not in mine]
        try:
            node = compose("config", overrides=kept)
            node = OmegaConf.select(node, parent) if parent else node
        except (HydraException, OmegaConfBaseException):
            node = None
        if isinstance(node, DictConfig) and leaf not in node:
            return f"unknown config key {key!r}; valid keys: {', '.join(map(str, node.keys()))}"
        cause = _one_line(exc.__cause__) if exc.__cause__ is not None else _one_line(exc)
        if node is None:  # the parent does not exist: Hydra adds keys only with `+`
            return f"cannot override {key!r}: {cause}; add a new key with {added}"
        return f"cannot override {key!r}: {cause}"

    def to_config(
        self,
        tree: DictConfig,
        values: dict[str, Any] | None = None,
        unknown_ok: tuple[str, ...] = (),
        unknown: dict[str, str] | None = None,
        left_out: list[tuple[str, str]] | None = None,
    ) -> Config:
        """Apply dotted `values` to `tree` and convert it to validated dataclasses.

        A key no schema declares is refused, except under the groups in `unknown_ok` (the
        group axes of a grid, where a key may belong to another point's option): those are
        added to `unknown` (key -> message) and left out of the config. `left_out`: the tree's
        `unknown_keys` with `values` set, where the caller knows them already.
        """
        try:
            for key, value in (values or {}).items():
                if OmegaConf.select(tree, key, default=_ABSENT) is _ABSENT:
                    parent = OmegaConf.select(tree, key.rpartition(".")[0]) if "." in key else tree
                    valid = (
                        ", ".join(map(str, parent.keys())) if isinstance(parent, DictConfig) else ""
                    )
                    raise ConfigError(f"unknown config key {key!r}; valid keys: {valid}")
                OmegaConf.update(tree, key, value, merge=False)
            if left_out is None:
                left_out = unknown_keys(tree)
            for key, message in left_out:
                if key.split(".", 1)[0] not in unknown_ok:
                    raise ConfigError(message)
                if unknown is not None:
                    unknown[key] = message
            config = OmegaConf.to_object(tree)
            for key, _ in left_out:  # to_object sets an undeclared key as a plain attribute
                parent, _, leaf = key.rpartition(".")
                vars(functools.reduce(getattr, parent.split("."), config)).pop(leaf, None)
            return config
        except OmegaConfBaseException as exc:
            raise ConfigError(_one_line(exc)) from None

    def point_config(
        self,
        tree: DictConfig,
        values: dict[str, Any],
        unknown_ok: tuple[str, ...] = (),
        unknown: dict[str, str] | None = None,
    ) -> Config:
        """`to_config` of one grid point: `tree` with `values` set, and `tree` left as it was.

        Points of one combination of group options share its composed tree. Scalar values are
        set in place and set back after the conversion; any other (a list, a map) is set on a
        deep copy of the tree, which took half of the planning time of a 300-point grid. A
        scalar set in place adds no key, so the tree's unknown keys are looked for once.
        """
        nodes = [_value_node(tree, key) for key in values]
        if any(node is None for node in nodes) or any(
            isinstance(value, dict | list | DictConfig | ListConfig) for value in values.values()
        ):
            return self.to_config(copy.deepcopy(tree), values, unknown_ok, unknown)
        before = {key: node._value() for key, node in zip(values, nodes, strict=True)}
        if id(tree) not in self._left_out:
            self._left_out[id(tree)] = (tree, unknown_keys(tree))
        try:
            return self.to_config(tree, values, unknown_ok, unknown, self._left_out[id(tree)][1])
        finally:
            for key, value in before.items():
                OmegaConf.update(tree, key, value, merge=False)

    def _missing_option_message(self, exc: MissingConfigException) -> str:
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(exc))
        if match:
            group, option = match.groups()
            return (
                f"{group}={option} is not a known option; choose one of: "
                f"{', '.join(self.options(group))}"
            )
        match = re.search(r"Could not load '([^']+)'", str(exc))
        if match:
            return f"{match.group(1)} is not a known config file"
        return _one_line(exc)


_ABSENT = object()


def _value_node(tree: DictConfig, key: str) -> ValueNode | None:
    """The node of a scalar at dotted `key` in `tree`; None where there is none."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(tree, parent_key, default=None) if parent_key else tree
    if not isinstance(parent, DictConfig) or leaf not in parent:
        return None
    node = parent._get_node(leaf)
    return node if isinstance(node, ValueNode) else None


def unknown_keys(node: DictConfig, prefix: str = "") -> list[tuple[str, str]]:
    """Keys that no schema declares, whichever way they came in (`+group.key=v` too).

    Hydra's `+` adds a key even under a structured config, and the conversion to dataclasses
    would then drop it without a word: a typo such as `+workload.output_lenn=64` ran the whole
    sweep with the default. Free-form maps (`extra_args`, `sweep.grid`) are not checked.

    Returns:
        (dotted key, a one-line message naming the closest valid keys) for each.
    """
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    known = [f.name for f in dataclasses.fields(schema)]
    found = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            found.append(
                (name, f"unknown config key {name!r}; {hint}valid keys: {', '.join(known)}")
            )
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found.extend(unknown_keys(child, f"{name}."))
    return found


def _one_line(exc: Exception) -> str:
    """Hydra and OmegaConf messages span lines; keep the message and the full key."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = lines[0] if lines else type(exc).__name__
    full_key = next((ln for ln in lines if ln.startswith("full_key:")), None)
    if full_key and full_key.split(":", 1)[1].strip() not in message:
        message = f"{message} ({full_key})"
    return message
