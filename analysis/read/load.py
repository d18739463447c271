"""Read a sweep's results folder into pandas DataFrames.

A results folder is `results/<sweep>/<deployment_id>/<trial_id>/{summary,requests,timeseries,
server_metrics,timeslices}.parquet` (and `stages.parquet` for staged trials, `adapters.parquet`
for trials whose requests went to LoRA adapters); a trial counts
only once its summary.parquet exists (design.md, "Results layout"); a deployment's
`quality.parquet` sits beside its trials. Each loader concatenates one kind of file over the
complete trials, filling the columns that only some trials have (a backend's own settings,
`env.*`) with nulls, and hands on one frame. Request records, time series and time slices can
be read for chosen trials and columns only, so a report of 10,000 trials never holds them all;
summaries can be cached per trial (`analysis.read.trial_cache`). Every loader takes a results folder
or its listing (`analysis.read.trial_folder`): a report lists its folder once and hands the listing
to each. Files are read by a few threads, or past `PROCESS_READ_FROM` files by a pool of processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.read.trial_cache import SUMMARY_CACHE, Tag, TrialCache, keyed
from analysis.read.trial_folder import TrialFolder, trial_folder
from sweep.core import records as rec
from sweep.core.errors import SweepError

log = logging.getLogger(__name__)
Results = str | Path | TrialFolder  # a results folder, or its listing

READERS = min(8, os.cpu_count() or 1)  # threads, or processes, reading a folder's files
CHUNK = 500  # files read and joined at once
PROCESS_READ_FROM = 2000  # files: from this many on, read by a pool of processes


def load_summary(results_dir: Results, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per trial: flattened config, identity, outcome, metrics and `env.*` columns.

    With `cache_dir`, the rows read are kept there (`analysis.read.trial_cache`): a later call reads
    only the summaries of trials new or rewritten since, so analysing a sweep again after 100
    more trials reads 100 files, not the whole folder.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    folder = trial_folder(results_dir)
    if cache_dir is None:
        return _concat(folder.paths(rec.SUMMARY_FILE), schema=None)
    cache = TrialCache(cache_dir, SUMMARY_CACHE)
    table = cache.rows(
        folder, lambda new, tags: _read_joined([t / rec.SUMMARY_FILE for t in new], tags=tags)
    )
    log.info(
        "read %d of %d trial summaries (the rest from the cache %s)",
        cache.read_trials,
        len(folder.trials),
        cache.path,
    )
    return table.to_pandas()


def load_requests(
    results_dir: Results,
    trial_ids: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Request records of every complete trial (`records.REQUESTS_SCHEMA` columns).

    Args:
        results_dir: the sweep's results folder.
        trial_ids: read only these trials' records (None: every trial's); the report asks only
            for the trials whose requests it needs, so a large sweep is never held at once.
        columns: read only these columns (those a file lacks are left out; None: all).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    paths = trial_folder(results_dir).paths(rec.REQUESTS_FILE, trial_ids)
    return _concat(paths, schema=rec.REQUESTS_SCHEMA, columns=columns)


def load_timeseries(results_dir: Results, trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Resource samples of every complete trial in long format (`records.TIMESERIES_SCHEMA`).

    With `trial_ids`, only those trials' samples (the report draws the timelines of a few).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    paths = trial_folder(results_dir).paths(rec.TIMESERIES_FILE, trial_ids)
    return _concat(paths, schema=rec.TIMESERIES_SCHEMA)


def load_server_metrics(results_dir: Results) -> pd.DataFrame:
    """The /metrics capture of every complete trial (`records.SERVER_METRICS_SCHEMA`).

    Trials written before the capture existed, and trials without a server, add no row.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(
        trial_folder(results_dir).paths(rec.SERVER_METRICS_FILE), schema=rec.SERVER_METRICS_SCHEMA
    )


def load_timeslices(results_dir: Results, trial_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Metrics per time slice of every complete trial (`records.TIMESLICES_SCHEMA`).

    With `trial_ids`, only those trials' slices.

    Trials written before time slices existed add no row.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    paths = trial_folder(results_dir).paths(rec.TIMESLICES_FILE, trial_ids)
    return _concat(paths, schema=rec.TIMESLICES_SCHEMA)


def load_stages(results_dir: Results) -> pd.DataFrame:
    """One row per stage of every complete trial that ran `workload.stages` (none: empty).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(trial_folder(results_dir).paths(rec.STAGES_FILE), schema=None)


def load_adapters(results_dir: Results) -> pd.DataFrame:
    """One row per LoRA adapter of every complete trial whose requests went to adapters.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(trial_folder(results_dir).paths(rec.ADAPTERS_FILE), schema=None)


def load_quality(results_dir: str | Path) -> pd.DataFrame:
    """Every deployment's scores on the quality text set (`records.QUALITY_SCHEMA`; none: empty).

    Raises:
        SweepError: the folder does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise SweepError(f"results folder not found: {root}")
    paths = sorted(root.glob(f"*/{rec.QUALITY_FILE}"))
    return _concat(paths, schema=rec.QUALITY_SCHEMA)


def _read_tables(paths: Sequence[Path], columns: Sequence[str] | None = None) -> list[pa.Table]:
    """The Parquet files at `paths`, read by a few threads (Arrow reads without the GIL)."""

    def read(path: Path) -> pa.Table:
        with pq.ParquetFile(path) as parquet:
            names = parquet.schema_arrow.names
            wanted = None if columns is None else [c for c in columns if c in names]
            return parquet.read(columns=wanted)

    if len(paths) < 2 * READERS:
        return [read(path) for path in paths]
    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(read, paths))


def _read_chunk(
    paths: Sequence[Path],
    columns: Sequence[str] | None = None,
    tags: Sequence[Tag] | None = None,
) -> pa.Table:
    """Some files read and joined into one chunk (each tagged for the cache when `tags`)."""
    tables = _read_tables(paths, columns)
    if tags is not None:
        return keyed(tables, tags).combine_chunks()
    # Trials of different backends carry different config columns, and a column that is null in
    # one trial is typed null there: permissive promotion unifies both.
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _read_joined(
    paths: Sequence[Path],
    columns: Sequence[str] | None = None,
    tags: Sequence[Tag] | None = None,
) -> pa.Table:
    """The files at `paths` as one table, `CHUNK` files at a time.

    Many small tables of many columns cost far more memory than one, so each chunk is joined
    as it is read. Reading a small Parquet file is mostly Python work (its footer, its schema),
    so past `PROCESS_READ_FROM` files the chunks are read by a pool of processes, one per core.
    """
    starts = range(0, len(paths), CHUNK)
    chunks = [
        (paths[i : i + CHUNK], columns, None if tags is None else tags[i : i + CHUNK])
        for i in starts
    ]
    if len(paths) >= PROCESS_READ_FROM and READERS > 1:
        with ProcessPoolExecutor(READERS, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_read_chunk, *zip(*chunks, strict=True)))
    else:
        parts = [_read_chunk(*chunk) for chunk in chunks]
    return pa.concat_tables(parts, promote_options="permissive")


def _concat(
    paths: list[Path], schema: pa.Schema | None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    if not paths:
        empty = (schema or pa.schema([])).empty_table()
        if columns is not None:
            empty = empty.select([c for c in columns if c in empty.column_names])
        return empty.to_pandas()
    return _read_joined(paths, columns).to_pandas()
