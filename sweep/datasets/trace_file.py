"""A trace file read into rows: each row's line, arrival, input and output length, prefix blocks.

The format is read from the file (`docs/traces.md`): JSON Lines are Mooncake's (`timestamp` in
ms, `input_length`, `output_length`, optional `hash_ids`); a CSV is Azure's LLM inference traces
(`TIMESTAMP` a date-time such as `2023-11-16 18:15:46.6805900` or
`2024-05-10 00:00:00.009930+00:00`, `ContextTokens`, `GeneratedTokens`) when its header has
`TIMESTAMP` or `ContextTokens`, BurstGPT's (`Timestamp` in s, `Request tokens`,
`Response tokens`) when it has `Timestamp` or `Request tokens`, else Mooncake's columns. Other
columns are ignored. Files may be gzipped. Every error is one line naming the file, line and
column. A well-formed Azure file is read column by column with pyarrow (a week of it, 16.8 M
rows, would take minutes row by row); any other, row by row. `sweep.datasets.trace` makes
prompts of the rows.
"""

from __future__ import annotations

import csv
import datetime
import functools
import gzip
import hashlib
import io
import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv

from sweep.core.errors import DatasetError

# Azure's TIMESTAMP: a date, a time, up to 9 fractional digits, an optional UTC offset.
DATE_TIME = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>[+-]\d{2}:\d{2}|Z)?"
)
ANCHORED = f"^{DATE_TIME.pattern}$"  # the same, for pyarrow's whole-column match
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Columns:
    """The columns of one trace format and how its time column reads (a unit, or dates)."""

    format: str
    time: str
    seconds_per_unit: float
    input: str
    output: str
    hashes: str | None = None
    dates: bool = False  # the time column is a date-time string, not a number


MOONCAKE = Columns("mooncake", "timestamp", 1e-3, "input_length", "output_length", "hash_ids")
BURSTGPT = Columns("burstgpt", "Timestamp", 1.0, "Request tokens", "Response tokens")
AZURE = Columns("azure", "TIMESTAMP", 1.0, "ContextTokens", "GeneratedTokens", dates=True)


@dataclass(frozen=True)
class Trace:
    """A parsed trace: per row its file line, arrival (s after the first row) and lengths."""

    path: str
    columns: Columns
    lines: tuple[int, ...]
    arrival_s: tuple[float, ...]
    input_len: tuple[int, ...]
    output_len: tuple[int, ...]
    hash_ids: tuple[tuple[int, ...], ...]
    sha256: str = ""  # of the file's bytes as stored (gzipped where it is)


def read_trace(path: str) -> Trace:
    """Parse a trace file (cached while the file is unchanged).

    Raises:
        DatasetError: one line naming the file and, for a bad row, its line and column.
    """
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise DatasetError(f"trace file {path}: {exc.strerror or exc} (dataset.path)") from None
    return _parse(path, stat.st_mtime_ns, stat.st_size)


