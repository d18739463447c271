"""Prompts from one text column of a Hugging Face dataset split.

The source is a hub id (e.g. `roneneldan/TinyStories`), a local directory written by
`save_to_disk`, or a packaged builder such as `json` with local `data_files`. Loading
problems surface as one DatasetError line that says how to work offline. This module hands
on Prompts in dataset order.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from typing import Any

from sweep.core.errors import DatasetError
from sweep.datasets.prompt import Prompt, cycle, encode

OFFLINE_HINT = (
    "no hub access? point dataset.path at a local copy or dataset.data_files at local files"
)


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Make `num` prompts from `cfg.column` of a dataset split (HFDatasetConfig).

    Empty strings are skipped; at most the first `cfg.max_rows` texts are used, and they
    repeat when `num` exceeds them.

    Args:
        cfg: An HFDatasetConfig: path, subset, split, column, data_files, max_rows.
        tokenizer: A `transformers` tokenizer.
        num: How many prompts to make.

    Returns:
        `num` Prompts (task None).

    Raises:
        DatasetError: If the dataset, split or column cannot be loaded.
    """
    source = _describe(cfg)
    split = _load_split(cfg, source)
    if cfg.column not in split.column_names:
        raise DatasetError(
            f"cannot load Hugging Face dataset {source}: no column {cfg.column!r} "
            f"(columns: {', '.join(split.column_names)}); set dataset.column"
        )
    limit = num if cfg.max_rows is None else min(num, cfg.max_rows)
    rows = (row[cfg.column] for row in split.select_columns([cfg.column]))
    texts = list(itertools.islice((text for text in rows if text), limit))
    if any(not isinstance(text, str) for text in texts):
        raise DatasetError(f"column {cfg.column!r} of Hugging Face dataset {source} is not text")
    return cycle(encode(tokenizer, texts, [None] * len(texts)), num, f"dataset {source}")


def _load_split(cfg: Any, source: str) -> Any:
    """Load the split as a `datasets.Dataset`, turning any failure into one DatasetError."""
    import datasets  # imported here: it is slow to import and only this dataset needs it

    path = pathlib.Path(cfg.path).expanduser()
    try:
        if _is_saved_to_disk(path):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if cfg.split not in loaded:
                    raise ValueError(f"no split {cfg.split!r}; splits: {', '.join(loaded)}")
                loaded = loaded[cfg.split]
            return loaded
        if not path.exists() and not _is_builder(cfg.path) and _hub_offline():
            # datasets reads HF_HUB_OFFLINE only at import, and a hub attempt without
            # network retries for ~25 s (longer behind a dropping firewall): fail now.
            raise ConnectionError(f"HF_HUB_OFFLINE=1 and {cfg.path!r} is not a local path")
        return datasets.load_dataset(
            cfg.path, cfg.subset, split=cfg.split, data_files=cfg.data_files
        )
    except Exception as exc:  # datasets raises many unrelated types for one cause
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise DatasetError(
            f"cannot load Hugging Face dataset {source}: {reason}; {OFFLINE_HINT}"
        ) from exc


def _describe(cfg: Any) -> str:
    """Name the source as messages show it: path, subset, data files and split."""
    parts = [f"subset {cfg.subset!r}"] if cfg.subset else []
    parts += [f"data_files {cfg.data_files!r}"] if cfg.data_files else []
    parts.append(f"split {cfg.split!r}")
    return f"{cfg.path!r} ({', '.join(parts)})"


def _is_saved_to_disk(path: pathlib.Path) -> bool:
    """Whether `path` is a directory written by `Dataset(Dict).save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _is_builder(name: str) -> bool:
    """Whether `name` is a builder packaged with `datasets` (json, csv, parquet, ...)."""
    try:  # a private name; fall back to the common text builders if it moves
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES as builders
    except ImportError:
        builders = ("json", "csv", "parquet", "text", "arrow", "pandas")
    return name in builders


def _hub_offline() -> bool:
    """Whether the environment asks for no hub access (read now, not at import time)."""
    return any(
        os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
