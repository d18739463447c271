"""Requests replayed from a trace: each row's arrival time, input and output length.

A trace is a file (`sweep.datasets.trace_file` reads its format: Mooncake, BurstGPT, Azure),
a published trace by name (`sweep.datasets.trace_catalog`: downloaded once and checked), or a
trace shipped in `sweep/data/traces/` (written by `scripts.bench.shipped_traces`). `select`
decides which rows a trial sends: those of the window `dataset.start_s` + `dataset.duration_s`
(seconds of the trace's own time from its first row), the first `num` of them, and of those the
ones that fit the context (`sweep.datasets.context`) by `dataset.too_long`: refuse the trial
(naming the row and how many would not fit), skip them, or cut their input and then their output.

Each selected row becomes one Prompt of exactly its input length (`sweep.datasets.trace_prompts`)
that carries the row's output length and its arrival in seconds after the window's first row,
divided by `dataset.speedup`. `check` runs the same selection in the driver before Ray starts,
and `columns` hands the trial the trace's sha256 and its rows used, skipped and truncated.
"""

from __future__ import annotations

import bisect
import dataclasses
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core import records as R
from sweep.core.errors import DatasetError
from sweep.datasets.context import Context
from sweep.datasets.prompt import Prompt, with_adapters
from sweep.datasets.trace_catalog import CATALOG, local_copy
from sweep.datasets.trace_file import Trace, column_values, read_trace
from sweep.datasets.trace_prompts import minimum_input, text_prompts, token_prompts

SHIPPED = ("bursty", "diurnal")


@dataclass(frozen=True)
class Selection:
    """The rows a trial sends: their indices in the trace, lengths (after any cut), arrivals.

    `arrival_s` is in the trace's seconds after the window's first row (no speedup applied);
    `skipped` and `truncated` count the rows of the window left out or cut to fit the context.
    """

    trace: Trace
    rows: tuple[int, ...]
    input_len: tuple[int, ...]
    output_len: tuple[int, ...]
    arrival_s: tuple[float, ...]
    skipped: int
    truncated: int


def generate(cfg: Any, tokenizer: Any, num: int, context: Context | None = None) -> list[Prompt]:
    """Prompts of the selected rows (at most `num`), TraceDatasetConfig.

    Args:
        cfg: A TraceDatasetConfig.
        tokenizer: The model's tokenizer, or None: text of about each length, in words.
        num: At most this many rows are taken (the first of the window).
        context: The context every request must fit (`sweep.datasets.context`); None: none.

    Raises:
        DatasetError: naming the file, line and column of a bad row, or a row that does not
            fit the context under `too_long=refuse`.
    """
    chosen = select(read(cfg.path), cfg, context, num, minimum_input(tokenizer))
    if tokenizer is None:
        prompts = text_prompts(chosen, cfg)
    else:
        prompts = token_prompts(chosen, cfg, tokenizer)
    prompts = [
        dataclasses.replace(p, output_tokens=out, arrival_s=at / cfg.speedup)
        for p, out, at in zip(prompts, chosen.output_len, chosen.arrival_s, strict=True)
    ]
    if cfg.lora_column:  # each row names its adapter
        names = column_values(chosen.trace, cfg.lora_column, chosen.rows)
        prompts = with_adapters(prompts, names, cfg.lora_column)
    return prompts


def check(cfg: Any, context: Context | None, num: int | None = None) -> None:
    """Read the trace and select its rows before anything runs (the driver, at planning)."""
    chosen = select(read(cfg.path), cfg, context, num, 1)
    if cfg.lora_column:
        column_values(chosen.trace, cfg.lora_column, chosen.rows)


def columns(cfg: Any, context: Context | None, num: int) -> dict[str, Any]:
    """The summary's trace columns: the file's sha256 and the rows used, skipped, truncated.

    The counts do not depend on the tokenizer (a row is cut or left out when it does not fit,
    whatever its minimum), so a trial whose prompts came from the cache loads none.
    """
    chosen = select(read(cfg.path), cfg, context, num, 1)
    return {
        R.TRACE_SHA256: chosen.trace.sha256,
        R.TRACE_ROWS_USED: len(chosen.rows),
        R.TRACE_ROWS_SKIPPED: chosen.skipped,
        R.TRACE_ROWS_TRUNCATED: chosen.truncated,
    }


def read(path: str) -> Trace:
    """The trace `dataset.path` names, parsed (a published one downloaded and checked first)."""
    return read_trace(resolve(path))


