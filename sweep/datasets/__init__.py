"""Datasets: turn a dataset config into the prompts a workload sends.

`load_prompts` is the one entry: it picks the generator named by `cfg.name` (`random`,
`prompts`, `hf`; the same names as the options in `conf/dataset/`) and hands on exactly
`num` Prompts, each tokenized by the model's own tokenizer with special tokens included (without
one, text only: `random` then draws text of about each length from `sweep.datasets.corpus`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweep.core.errors import DatasetError
from sweep.datasets import hf_dataset, prompt_file, random_tokens
from sweep.datasets.prompt import Prompt

__all__ = ["GENERATORS", "Prompt", "load_prompts"]

GENERATORS: dict[str, Callable[[Any, Any, int], list[Prompt]]] = {
    "random": random_tokens.generate,
    "prompts": prompt_file.generate,
    "hf": hf_dataset.generate,
}


def load_prompts(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Make `num` prompts from a dataset config.

    Args:
        cfg: One of the dataset config dataclasses in `sweep.core.config` (its `name` picks the
            generator).
        tokenizer: The model's `transformers` tokenizer, or None where the server counts tokens.
        num: How many prompts the workload needs.

    Returns:
        Exactly `num` Prompts, deterministic for a given config and tokenizer.

    Raises:
        DatasetError: If the name is unknown, `num` is negative, or the dataset fails.
    """
    generate = GENERATORS.get(cfg.name)
    if generate is None:
        raise DatasetError(f"unknown dataset {cfg.name!r}; choose one of: {', '.join(GENERATORS)}")
    if num < 0:
        raise DatasetError(f"number of prompts must be >= 0, got {num}")
    return generate(cfg, tokenizer, num)
