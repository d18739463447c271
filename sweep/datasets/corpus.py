"""Prompts made without a tokenizer: sentences of a bundled text, lengths counted in words.

An attached endpoint with `backend.tokenizer=none` reports its own token counts (`usage`), and no
local tokenizer is loaded to build prompts of exact lengths. A `random` dataset is then made of
sentences drawn (seeded) from `sweep/data/corpus.jsonl`, plain English prose written for this
project, cut to `round(tokens * WORDS_PER_TOKEN)` words: about 0.75 words a token, the rule of
thumb OpenAI gives for English text with its tokenizers. The requested input length is only
approximated; the length recorded is the server's `prompt_tokens`. Sentences are drawn one by
one with replacement, so prompts rarely share more than a first sentence (a server's prefix
cache gains little). This module hands on Prompts without token ids.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Sequence

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets.prompt import Prompt

WORDS_PER_TOKEN = 0.75  # English prose on GPT-style tokenizers: ~3/4 of a word per token


def prompts(lengths: Sequence[int], rng: np.random.Generator) -> list[Prompt]:
    """One prompt of about each of `lengths` tokens, made of corpus sentences drawn with `rng`.

    Returns:
        Prompts without token ids (the server counts them).
    """
    return [Prompt(_text(words_for(int(n)), rng), (), 0) for n in lengths]


def words_for(tokens: int) -> int:
    """Words of corpus text for a prompt of about `tokens` tokens (one at least)."""
    return max(1, round(tokens * WORDS_PER_TOKEN))


def _text(words: int, rng: np.random.Generator) -> str:
    """`words` words of whole sentences drawn at random, the last one cut short if need be."""
    sentences = corpus()
    picked: list[str] = []
    while len(picked) < words:
        picked += sentences[int(rng.integers(len(sentences)))].split()
    return " ".join(picked[:words])


@functools.cache
def corpus() -> tuple[str, ...]:
    """The bundled sentences, one JSON string a line.

    Raises:
        DatasetError: the file is missing or holds no sentences.
    """
    path = importlib.resources.files("sweep") / "data" / "corpus.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        sentences = tuple(s for s in (json.loads(line) for line in lines if line.strip()) if s)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the bundled text corpus {path}: {exc}") from exc
    if not sentences:
        raise DatasetError(f"the bundled text corpus {path} holds no sentences")
    return sentences
