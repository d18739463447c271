"""Rows computed from each trial, kept between runs of the analysis: a re-run reads what is new.

A cache is one Parquet file, `<cache_dir>/<name>.parquet`, holding the rows of every trial seen
so far with two key columns: the trial's folder (relative to the results folder) and the
modification time of its summary. A trial is read again only when it is new or its summary was
rewritten (a resumed or overwritten trial); rows of trials no longer in the folder are dropped.
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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweep.core import records as rec

log = logging.getLogger(__name__)

CACHE_DIR = ".analysis_cache"  # beside the report, under the folder it is written to
SUMMARY_CACHE = "summaries-v1"  # the raw summary rows
KEY = "_cache.trial"
STAMP = "_cache.summary_mtime_ns"

# trial folders and their (key, stamp) -> their rows in one table, tagged by `keyed`
Reader = Callable[[Sequence[Path], Sequence[tuple[str, int]]], pa.Table]


class TrialCache:
    """One kind of per-trial rows, cached under `cache_dir`."""

    def __init__(self, cache_dir: str | Path, name: str) -> None:
        self.path = Path(cache_dir) / f"{name}.parquet"
        self.read_trials = 0  # trials read by the last `rows` call (not found in the cache)

    def rows(self, root: Path, trials: Sequence[Path], read: Reader) -> pa.Table:
        """Every trial's rows in `trials` order: from the cache, else by `read` (then kept)."""
        keys = [trial.relative_to(root).as_posix() for trial in trials]
        stamps = [(trial / rec.SUMMARY_FILE).stat().st_mtime_ns for trial in trials]
        wanted = dict(zip(keys, stamps, strict=True))
        cached = self._load()
        if cached is not None:
            fresh = [
                wanted.get(key) == stamp
                for key, stamp in zip(
                    cached[KEY].to_pylist(), cached[STAMP].to_pylist(), strict=True
                )  # fmt: skip
            ]
            kept = cached.filter(pa.array(fresh, type=pa.bool_()))
        else:
            kept = None
        known = set() if kept is None else set(kept[KEY].to_pylist())
        missing = [i for i, key in enumerate(keys) if key not in known]
        self.read_trials = len(missing)
        new = []
        if missing:
            tags = [(keys[i], stamps[i]) for i in missing]
            new.append(read([trials[i] for i in missing], tags))
        parts = ([kept] if kept is not None and kept.num_rows else []) + new
        if not parts:
            return pa.table({})
        table = pa.concat_tables(parts, promote_options="permissive")
        order = {key: i for i, key in enumerate(keys)}
        table = table.take(pc.sort_indices(pa.array([order[k] for k in table[KEY].to_pylist()])))
        if new or cached is None or kept.num_rows != cached.num_rows:
            self._save(table)
        return table.drop_columns([KEY, STAMP])

    def _load(self) -> pa.Table | None:
        if not self.path.is_file():
            return None
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("analysis cache %s unreadable (%s); reading the trials", self.path, exc)
            return None
        return table if {KEY, STAMP} <= set(table.column_names) else None

    def _save(self, table: pa.Table) -> None:
        tmp = self.path.with_name(f"{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only or full folder: the analysis goes on without
            log.warning("analysis cache %s not written: %s", self.path, exc)
            tmp.unlink(missing_ok=True)


def keyed(table: pa.Table, key: str, stamp: int) -> pa.Table:
    """`table` (rows of one trial) with the trial's key columns, as `TrialCache` keeps them."""
    n = table.num_rows
    table = table.append_column(KEY, pa.array([key] * n, type=pa.string()))
    return table.append_column(STAMP, pa.array([stamp] * n, type=pa.int64()))
