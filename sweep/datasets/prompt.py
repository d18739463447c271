"""The Prompt record every dataset generator hands to the workload runner.

A prompt carries its text and the model tokenizer's ids of that text exactly as the engine
will see them (special tokens such as BOS included), so input token counts in the results
come from the tokenizer, not from a guess. Without a local tokenizer (an endpoint that counts
tokens itself, `backend.tokenizer=none`) a prompt has no ids, and its count is the server's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweep.core.errors import DatasetError


@dataclass(frozen=True)
class Prompt:
    """One request's input text and its token ids (special tokens included; none: not known)."""

    text: str
    token_ids: tuple[int, ...]
    input_tokens: int
    task: str | None = None
    # A trace's own output length and arrival (seconds after its first row, speedup applied);
    # None: the workload's (`sweep.loadgen.requests`).
    output_tokens: int | None = None
    arrival_s: float | None = None
    # The index, among the trial's prompts, of the earlier prompt this one rewords
    # (`dataset.paraphrase_rate`, `sweep.datasets.paraphrase`); None: not a near-duplicate.
    near_duplicate_of: int | None = None
    # The LoRA adapter the prompt's own data names (a trace's adapter column); None: none.
    # `workload.lora_assignment=dataset` sends it there (`sweep.loadgen.adapters`).
    adapter: str | None = None
    # Images its user message carries, as data URIs (`sweep.datasets.images`); their tokens
    # are the server's to count (`usage.prompt_tokens`), not in `input_tokens`.
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.input_tokens != len(self.token_ids):
            raise ValueError(
                f"input_tokens={self.input_tokens} but token_ids has {len(self.token_ids)} ids"
            )


def encode(tokenizer: Any, texts: Sequence[str], tasks: Sequence[str | None]) -> list[Prompt]:
    """Tokenize texts in one batch call, special tokens included, into Prompts.

    Args:
        tokenizer: A `transformers` tokenizer, or None: the texts are not tokenized.
        texts: Prompt texts.
        tasks: The task of each text (None where untagged), same length as `texts`.

    Returns:
        One Prompt per text, in order.
    """
    if not texts:
        return []
    all_ids = tokenizer(list(texts)).input_ids if tokenizer is not None else [()] * len(texts)
    return [
        Prompt(text=text, token_ids=tuple(ids), input_tokens=len(ids), task=task)
        for text, ids, task in zip(texts, all_ids, tasks, strict=True)
    ]


def cycle(prompts: Sequence[Prompt], num: int, source: str) -> list[Prompt]:
    """Return exactly `num` prompts, repeating `prompts` in order when there are fewer.

    Args:
        prompts: The distinct prompts available.
        num: How many the workload needs.
        source: What the prompts came from, for the error message.

    Returns:
        A list of `num` prompts.

    Raises:
        DatasetError: If `num` > 0 but there are no prompts at all.
    """
    if num > 0 and not prompts:
        raise DatasetError(f"{source} yielded no prompts")
    return [prompts[i % len(prompts)] for i in range(num)]


def with_adapters(prompts: Sequence[Prompt], values: Sequence[object], column: str) -> list[Prompt]:
    """`prompts` with the LoRA adapter their rows name in `column` (a trace's adapter column).

    Raises:
        DatasetError: a row's value is empty.
    """
    named = []
    for row, (prompt, value) in enumerate(zip(prompts, values, strict=True)):
        text = "" if value is None else str(value).strip()
        if not text or text.lower() == "nan":
            raise DatasetError(f"row {row + 1}: column {column!r} names no LoRA adapter")
        named.append(dataclasses.replace(prompt, adapter=text))
    return named
