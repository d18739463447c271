"""Requests replayed from a trace file: each row's arrival time, input and output length.

A trace is JSON Lines or CSV, optionally gzipped (`docs/traces.md`). Columns are Mooncake's
(`timestamp` in ms, `input_length`, `output_length`, optional `hash_ids`) or BurstGPT's
(`Timestamp` in s, `Request tokens`, `Response tokens`; its other columns are ignored). A bare
name such as `bursty` is a trace shipped in `sweep/data/traces/` (`scripts/make_traces.py`).

Each row becomes one Prompt of exactly its input length (re-tokenized and checked, special tokens
counted) that carries the row's output length and its arrival in seconds after the first row,
divided by `dataset.speedup`. Rows whose `hash_ids` start alike share those leading blocks of
`dataset.block_size` tokens: a block's tokens are drawn from the block's id and `dataset.seed`,
the rest of a prompt from its row. Tokens are whole words (one token each, starting a word), so
a prompt's text re-tokenizes to the same ids however it is cut. The trace decides the number of
requests; `workload.num_requests` (plus warm-up) is an upper bound: the first rows are taken.
Errors name the file, line and column, and `check` finds them in the driver before Ray starts.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.resources
import io
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets import corpus
from sweep.datasets.prompt import Prompt

SHIPPED = ("bursty", "diurnal")
MAX_WORDS = 4096  # word tokens a prompt draws from: plenty, and found quickly in a large vocab
NO_LIMIT = 10**9  # tokenizers without a known context say 1e30
MAX_FITS = 4  # re-tokenizing rounds for a prompt whose template merges with its text


@dataclass(frozen=True)
class Columns:
    """The columns of one trace format and the unit of its time column."""

    format: str
    time: str
    seconds_per_unit: float
    input: str
    output: str
    hashes: str | None = None


MOONCAKE = Columns("mooncake", "timestamp", 1e-3, "input_length", "output_length", "hash_ids")
BURSTGPT = Columns("burstgpt", "Timestamp", 1.0, "Request tokens", "Response tokens")


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


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Prompts of the trace's first `num` rows (fewer if it is shorter), TraceDatasetConfig.

    Raises:
        DatasetError: naming the file, line and column of a bad row, or a row the tokenizer's
            context or minimum length cannot hold.
    """
    trace = read_trace(resolve(cfg.path))
    limit = None if tokenizer is None else tokenizer.model_max_length
    check_rows(trace, cfg.block_size, limit if limit and limit < NO_LIMIT else None, "tokenizer")
    rows = range(min(num, len(trace.lines)))
    if tokenizer is None:  # the server counts the tokens: lengths are about right, in words
        words = corpus.words_for
        texts = _prompts(trace, rows, cfg, _corpus_words(), " ".join, words(cfg.block_size), words)
        prompts = [Prompt(text, (), 0) for text in texts]
    else:
        prompts = _token_prompts(trace, rows, cfg, tokenizer)
    return [
        dataclasses.replace(
            p, output_tokens=trace.output_len[row], arrival_s=trace.arrival_s[row] / cfg.speedup
        )
        for p, row in zip(prompts, rows, strict=True)
    ]


def check(cfg: Any, max_model_len: int | None) -> None:
    """Read and check the trace before anything runs (the driver calls this at planning)."""
    check_rows(read_trace(resolve(cfg.path)), cfg.block_size, max_model_len, "model.max_model_len")


def resolve(path: str) -> str:
    """A shipped trace's file for its bare name, else the path as given (`~` expanded)."""
    if path in SHIPPED:
        found = sorted((importlib.resources.files("sweep") / "data" / "traces").glob(f"{path}.*"))
        if found:
            return str(found[0])
    return str(Path(path).expanduser())


def read_trace(path: str) -> Trace:
    """Parse a trace file (cached while the file is unchanged).

    Raises:
        DatasetError: one line naming the file and, for a bad row, its line and column.
    """
    try:
        stat = Path(path).stat()
    except OSError as exc:
        hint = f"dataset.path; shipped traces: {', '.join(SHIPPED)}"
        raise DatasetError(f"trace file {path}: {exc.strerror or exc} ({hint})") from None
    return _parse(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parse(path: str, mtime_ns: int, size: int) -> Trace:
    try:
        raw = Path(path).read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read trace file {path}: {exc}") from None
    if not text.strip():
        raise DatasetError(f"trace file {path} is empty")
    columns, rows = _json_rows(path, text) if text.lstrip()[:1] == "{" else _csv_rows(path, text)
    lines, times, inputs, outputs, hashes = [], [], [], [], []
    for line, row in rows:
        at = f"{path}:{line}"
        for name in (columns.time, columns.input, columns.output):
            if row.get(name) in (None, ""):
                raise DatasetError(f"{at}: no value in column {name!r}")
        time = _number(row[columns.time], at, columns.time)
        if times and time < times[-1]:
            raise DatasetError(
                f"{at}: {columns.time} {row[columns.time]} is before the previous row's "
                f"({times[-1]:g}): a trace must be sorted by time"
            )
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
        path, columns, tuple(lines), arrivals, tuple(inputs), tuple(outputs), tuple(hashes)
    )


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
    columns = BURSTGPT if BURSTGPT.input in header or BURSTGPT.time in header else MOONCAKE
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