def _bytes_and_text(path: str) -> tuple[bytes, str]:
    """The file's bytes as stored and its text (gunzipped where it is gzipped)."""
    try:
        raw = Path(path).read_bytes()
        return raw, (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read trace file {path}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _parse(path: str, mtime_ns: int, size: int) -> Trace:
    raw, text = _bytes_and_text(path)
    if not text.strip():
        raise DatasetError(f"trace file {path} is empty")
    if text.lstrip()[:1] != "{":
        fast = _azure_columnar(path, text, hashlib.sha256(raw).hexdigest())
        if fast is not None:
            return fast
    columns, rows = _json_rows(path, text) if text.lstrip()[:1] == "{" else _csv_rows(path, text)
    time_of = _date_seconds if columns.dates else _number
    lines, times, inputs, outputs, hashes = [], [], [], [], []
    previous = ""
    for line, row in rows:
        at = f"{path}:{line}"
        for name in (columns.time, columns.input, columns.output):
            if row.get(name) in (None, ""):
                raise DatasetError(f"{at}: no value in column {name!r}")
        time = time_of(row[columns.time], at, columns.time)
        if times and time < times[-1]:
            raise DatasetError(
                f"{at}: {columns.time} {row[columns.time]} is before the previous row's "
                f"({previous}): a trace must be sorted by time"
            )
        previous = row[columns.time] if columns.dates else f"{time:g}"
        lines.append(line)
        times.append(time)
        inputs.append(_length(row[columns.input], at, columns.input))
        outputs.append(_length(row[columns.output], at, columns.output))
        hashes.append(_hash_ids(row.get(columns.hashes), at) if columns.hashes else ())
    if not lines:
        raise DatasetError(f"trace file {path} has no rows")
    unit = columns.seconds_per_unit
    arrivals = tuple((t - times[0]) * unit for t in times)
    return Trace(
        path,
        columns,
        tuple(lines),
        arrivals,
        tuple(inputs),
        tuple(outputs),
        tuple(hashes),
        hashlib.sha256(raw).hexdigest(),
    )


def column_values(trace: Trace, column: str, rows: Sequence[int]) -> list[str]:
    """The values of `column` in the trace's `rows` (indices, as `Trace.lines` orders them).

    For a column the trace's format does not read itself, such as each row's LoRA adapter.

    Raises:
        DatasetError: the file has no such column, or one of the rows has no value in it.
    """
    text = _bytes_and_text(trace.path)[1]
    read_rows = _json_rows if text.lstrip()[:1] == "{" else _csv_rows
    _, parsed = read_rows(trace.path, text)
    by_line = dict(parsed)
    if parsed and column not in parsed[0][1]:
        have = ", ".join(repr(n) for n in parsed[0][1]) or "none"
        raise DatasetError(f"{trace.path}: no column {column!r} (columns: {have})")
    values = []
    for index in rows:
        line = trace.lines[index]
        value = by_line[line].get(column)
        if value is None or str(value).strip() == "":
            raise DatasetError(f"{trace.path}:{line}: no value in column {column!r}")
        values.append(str(value).strip())
    return values


def _azure_columnar(path: str, text: str, sha256: str) -> Trace | None:
    """An Azure trace read column by column (a week of it is 16.8 M rows), or None.

    None where the file is not Azure's, or is not plainly well formed (a quote, a blank line, a
    missing or malformed value, a length < 1, rows out of order): the row-by-row reader then
    reads it, and names the row at fault.
    """
    head, _, body = text.partition("\n")
    header = [name.strip() for name in head.split(",")]
    if AZURE.input not in header and AZURE.time not in header:
        return None
    if '"' in text or "\n\n" in body.rstrip("\n") or "\r" in text:
        return None
    names = [AZURE.time, AZURE.input, AZURE.output]
    try:
        table = pa_csv.read_csv(
            io.BytesIO(text.encode()),
            convert_options=pa_csv.ConvertOptions(
                column_types={AZURE.time: pa.string()}, include_columns=names
            ),
        )
        stamps = table[AZURE.time]
        if stamps.null_count or not pc.all(pc.match_substring_regex(stamps, ANCHORED)).as_py():
            return None
        zoned = pc.any(pc.match_substring_regex(stamps, r"(Z|[+-]\d\d:\d\d)$")).as_py()
        times = pc.cast(stamps, pa.timestamp("ns", "UTC" if zoned else None))
        nanos = times.cast(pa.int64()).to_numpy()
        inputs, outputs = (_whole(table[name]) for name in names[1:])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError, ValueError):
        return None
    if inputs is None or outputs is None or len(nanos) == 0 or np.any(np.diff(nanos) < 0):
        return None
    count = len(nanos)
    return Trace(
        path,
        AZURE,
        tuple(range(2, count + 2)),
        tuple(((nanos - nanos[0]) / 1e9).tolist()),
        tuple(inputs.tolist()),
        tuple(outputs.tolist()),
        ((),) * count,
        sha256,
    )


def _whole(column: Any) -> np.ndarray | None:
    """A length column as integers >= 1, or None where a value is not one."""
    if column.null_count or not pa.types.is_integer(column.type):
        return None
    values = column.to_numpy()
    return values if len(values) == 0 or values.min() >= 1 else None


def _json_rows(path: str, text: str) -> tuple[Columns, list[tuple[int, dict]]]:
    rows = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            row = json.loads(content)
        except ValueError as exc:
            raise DatasetError(f"{path}:{line}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{line}: not a JSON object")
        rows.append((line, row))
    if rows:
        _require(path, MOONCAKE, rows[0][1].keys(), f"{path}:{rows[0][0]}")
    return MOONCAKE, rows


def _csv_rows(path: str, text: str) -> tuple[Columns, list[tuple[int, dict]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    columns = next(
        (c for c in (AZURE, BURSTGPT) if c.input in header or c.time in header), MOONCAKE
    )
    _require(path, columns, header, path)
    # The reader's line_num is the line the row ended on: a row's own line for these files.
    return columns, [(reader.line_num, row) for row in reader]


def _require(path: str, columns: Columns, found: Any, where: str) -> None:
    for name in (columns.time, columns.input, columns.output):
        if name not in found:
            have = ", ".join(repr(n) for n in found) or "none"
            raise DatasetError(
                f"{where}: no column {name!r} ({columns.format} trace; columns: {have})"
            )


def _number(value: Any, at: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise DatasetError(f"{at}: column {column!r} must be a number, got {value!r}")
    return number


def _date_seconds(value: Any, at: str, column: str) -> float:
    """Seconds since 1970 of an Azure date-time (no zone: read as UTC), to the nanosecond."""
    found = DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    try:
        if found is None:
            raise ValueError
        zone = found["zone"] or "+00:00"
        moment = datetime.datetime.fromisoformat(found["base"] + zone.replace("Z", "+00:00"))
    except ValueError:
        raise DatasetError(
            f"{at}: column {column!r} must be a date-time such as "
            f"'2023-11-16 18:15:46.6805900', got {value!r}"
        ) from None
    whole = (moment - EPOCH) // datetime.timedelta(seconds=1)
    return whole + float(f"0.{found['fraction'] or 0}")


def _length(value: Any, at: str, column: str) -> int:
    number = _number(value, at, column)
    if number != int(number) or number < 1:
        raise DatasetError(f"{at}: column {column!r} must be a whole number >= 1, got {value!r}")
    return int(number)


def _hash_ids(value: Any, at: str) -> tuple[int, ...]:
    if value in (None, ""):
        return ()
    try:
        ids = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
        raise DatasetError(f"{at}: column 'hash_ids' must be a list of integers >= 0")
    return tuple(ids)
