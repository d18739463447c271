"""Read a sweep's results folder into pandas DataFrames.

A results folder is `results/<sweep>/<deployment_id>/<trial_id>/{summary,requests,timeseries,
server_metrics,timeslices}.parquet` (and `stages.parquet` for staged trials, `adapters.parquet`
for trials whose requests went to LoRA adapters); a trial counts
only once its summary.parquet exists (design.md, "Results layout"); a deployment's
`quality.parquet` sits beside its trials. Each loader concatenates one
kind of file over all complete trials, filling the columns that only some trials have (a
backend's own settings, `env.*`) with nulls, and hands on one frame.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core import records as rec
from sweep.core.errors import SweepError


def load_summary(results_dir: str | Path) -> pd.DataFrame:
    """One row per trial: flattened config, identity, outcome, metrics and `env.*` columns.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.SUMMARY_FILE), schema=None)


def load_requests(results_dir: str | Path) -> pd.DataFrame:
    """Request records of every complete trial (`records.REQUESTS_SCHEMA` columns).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.REQUESTS_FILE), schema=rec.REQUESTS_SCHEMA)


def load_timeseries(results_dir: str | Path) -> pd.DataFrame:
    """Resource samples of every complete trial in long format (`records.TIMESERIES_SCHEMA`).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.TIMESERIES_FILE), schema=rec.TIMESERIES_SCHEMA)


def load_server_metrics(results_dir: str | Path) -> pd.DataFrame:
    """The /metrics capture of every complete trial (`records.SERVER_METRICS_SCHEMA`).

    Trials written before the capture existed, and trials without a server, add no row.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(
        _trial_files(results_dir, rec.SERVER_METRICS_FILE), schema=rec.SERVER_METRICS_SCHEMA
    )


def load_timeslices(results_dir: str | Path) -> pd.DataFrame:
    """Metrics per time slice of every complete trial (`records.TIMESLICES_SCHEMA`).

    Trials written before time slices existed add no row.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.TIMESLICES_FILE), schema=rec.TIMESLICES_SCHEMA)


def load_stages(results_dir: str | Path) -> pd.DataFrame:
    """One row per stage of every complete trial that ran `workload.stages` (none: empty).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.STAGES_FILE), schema=None)


def load_adapters(results_dir: str | Path) -> pd.DataFrame:
    """One row per LoRA adapter of every complete trial whose requests went to adapters.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    return _concat(_trial_files(results_dir, rec.ADAPTERS_FILE), schema=None)


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


def _trial_files(results_dir: str | Path, file_name: str) -> list[Path]:
    """`file_name` in every complete trial folder, in a stable (path) order."""
    root = Path(results_dir)
    if not root.is_dir():
        raise SweepError(f"results folder not found: {root}")
    trials = sorted(path.parent for path in root.glob(f"*/*/{rec.SUMMARY_FILE}"))
    if not trials:
        raise SweepError(
            f"no trial results in {root}: expected <deployment_id>/<trial_id>/{rec.SUMMARY_FILE}"
        )
    # An interrupted trial may have left other files without a summary; it is not complete.
    return [trial / file_name for trial in trials if (trial / file_name).is_file()]


def _concat(paths: list[Path], schema: pa.Schema | None) -> pd.DataFrame:
    if not paths:
        return (schema or pa.schema([])).empty_table().to_pandas()
    tables = [pq.read_table(path) for path in paths]
    # Trials of different backends carry different config columns, and a column that is null in
    # one trial is typed null there: permissive promotion unifies both.
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()