def resolve(path: str) -> str:
    """The file of a shipped or published trace's name, else the path as given (`~` expanded).

    Raises:
        DatasetError: a bare name (no folder, no suffix) that is no trace's and no file.
    """
    if path in SHIPPED:
        found = sorted((importlib.resources.files("sweep") / "data" / "traces").glob(f"{path}.*"))
        if found:
            return str(found[0])
    if path in CATALOG:
        return local_copy(path)
    file = Path(path).expanduser()
    if not file.exists() and file.name == path and not file.suffix:
        raise DatasetError(
            f"unknown trace {path!r} (dataset.path): not a file, nor a published trace "
            f"({', '.join(CATALOG)}) or a shipped one ({', '.join(SHIPPED)})"
        )
    return str(file)


def select(
    trace: Trace, cfg: Any, context: Context | None, num: int | None, minimum: int
) -> Selection:
    """The rows a trial sends (see the module docstring); `minimum` is the shortest input.

    Raises:
        DatasetError: a window past the trace's end or without rows, a row whose prefix blocks
            overflow its input, or (`too_long=refuse`) a row that does not fit the context.
    """
    check_rows(trace, cfg.block_size)
    window = _window(trace, cfg)[: None if num is None else max(num, 0)]
    limit = None if context is None else context.tokens
    rows, inputs, outputs, skipped, truncated = [], [], [], 0, 0
    over = [i for i in window if limit is not None and _total(trace, i) > limit]
    if over and cfg.too_long == "refuse":
        first = over[0]
        raise DatasetError(
            f"{trace.path}:{trace.lines[first]}: {trace.columns.input} {trace.input_len[first]} "
            f"+ {trace.columns.output} {trace.output_len[first]} exceeds the context of {limit} "
            f"tokens ({context.source}); {len(over)} of the {len(window)} rows taken do not fit: "
            "set dataset.too_long=skip or truncate"
        )
    too_long = set(over)
    for i in window:
        length, output = trace.input_len[i], trace.output_len[i]
        if i in too_long and cfg.too_long == "skip":
            skipped += 1
            continue
        if i in too_long:  # truncate: the input first, down to its minimum; then the output
            length = max(min(length, limit - output), minimum)
            output = limit - length
            if output < 1:
                raise DatasetError(
                    f"{trace.path}:{trace.lines[i]}: the context of {limit} tokens "
                    f"({context.source}) cannot hold an input of {minimum} and one output token"
                )
            truncated += 1
        if length < minimum:
            raise DatasetError(
                f"{trace.path}:{trace.lines[i]}: {trace.columns.input} {length} is below the "
                f"minimum {minimum} for this tokenizer (1 token + {minimum - 1} special)"
            )
        rows.append(i)
        inputs.append(length)
        outputs.append(output)
    origin = trace.arrival_s[window[0]] if window else 0.0
    arrivals = tuple(trace.arrival_s[i] - origin for i in rows)
    return Selection(
        trace, tuple(rows), tuple(inputs), tuple(outputs), arrivals, skipped, truncated
    )


def _total(trace: Trace, i: int) -> int:
    return trace.input_len[i] + trace.output_len[i]


def _window(trace: Trace, cfg: Any) -> list[int]:
    """Indices of the rows at `start_s` <= offset < `start_s + duration_s`."""
    start, end = cfg.start_s, math.inf if cfg.duration_s is None else cfg.start_s + cfg.duration_s
    last = trace.arrival_s[-1]
    if start > last:
        raise DatasetError(
            f"dataset.start_s={start:g} is past the end of trace {trace.path}: its last row "
            f"is {last:.3f} s after its first"
        )
    window = list(range(bisect.bisect_left(trace.arrival_s, start),
                        bisect.bisect_left(trace.arrival_s, end)))  # fmt: skip
    if not window:
        raise DatasetError(
            f"trace {trace.path} has no rows from {start:g} s to {end:g} s "
            "(dataset.start_s, dataset.duration_s)"
        )
    return window


def check_rows(trace: Trace, block_size: int) -> None:
    """Every row's prefix blocks fit its input (`dataset.block_size` tokens each)."""
    for i, line in enumerate(trace.lines):
        n, length = len(trace.hash_ids[i]), trace.input_len[i]
        if n and (n - 1) * block_size >= length:
            raise DatasetError(
                f"{trace.path}:{line}: {n} hash_ids of {block_size} tokens (dataset.block_size) "
                f"make a prefix longer than {trace.columns.input} {length}"
            )
