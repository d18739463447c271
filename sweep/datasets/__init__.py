"""Datasets: turn a dataset config into the prompts a workload sends.

`load_prompts` is the one entry: it picks the generator named by `cfg.name` (`random`,
`prompts`, `hf`, `shared_prefix`; the same names as the options in `conf/dataset/`) and hands on
exactly `num` Prompts, each tokenized by the model's own tokenizer with special tokens included
(without one, text only: `random` then draws text of about each length from
`sweep.datasets.corpus`). A `trace` hands on at most `num`: its rows decide, and each Prompt
carries its row's output length and arrival (`sweep.datasets.trace`); it alone reads the
context limit (`sweep.datasets.context`), to refuse, skip or cut the rows that do not fit, and
its summary columns (`dataset_columns`) say which. For a chat request the
ids, and so every length, include the model's chat template (`sweep.datasets.chat`). A
`multi_turn` dataset hands on its sessions' user messages; the load generator adds each turn's
history (`sweep.loadgen.sessions`). An `images` dataset's prompts carry images for a chat server
(`sweep.datasets.images`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweep.core.errors import DatasetError
from sweep.datasets import (
    hf_dataset,
    images,
    multi_turn,
    prompt_file,
    random_tokens,
    shared_prefix,
    trace,
)
from sweep.datasets.chat import ChatTokenizer
from sweep.datasets.context import Context
from sweep.datasets.prompt import Prompt

__all__ = [
    "AT_MOST", "CHECKS", "COLUMNS", "GENERATORS", "Prompt", "check_dataset", "dataset_columns",
    "load_prompts",
]  # fmt: skip

Generator = Callable[[Any, Any, int, Context | None], list[Prompt]]


def _context_free(generate: Callable[[Any, Any, int], list[Prompt]]) -> Generator:
    """A generator that does not read the context limit, with the registry's signature."""
    return lambda cfg, tokenizer, num, context: generate(cfg, tokenizer, num)


GENERATORS: dict[str, Generator] = {
    "random": _context_free(random_tokens.generate),
    "prompts": _context_free(prompt_file.generate),
    "hf": _context_free(hf_dataset.generate),
    "shared_prefix": _context_free(shared_prefix.generate),
    # user messages: `sweep.loadgen.sessions` adds the history and fits it to the context
    "multi_turn": _context_free(multi_turn.generate),
    "trace": trace.generate,  # at most `num`: the trace's rows and the context decide
    "images": _context_free(images.generate),  # chat prompts with images, for a chat server
}
# Datasets that may hand on fewer than `num` prompts: their rows decide.
AT_MOST = ("trace",)
# Datasets whose input can be checked before anything runs: (config, context, prompts asked).
CHECKS: dict[str, Callable[[Any, Context | None, int | None], None]] = {"trace": trace.check}
# Datasets with summary columns of their own: (config, context, prompts asked).
COLUMNS: dict[str, Callable[[Any, Context | None, int], dict[str, Any]]] = {"trace": trace.columns}


def load_prompts(
    cfg: Any, tokenizer: Any, num: int, chat: bool = False, context: Context | None = None
) -> list[Prompt]:
    """Make `num` prompts from a dataset config.

    Args:
        cfg: One of the dataset config dataclasses in `sweep.core.config` (its `name` picks the
            generator).
        tokenizer: The model's `transformers` tokenizer, or None where the server counts tokens.
        num: How many prompts the workload needs.
        chat: Whether they go out as chat messages (`backend.api=chat`): lengths then count
            the chat template, and the ids are the templated ones.
        context: The context limit a request must fit (`sweep.datasets.context`); None: none
            known. Only a trace reads it.

    Returns:
        Exactly `num` Prompts (a trace: at most `num`), deterministic for a given config and
        tokenizer.

    Raises:
        DatasetError: If the name is unknown, `num` is negative, or the dataset fails.
    """
    generate = GENERATORS.get(cfg.name)
    if generate is None:
        raise DatasetError(f"unknown dataset {cfg.name!r}; choose one of: {', '.join(GENERATORS)}")
    if num < 0:
        raise DatasetError(f"number of prompts must be >= 0, got {num}")
    if chat and tokenizer is not None:
        tokenizer = ChatTokenizer(tokenizer)
    return generate(cfg, tokenizer, num, context)


def check_dataset(cfg: Any, context: Context | None, num: int | None = None) -> None:
    """Check a dataset's input file before Ray starts (a trace's rows); others need nothing.

    Args:
        cfg: The dataset config.
        context: The context limit, decided as the worker decides it (`sweep.datasets.context`).
        num: The prompts the trial asks for (warm-up included); None: all there are.

    Raises:
        DatasetError: one line naming the file, line and column of the first problem.
    """
    check = CHECKS.get(cfg.name)
    if check is not None:
        check(cfg, context, num)


def dataset_columns(cfg: Any, context: Context | None, num: int) -> dict[str, Any]:
    """A dataset's own summary columns (a trace's hash and rows); none for the others."""
    columns = COLUMNS.get(cfg.name)
    return {} if columns is None else columns(cfg, context, num)
