"""Datasets: turn a dataset config into the prompts a workload sends.

`load_prompts` is the one entry: it picks the generator named by `cfg.name` (`random`,
`prompts`, `hf`, `shared_prefix`; the same names as the options in `conf/dataset/`) and hands on
exactly `num` Prompts, each tokenized by the model's own tokenizer with special tokens included
(without one, text only: `random` then draws text of about each length from
`sweep.datasets.corpus`). A `trace` hands on at most `num`: its rows decide, and each Prompt
carries its row's output length and arrival (`sweep.datasets.trace`). For a chat request the
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
from sweep.datasets.prompt import Prompt

__all__ = ["CHECKS", "GENERATORS", "Prompt", "check_dataset", "load_prompts"]

GENERATORS: dict[str, Callable[[Any, Any, int], list[Prompt]]] = {
    "random": random_tokens.generate,
    "prompts": prompt_file.generate,
    "hf": hf_dataset.generate,
    "shared_prefix": shared_prefix.generate,
    "multi_turn": multi_turn.generate,  # user messages: `sweep.loadgen.sessions` adds the history
    "trace": trace.generate,  # at most `num`: the trace's rows decide
    "images": images.generate,  # chat prompts with images (`backend.api=chat` on a server)
}
# Datasets whose input can be checked before anything runs: (config, model.max_model_len).
CHECKS: dict[str, Callable[[Any, int | None], None]] = {"trace": trace.check}


def load_prompts(cfg: Any, tokenizer: Any, num: int, chat: bool = False) -> list[Prompt]:
    """Make `num` prompts from a dataset config.

    Args:
        cfg: One of the dataset config dataclasses in `sweep.core.config` (its `name` picks the
            generator).
        tokenizer: The model's `transformers` tokenizer, or None where the server counts tokens.
        num: How many prompts the workload needs.
        chat: Whether they go out as chat messages (`backend.api=chat`): lengths then count
            the chat template, and the ids are the templated ones.

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
    return generate(cfg, tokenizer, num)


def check_dataset(cfg: Any, max_model_len: int | None) -> None:
    """Check a dataset's input file before Ray starts (a trace's rows); others need nothing.

    Raises:
        DatasetError: one line naming the file, line and column of the first problem.
    """
    check = CHECKS.get(cfg.name)
    if check is not None:
        check(cfg, max_model_len)
