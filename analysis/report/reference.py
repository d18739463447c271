"""Published numbers beside measured ones: the "Published vs measured" section of a report.

An experiment that reproduces a study lists the study's numbers under `reference:`, one row per
published result. A row's keys are either config keys, which say which trials it describes (a
dotted config value such as `workload.batch_size: 32`, or a config group such as
`backend: vllm_tuning/c2_seqs128` naming the option the grid chose), or summary columns
holding the published value (`output_throughput_tok_s: 595`, `trial_status: failed`). The sweep
writes its composed config, reference included, into `<results>/sweep.yaml`; `load_reference`
reads it back and `reference_table` hands on one display row per published value: published,
measured (the mean over the matching trials) and their ratio. A group key matches the option
each trial recorded (`records.GROUP_CHOICES`); everything is read from the results folder, never
from today's `conf/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.report.sections import MISSING, Section
from sweep.core import records as rec
from sweep.core.config import GROUPS

SECTION_TITLE = "Published vs measured"
COLUMNS = ("Published for", "Metric", "Published", "Measured", "Measured / published", "Trials")
# Published values may be stated in seconds where the summary holds milliseconds, or vice versa.
UNIT_ALIASES = (("_s_", "_ms_", 1e-3), ("_ms_", "_s_", 1e3))


@dataclass(frozen=True)
class Reference:
    """A sweep's published rows."""

    rows: tuple[dict[str, Any], ...] = ()


def load_reference(results_dir: str | Path) -> Reference | None:
    """The reference of a results folder's sweep.yaml; None without such a file or rows."""
    path = Path(results_dir) / rec.SWEEP_YAML
    if not path.is_file():
        return None
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = tuple(
        r for r in (meta.get("config") or {}).get("reference") or [] if isinstance(r, dict)
    )
    return Reference(rows) if rows else None


def with_reference(options: Any, results_dir: str | Path) -> Any:
    """`options` (a report options dataclass) with the reference of `results_dir`."""
    return dataclasses.replace(options, reference=load_reference(results_dir))


def reference_sections(trials: pd.DataFrame, reference: Reference | None) -> list[Section]:
    """The section, or nothing when the sweep reproduces no published study."""
    if reference is None or not reference.rows:
        return []
    text = (
        "The study's published numbers next to this sweep's trials with the same settings "
        "(measured: mean over the matching trials)."
    )
    return [Section(SECTION_TITLE, text=text, table=reference_table(trials, reference))]


def reference_table(trials: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """One display row per published value: where, what, published, measured, ratio, trials.

    Args:
        trials: The summary, one row per trial (flattened config columns and metrics).
        reference: From `load_reference`.
    """
    rows = []
    for ref in reference.rows:
        where = {k: v for k, v in ref.items() if _is_config_key(k)}
        matched = trials[_mask(trials, where)]
        label = ", ".join(f"{k}={_text(v)}" for k, v in where.items()) or "all trials"
        for key, published in ref.items():
            if _is_config_key(key):
                continue
            measured = _measured(matched, key)
            ratio = _ratio(measured, published)
            rows.append((label, key, _text(published), _text(measured), ratio, str(len(matched))))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _is_config_key(key: str) -> bool:
    return key in GROUPS or rec.CONFIG_SEPARATOR in key


def _mask(trials: pd.DataFrame, where: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=trials.index)
    for key, expected in where.items():
        if rec.CONFIG_SEPARATOR not in key:
            mask &= _chose(trials, key, str(expected))
        elif key in trials:
            mask &= trials[key].map(lambda cell, e=expected: _same(cell, e))
        elif not _is_null(expected):
            return pd.Series(False, index=trials.index)
    return mask


def _chose(trials: pd.DataFrame, group: str, option: str) -> pd.Series:
    """Trials composed with `option` of `group`, as each trial recorded it.

    Folders written before trials recorded their choices name a grid's option in the trial
    label (`vllm_server-c2_seqs128-b8`), and a backend option its name (`backend.name`).
    """
    if rec.GROUP_CHOICES in trials:
        recorded = trials[rec.GROUP_CHOICES].map(lambda text: _choices(text).get(group))
        return recorded == option
    leaf = option.rsplit("/", 1)[-1]
    labels = trials.get(rec.LABEL, pd.Series("", index=trials.index)).astype(str)
    found = labels.map(lambda label: leaf in label.split("-")[1:])
    name = f"{group}{rec.CONFIG_SEPARATOR}name"
    if name in trials:
        found |= trials[name].astype(str) == option
    return found


def _choices(text: Any) -> dict[str, str]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _same(cell: Any, expected: Any) -> bool:
    if _is_null(cell) or _is_null(expected):
        return _is_null(cell) and _is_null(expected)
    if isinstance(expected, bool) or isinstance(cell, bool):
        return bool(cell) == bool(expected)
    if isinstance(expected, int | float) and isinstance(cell, int | float):
        return math.isclose(float(cell), float(expected), rel_tol=1e-9)
    return str(cell) == str(expected)


def _measured(matched: pd.DataFrame, key: str) -> Any:
    column, scale = key, 1.0
    if column not in matched:
        for src, dst, factor in UNIT_ALIASES:
            if src in key and key.replace(src, dst) in matched:
                column, scale = key.replace(src, dst), factor
                break
        else:
            return None
    values = matched[column].dropna()
    if values.empty:
        return None
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not pd.api.types.is_bool_dtype(values):
        return float(numeric.mean()) * scale
    return ", ".join(sorted({str(v) for v in values}))


def _ratio(measured: Any, published: Any) -> str:
    if isinstance(measured, float) and isinstance(published, int | float) and published:
        if not isinstance(published, bool):
            return f"{measured / published:.2f}"
    return MISSING


def _text(value: Any) -> str:
    if _is_null(value):
        return MISSING
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
