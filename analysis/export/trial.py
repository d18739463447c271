"""One trial as the export formats read it: its summary row and the requests it counts.

`ExportTrial` pairs a trial's summary row with its requests inside the steady-state window
(`sweep.core.summary.windowed`: the requests `num_requests` counts, failed ones included), in
request order, and reads both the way every format needs: numbers and counts of the row (null
where the trial never measured them), the latency samples the summary's statistics are taken
over, the load it offered, its times, and its config values as plain Python for YAML and JSON.
Every figure comes from the summary or from the same requests the summary was computed from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd

from analysis.read.columns import number
from sweep.core import records as rec
from sweep.core.config import streams_of
from sweep.core.summary import latency_samples_ms, measured, windowed


def plain(value: object) -> object:
    """A cell as plain Python (numbers, text, lists, dicts) for YAML and JSON; None for nulls."""
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def spread(values: np.ndarray) -> dict[str, float]:
    """Standard deviation (numpy's, over the population), min and max; {} without a value."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {}
    return {"stddev": float(values.std()), "min": float(values.min()), "max": float(values.max())}


@dataclass(frozen=True)
class ExportTrial:
    """One trial: its summary row and its windowed requests, in request order."""

    row: Mapping[str, object]
    requests: pd.DataFrame = field(repr=False)

    @classmethod
    def of(cls, row: Mapping[str, object], requests: pd.DataFrame) -> ExportTrial:
        """The trial of summary `row`, from its request records (`load_requests`)."""
        inside = windowed(requests)
        if rec.REQUEST_IDX in inside:
            inside = inside.sort_values(rec.REQUEST_IDX, kind="stable")
        return cls(dict(row), inside.reset_index(drop=True))

    @property
    def trial_id(self) -> str:
        """The trial's id: its files' names."""
        return str(self.row[rec.TRIAL_ID])

    @property
    def failed(self) -> bool:
        """Whether the trial was recorded as failed (`trial_status`)."""
        return self.text(rec.TRIAL_STATUS) != rec.STATUS_OK

    def value(self, column: str) -> object:
        """The row's value in `column` as plain Python; None when null or absent."""
        return plain(self.row.get(column))

    def text(self, column: str) -> str | None:
        """The row's value in `column` as text; None when null or absent."""
        value = self.value(column)
        return None if value is None else str(value)

    def number(self, column: str) -> float | None:
        """The row's value in `column` as a float; None when null, absent or not a number."""
        return number(self.row.get(column))

    def integer(self, column: str) -> int | None:
        """The row's value in `column` as an int; None when null, absent or not a number."""
        value = self.number(column)
        return None if value is None else int(value)

    def flag(self, column: str) -> bool:
        """Whether the row says True in `column` (null, absent or anything else: False)."""
        return self.value(column) is True

    @cached_property
    def ok(self) -> pd.DataFrame:
        """The completed requests in the window: those every metric is measured on."""
        return measured(self.requests)

    @property
    def num_requests(self) -> int:
        """Requests the trial counts (`num_requests`; without one, its request records)."""
        total = self.integer(rec.NUM_REQUESTS)
        return len(self.requests) if total is None else total

    @property
    def completed(self) -> int:
        """Completed requests (`completed_requests`; without one, its request records)."""
        done = self.integer(rec.COMPLETED_REQUESTS)
        return len(self.ok) if done is None else done

    @property
    def failed_requests(self) -> int:
        """Failed requests (`failed_requests`; without one, its request records)."""
        failed = self.integer(rec.FAILED_REQUESTS)
        return len(self.requests) - len(self.ok) if failed is None else failed

    def rate(self, column: str) -> float | None:
        """A per-second summary figure, only where the trial spanned time (`duration_s` > 0).

        A trial that measured no span (nothing completed) has no rate: its 0 would read as a
        measurement.
        """
        duration = self.number(rec.DURATION_S)
        return self.number(column) if duration is not None and duration > 0 else None

    @property
    def input_token_rate(self) -> float | None:
        """Input tokens of the completed requests per second of the throughputs' span."""
        duration, tokens = self.number(rec.DURATION_S), self.number(rec.INPUT_TOKENS_TOTAL)
        if duration is None or duration <= 0 or tokens is None:
            return None
        return tokens / duration

    @cached_property
    def latency_samples_ms(self) -> dict[str, np.ndarray]:
        """TTFT, TPOT, ITL, E2E samples in ms (`records.LATENCY_METRICS` keys), as summarized."""
        return latency_samples_ms(self.requests)

    def latency_ms(self, metric: str, stat: str) -> float | None:
        """A latency statistic of the summary (`records.latency_column`), in ms."""
        return self.number(rec.latency_column(metric, stat))

    @property
    def model_id(self) -> str | None:
        """The model as the deployment loaded it (hub id or folder), else as the sweep named it."""
        return self.text(rec.MODEL_RESOLVED_PATH) or self.text(rec.MODEL_NAME)

    @property
    def streams(self) -> int | None:
        """Requests the load kept in flight (`streams_of`; None: an uncapped open loop)."""
        mode = self.text(rec.WORKLOAD_NAME) or ""
        concurrency = self.integer(rec.WORKLOAD_CONCURRENCY)
        return streams_of(mode, concurrency, self.integer(rec.WORKLOAD_BATCH_SIZE))

    @property
    def request_rate(self) -> float | None:
        """The open loop's arrival rate in req/s; None for any other load."""
        rate = self.number(rec.WORKLOAD_REQUEST_RATE)
        return rate if rate is not None and rate > 0 else None

    @property
    def started(self) -> datetime | None:
        """When the trial started (UTC); None where not recorded."""
        started = self.number(rec.STARTED_UNIX_S)
        return None if started is None else datetime.fromtimestamp(started, UTC)

    @property
    def ended(self) -> datetime | None:
        """When the trial ended: its start plus its wall time (UTC); None where not recorded."""
        wall = self.number(rec.WALL_S)
        if self.started is None or wall is None:
            return None
        return self.started + timedelta(seconds=wall)

    @property
    def error(self) -> str | None:
        """`<error_kind>: <error_message>` of a failed trial; None for a trial that ran."""
        if not self.failed:
            return None
        parts = [self.text(rec.ERROR_KIND), self.text(rec.ERROR_MESSAGE)]
        return ": ".join(part for part in parts if part) or rec.STATUS_FAILED

    def config(self, *groups: str) -> dict[str, object]:
        """The row's non-null columns of the config `groups` (and `env`...), sorted by name."""
        prefixes = tuple(f"{group}{rec.CONFIG_SEPARATOR}" for group in groups)
        values = {
            column: plain(value)
            for column, value in self.row.items()
            if column.startswith(prefixes)
        }
        return {column: values[column] for column in sorted(values) if values[column] is not None}

    def request_column(self, column: str, requests: pd.DataFrame | None = None) -> list[object]:
        """A request column as plain Python, one entry per request (None where null or absent)."""
        frame = self.requests if requests is None else requests
        if column not in frame:
            return [None] * len(frame)
        return [plain(value) for value in frame[column].tolist()]
