"""Task-tagged prompts from a JSON Lines file (by default the one packaged with `sweep`).

Each line is `{"task": ..., "prompt": ...}`. The packaged file holds the tasks `qa`,
`reasoning`, `summarization` and `sentiment`, so a sweep can compare engines on realistic
requests of known kinds. This module hands on Prompts tagged with their task.

A trial never sends one prompt twice unless `dataset.allow_repeats` says so: a repeat is a free
hit for a server's prefix cache (at a batch of 128, each of a task's 32 prompts would go four
times). Past the file's end each prompt comes again behind a leading line of its own
(`sweep.datasets.markers`), so it shares no token with another beyond the special ones. With
`dataset.paraphrase_rate` a share of the prompts reword an earlier one instead
(`sweep.datasets.paraphrase`): what a semantic cache in front of the server can answer.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import pathlib
from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets.markers import distinct_leads
from sweep.datasets.paraphrase import near_duplicates, text_rewording
from sweep.datasets.prompt import Prompt, cycle, encode

TASKS = ("qa", "reasoning", "summarization", "sentiment")


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Make `num` prompts from the prompt file (PromptsDatasetConfig).

    With `cfg.task` None the tasks are interleaved (qa, reasoning, summarization,
    sentiment, qa, ...); otherwise only that task is used. Prompts within a task are
    shuffled with `cfg.seed`. When `num` exceeds what the file holds they come again in the
    same order, each behind a distinct leading line, or as they are with `cfg.allow_repeats`.
    Then `cfg.paraphrase_rate` of them are replaced by rewordings of earlier ones.

    Args:
        cfg: A PromptsDatasetConfig: path (None for the packaged file), task, seed,
            allow_repeats, paraphrase_rate.
        tokenizer: A `transformers` tokenizer.
        num: How many prompts to make.

    Returns:
        `num` Prompts with their task set.

    Raises:
        DatasetError: If the file is missing or malformed, or the task is unknown.
    """
    path = path_of(cfg)
    by_task = read_prompt_file(path)
    if cfg.task is not None and cfg.task not in by_task:
        raise DatasetError(
            f"unknown prompt task {cfg.task!r} in {path}; choose one of: {', '.join(by_task)}"
        )
    rng = np.random.default_rng(cfg.seed)
    tasks = list(by_task) if cfg.task is None else [cfg.task]
    columns = [[(by_task[t][i], t) for i in rng.permutation(len(by_task[t]))] for t in tasks]
    # Round-robin over tasks; a task with fewer prompts drops out once it is used up.
    rows = [row for group in itertools.zip_longest(*columns) for row in group if row]
    distinct = encode(tokenizer, [text for text, _ in rows], [task for _, task in rows])
    source = f"prompt file {path}"
    if cfg.allow_repeats or num <= len(distinct):
        made = cycle(distinct, num, source)
    else:
        again = cycle(distinct, num - len(distinct), source)
        leads = distinct_leads(tokenizer, [p.text for p in distinct], [p.text for p in again], rng)
        texts = [lead + p.text for lead, p in zip(leads, again, strict=True)]
        made = distinct + encode(tokenizer, texts, [p.task for p in again])
    return near_duplicates(made, cfg.paraphrase_rate, cfg.seed, text_rewording(tokenizer))


def path_of(cfg: Any) -> str:
    """The prompt file a config reads: `cfg.path`, or the one packaged with `sweep`."""
    return cfg.path or str(importlib.resources.files("sweep") / "data" / "prompts.jsonl")


def read_prompt_file(path: str) -> dict[str, list[str]]:
    """Read a prompt file into prompts per task.

    Args:
        path: A JSON Lines file of `{"task": str, "prompt": str}` objects.

    Returns:
        Prompts per task: the standard TASKS first (those present), then any other task in
        order of first appearance; within a task, file order.

    Raises:
        DatasetError: If the file cannot be read or a line is not such an object.
    """
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read prompt file {path}: {exc.strerror or exc}") from exc
    found: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            task, text = row["task"], row["prompt"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DatasetError(
                f"{path}:{number}: expected a JSON object with 'task' and 'prompt' ({exc})"
            ) from exc
        if not isinstance(task, str) or not isinstance(text, str) or not text:
            raise DatasetError(f"{path}:{number}: 'task' and 'prompt' must be non-empty strings")
        found.setdefault(task, []).append(text)
    order = [t for t in TASKS if t in found] + [t for t in found if t not in TASKS]
    return {task: found[task] for task in order}