def check_rows(trace: Trace, block_size: int, context: int | None, source: str) -> None:
    """Every row's prefix blocks fit its input, and input plus output fit the context."""
    for i, line in enumerate(trace.lines):
        at, n, length = f"{trace.path}:{line}", len(trace.hash_ids[i]), trace.input_len[i]
        if n and (n - 1) * block_size >= length:
            raise DatasetError(
                f"{at}: {n} hash_ids of {block_size} tokens (dataset.block_size) make a prefix "
                f"longer than {trace.columns.input} {length}"
            )
        total = length + trace.output_len[i]
        if context is not None and total > context:
            raise DatasetError(
                f"{at}: {trace.columns.input} {length} + {trace.columns.output} "
                f"{trace.output_len[i]} exceeds the model's context of {context} tokens ({source})"
            )


def _prompts(
    trace: Trace,
    rows: range,
    cfg: Any,
    vocab: np.ndarray,
    join: Callable[[list], Any],
    block_len: int,
    row_len: Callable[[int], int],
) -> list:
    """Per row: its blocks' pieces (the same for the same id), then its own, cut to its length.

    The pieces are `vocab` entries (word tokens, or words without a tokenizer), drawn from
    `dataset.seed` and the block's id, or the row's index for the rest.
    """
    blocks: dict[int, np.ndarray] = {}

    def draw(key: list[int], count: int) -> np.ndarray:
        return vocab[np.random.default_rng([cfg.seed, *key]).integers(len(vocab), size=count)]

    made = []
    for row in rows:
        length = row_len(trace.input_len[row])
        parts = []
        for block in trace.hash_ids[row]:
            if block not in blocks:
                blocks[block] = draw([0, block], block_len)
            parts.append(blocks[block])
        have = sum(len(p) for p in parts)
        if have < length:
            parts.append(draw([1, row], length - have))
        made.append(join(np.concatenate(parts)[:length].tolist()))
    return made


def _token_prompts(trace: Trace, rows: range, cfg: Any, tokenizer: Any) -> list[Prompt]:
    """Prompts of exact token lengths, checked by re-tokenizing their text."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    extra = tokenizer.num_special_tokens_to_add(pair=False)
    for row in rows:
        if trace.input_len[row] < extra + 1:
            raise DatasetError(
                f"{trace.path}:{trace.lines[row]}: {trace.columns.input} {trace.input_len[row]} "
                f"is below the minimum {extra + 1} for this tokenizer (1 token + {extra} special)"
            )
    words = _word_tokens(tokenizer, tuple(sorted(special)))
    contents = _prompts(trace, rows, cfg, words, list, cfg.block_size, lambda n: n - extra)
    texts = _decode(tokenizer, contents)
    encoded = tokenizer(texts).input_ids if texts else []
    made = []
    for row, content, text, ids in zip(rows, contents, texts, encoded, strict=True):
        length, extend = trace.input_len[row], np.random.default_rng([cfg.seed, 2, row])
        for _ in range(MAX_FITS):  # a chat template can merge with the first or last word
            if len(ids) == length and _holds(ids, content):
                break
            excess = len(ids) - length
            if excess > 0 and len(content) > excess:
                content = content[:-excess]
            elif excess < 0:
                content = content + words[extend.integers(len(words), size=-excess)].tolist()
            else:
                break
            text = tokenizer.decode(content, skip_special_tokens=False)
            ids = tokenizer(text).input_ids
        if len(ids) != length or not _holds(ids, content):
            raise DatasetError(
                f"{trace.path}:{trace.lines[row]}: no prompt text re-tokenizes to exactly "
                f"{length} tokens with this tokenizer (it merges across word boundaries)"
            )
        made.append(Prompt(text, tuple(ids), length))
    return made


def _holds(ids: list[int], content: list[int]) -> bool:
    """Whether `content` lies unchanged in `ids` (around it: special or template tokens)."""
    n = len(content)
    return any(ids[k : k + n] == content for k in range(len(ids) - n + 1) if ids[k] == content[0])


@functools.cache
def _corpus_words() -> np.ndarray:
    """The distinct words of the bundled corpus, in a fixed order."""
    return np.array(sorted({w for s in corpus.corpus() for w in s.split()}))


def _word_tokens(tokenizer: Any, special: tuple[int, ...]) -> np.ndarray:
    """Ids that are one whole word each, starting it, and re-tokenize alone in any sequence."""
    excluded = set(special)
    candidates = [
        t
        for t, text in enumerate(_decode(tokenizer, [[t] for t in range(len(tokenizer))]))
        if t not in excluded and text.strip().isascii() and text.strip().isalpha()
    ][: 2 * MAX_WORDS]
    tripled = _decode(tokenizer, [[t, t, t] for t in candidates])
    again = tokenizer(tripled, add_special_tokens=False).input_ids if tripled else []
    words = [
        t
        for t, text, ids in zip(candidates, tripled, again, strict=True)
        if ids == [t, t, t] and len(text.split()) == 3
    ][:MAX_WORDS]
    if not words:
        raise DatasetError("the tokenizer has no whole-word tokens to make trace prompts from")
    return np.array(words, dtype=np.int64)


def _decode(tokenizer: Any, sequences: list[list[int]]) -> list[str]:
    """Texts of id sequences, decoded in Rust where the tokenizer is a fast one.

    Transformers' own `batch_decode` checks every id in Python: four times as long here.
    """
    if tokenizer.is_fast:
        return tokenizer.backend_tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences, skip_special_tokens=False)
