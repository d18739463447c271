"""Rows computed from each trial, kept between runs of the analysis: a re-run reads what is new.

A cache is one Parquet file, `<cache_dir>/<name>.parquet`, holding the rows of every trial seen
so far with three key columns: the trial's folder (relative to the results folder) and the
modification time and size of its summary, as the folder's listing has them
(`analysis.read.trial_folder`), so no trial file is opened to tell whether its rows are fresh. A
trial is read again only when it is new or its summary was rewritten (a resumed or overwritten
trial); rows of trials no longer in the folder are dropped. Each row also keeps the names of its
trial's own columns (dictionary-encoded: a sweep has a few distinct lists), so that the columns come
out in the order a read of every trial in folder order gives (each column where it first
appears), however the cached and new rows were joined: a cached re-run and a cold run of the
same folder hand on the same frame.
The file is rewritten once per analysis run (to a temporary name, then renamed), never per
trial. A cache that cannot be read is ignored and one that cannot be written is skipped: the
rows are then read from the trials, as without a cache.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.read.trial_folder import TrialFolder

log = logging.getLogger(__name__)

CACHE_DIR = ".analysis_cache"  # beside the report, under the folder it is written to
SUMMARY_CACHE = "summaries-v2"  # the raw summary rows
KEY = "_cache.trial"
STAMP = "_cache.summary_mtime_ns"
SIZE = "_cache.summary_bytes"
KEYS = (KEY, STAMP, SIZE)
COLUMNS = "_cache.columns"  # the trial's own column names, joined by `_JOIN`
_JOIN = "\x1f"

Tag = tuple[str, int, int]  # a trial's key, its summary's modification time and size
# trial folders and their tags -> their rows in one table, tagged by `keyed`
Reader = Callable[[Sequence[Path], Sequence[Tag]], pa.Table]


class TrialCache:
    """One kind of per-trial rows, cached under `cache_dir`."""

    def __init__(self, cache_dir: str | Path, name: str) -> None:
        self.path = Path(cache_dir) / f"{name}.parquet"
        self.read_trials = 0  # trials read by the last `rows` call (not found in the cache)

    def rows(self, folder: TrialFolder, read: Reader) -> pa.Table:
        """Every trial's rows in the folder's order: from the cache, else by `read` (then kept)."""
        tags = [(key, *stamp) for key, stamp in zip(folder.keys(), folder.stamps, strict=True)]
        order = {tag: i for i, tag in enumerate(tags)}
        cached = self._load()
        kept = None
        if cached is not None:
            fresh = [tag in order for tag in _tags(cached)]
            kept = cached.filter(pa.array(fresh, type=pa.bool_()))
        known = set() if kept is None else set(_tags(kept))
        missing = [i for i, tag in enumerate(tags) if tag not in known]
        self.read_trials = len(missing)
        new = None
        if missing:
            new = read([folder.trials[i] for i in missing], [tags[i] for i in missing])
        parts = [part for part in (kept, new) if part is not None and part.num_rows]
        if not parts:
            return pa.table({})
        table = pa.concat_tables(parts, promote_options="permissive")
        table = table.take(pc.sort_indices(pa.array([order[tag] for tag in _tags(table)])))
        if missing or cached is None or kept.num_rows != cached.num_rows:
            self._save(table)
        return table.select(_first_seen(table[COLUMNS]))

    def _load(self) -> pa.Table | None:
        if not self.path.is_file():
            return None
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("analysis cache %s unreadable (%s); reading the trials", self.path, exc)
            return None
        return table if {*KEYS, COLUMNS} <= set(table.column_names) else None

    def _save(self, table: pa.Table) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only or full folder: the analysis goes on without
            log.warning("analysis cache %s not written: %s", self.path, exc)
            tmp.unlink(missing_ok=True)


def _tags(table: pa.Table) -> list[Tag]:
    """The key columns of cached rows, one tag per row."""
    return list(zip(*(table[name].to_pylist() for name in KEYS), strict=True))


def _first_seen(columns: pa.ChunkedArray) -> list[str]:
    """Every trial's column, in the order of first appearance down the rows (`COLUMNS`)."""
    lists = columns.combine_chunks()
    _, firsts = np.unique(lists.indices.to_numpy(zero_copy_only=False), return_index=True)
    names: dict[str, None] = {}
    for row in sorted(firsts):
        names.update(dict.fromkeys(lists[int(row)].as_py().split(_JOIN)))
    return list(names)


def keyed(tables: Sequence[pa.Table], tags: Sequence[Tag]) -> pa.Table:
    """Rows of some trials (a table each) joined, with each trial's key columns and column names.

    What `TrialCache` keeps. The columns of trials of different backends differ, and a column
    null in one trial is typed null there: permissive promotion unifies both. A sweep's trials
    share a few lists of column names, held once as the values of a dictionary.
    """
    counts = [table.num_rows for table in tables]
    lists: dict[str, int] = {}
    own = [lists.setdefault(_JOIN.join(table.schema.names), len(lists)) for table in tables]
    joined = pa.concat_tables(tables, promote_options="permissive")

    def each_row(values: Sequence[object], kind: pa.DataType) -> pa.Array:
        rows = [value for value, n in zip(values, counts, strict=True) for _ in range(n)]
        return pa.array(rows, type=kind)

    names = pa.DictionaryArray.from_arrays(each_row(own, pa.int32()), pa.array(list(lists)))
    key, mtime, size = zip(*tags, strict=True) if tags else ((), (), ())
    for name, column in (
        (COLUMNS, names),
        (KEY, each_row(key, pa.string())),
        (STAMP, each_row(mtime, pa.int64())),
        (SIZE, each_row(size, pa.int64())),
    ):
        joined = joined.append_column(name, column)
    return joined
