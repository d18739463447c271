"""The summary frame's columns as the report reads them: loads, series, numbers and texts.

Pure helpers from the summary frame (`analysis.read.load.load_summary`): `load_values` and
`load_axis_label` decide where a trial sits on the load axis, `series_labels` which line or row
it belongs to, and `numeric_column`, `number`, `text_column` and `display_text` read a column
as numbers or as legend text. Comparisons, figures, tables and W&B all label trials with them,
so a trial has one name everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.core import records as rec
from sweep.core.config import streams_of

GROUP_JOIN = " · "
NO_SERIES = "all trials"
# Columns of the Pareto points frame (`analysis.stats.compare.pareto_points`).
CONFIGURATION = "configuration"
LATENCY_MS = "latency_ms"

# The summary columns `load_values` reads, and all it reads.
LOAD_COLUMNS = (rec.WORKLOAD_NAME, rec.WORKLOAD_CONCURRENCY, rec.WORKLOAD_BATCH_SIZE)


def load_values(summary: pd.DataFrame) -> pd.Series:
    """Offered load of each trial: the streams it keeps in flight (`streams_of`).

    An uncapped open loop has no stream count; it sits at its batch size, as before.
    """
    name, concurrency_column, batch_column = LOAD_COLUMNS
    concurrency = numeric_column(summary, concurrency_column)
    batch = numeric_column(summary, batch_column)
    modes = summary.get(name, pd.Series(None, index=summary.index, dtype=object))
    keys = list(zip(modes.map(str), _integers(concurrency), _integers(batch), strict=True))
    rule = {key: streams_of(*key) for key in set(keys)}  # a sweep has a few distinct loads
    streams = [rule[key] for key in keys]
    return pd.Series(streams, index=summary.index, dtype=float).fillna(batch)


def _integers(values: pd.Series) -> list[int | None]:
    """Floats as ints, None for NaN."""
    return [None if v != v else int(v) for v in values.tolist()]


def load_axis_label(summary: pd.DataFrame) -> str:
    """Name of the load axis: concurrency, batch size, or both when trials mix them."""
    by_concurrency = numeric_column(summary, rec.WORKLOAD_CONCURRENCY).notna()
    if by_concurrency.all():
        return "concurrency"
    return "concurrency or batch size" if by_concurrency.any() else "batch size"


def series_columns(summary: pd.DataFrame, exclude_groups: tuple[str, ...] = ()) -> list[str]:
    """Config columns that tell the lines apart: `backend.name`, then every other varying one.

    A column joins only if it still splits some line, so values that follow from the backend
    (its own settings, null for the others) do not clutter the legend. Columns of the config
    groups in `exclude_groups` (e.g. `dataset`, when the task is shown on its own) never join.
    """
    keys = {
        col: display_texts(summary[col])
        for col in summary.columns
        if _is_config(col)
        and col.partition(rec.CONFIG_SEPARATOR)[0] not in exclude_groups
        and (col == rec.BACKEND_NAME or _varies(summary[col]))
    }
    chosen = [rec.BACKEND_NAME] if rec.BACKEND_NAME in keys else []
    for col, values in keys.items():
        if col in chosen or col in LOAD_COLUMNS or values.nunique() < 2:
            continue
        if not chosen or values.groupby([keys[c] for c in chosen]).nunique().max() > 1:
            chosen.append(col)
    return chosen


def series_labels(summary: pd.DataFrame, exclude_groups: tuple[str, ...] = ()) -> pd.Series:
    """Legend label of each trial, e.g. "hf per_request · random" (see `series_columns`)."""
    columns = series_columns(summary, exclude_groups)

    def label(row: pd.Series) -> str:
        groups: dict[str, list[str]] = {}
        for col in columns:
            text = display_text(row[col])
            if not text:
                continue
            group, _, field = col.partition(rec.CONFIG_SEPARATOR)
            # Names read on their own ("vllm"); numbers and flags need their field ("dtype=...").
            shown = text if isinstance(row[col], str) else f"{field}={text}"
            groups.setdefault(group, []).append(shown)
        return GROUP_JOIN.join(" ".join(parts) for parts in groups.values()) or NO_SERIES

    if not len(summary):
        return pd.Series(dtype=str)
    if not columns:
        return pd.Series(NO_SERIES, index=summary.index, dtype=object)
    # One label per distinct combination of the columns' texts, not per trial: a sweep of
    # 10,000 trials has a few dozen series.
    texts = pd.DataFrame({c: display_texts(summary[c]) for c in columns}, index=summary.index)
    named = texts.assign(**{f"{c}\x00str": summary[c].map(_is_text) for c in columns})
    firsts = ~named.duplicated()
    labels = summary.loc[firsts].apply(label, axis=1)
    keys = list(named.columns)
    table = named.loc[firsts].assign(_label=labels.to_numpy())
    return named.merge(table, on=keys, how="left").set_index(summary.index)["_label"]


def _varies(values: pd.Series) -> bool:
    """Whether a column holds two or more values (null counts as one): cheaper than its texts.

    A column of one value has one text, so it can never tell lines apart; most config columns of
    a large sweep are such, and their texts need not be worked out.
    """
    try:
        return values.nunique(dropna=False) > 1
    except TypeError:  # lists or dicts: unhashable, judged by their texts
        return True


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def display_texts(values: pd.Series) -> pd.Series:
    """`display_text` of every value, worked out once per distinct value."""
    try:
        uniques = pd.unique(values)
    except TypeError:  # lists or dicts: unhashable, one at a time
        return values.map(display_text)
    texts = {value: display_text(value) for value in uniques if not pd.isna(value)}
    return values.map(texts).fillna("").astype(object)


def sweep_title(summary: pd.DataFrame, fallback: str) -> str:
    """The sweep's name from its trials, or `fallback` (e.g. the folder name)."""
    names = summary[rec.SWEEP_NAME].dropna().unique() if rec.SWEEP_NAME in summary else []
    return ", ".join(sorted(map(str, names))) or fallback


def numeric_column(summary: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN for nulls and non-numbers); all NaN when the column is absent."""
    if column not in summary:
        return pd.Series(np.nan, index=summary.index, dtype=float)
    return pd.to_numeric(summary[column], errors="coerce").astype(float)


def reasoned(frame: pd.DataFrame) -> bool:
    """Whether some trial (or stage) of `frame` streamed a reasoning model's thinking.

    Then its tables show the time to the answer's first token beside TTFT; otherwise that time
    is TTFT's and is left out.
    """
    return bool((numeric_column(frame, rec.REASONING_TOKENS_TOTAL) > 0).any())


def number(value: object) -> float | None:
    """A single value as a float; None for nulls and non-numbers."""
    parsed = pd.to_numeric(value, errors="coerce") if value is not None else None
    return None if parsed is None or pd.isna(parsed) else float(parsed)


def text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as display text (`display_text`); all "" when the column is absent."""
    if column not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].map(display_text)


def _is_config(column: str) -> bool:
    return rec.CONFIG_SEPARATOR in column and not column.startswith(rec.ENV_PREFIX)


def display_text(value: object) -> str:
    """A config value as legend text; "" for null. Lists and dicts become their repr."""
    if isinstance(value, list | tuple | dict | np.ndarray):
        return str(list(value) if isinstance(value, np.ndarray) else value)
    if value is None or pd.isna(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int column with nulls comes back as float
    return str(value)
