"""Leading lines that make a repeated prompt distinct from its first token on.

When a workload needs more prompts than a file holds, sending a prompt twice hands a server's
prefix cache the whole of it for free. Instead each extra prompt comes behind a leading line of
its own, a word chosen so that the prompt's first token after the special ones (BOS, a chat
template's opening) differs from every other prompt's, checked on the ids the engine sees. When
the tokenizer runs out of such first tokens (a tiny vocabulary), lines of two words make the
first two differ, and prompts then share at most one token beyond the special ones. Without a
tokenizer the words come from the bundled corpus, unchecked. This module hands on one leading
line per prompt.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets import corpus
from sweep.datasets.random_tokens import content_vocab
from sweep.datasets.reuse import common_prefix

WORD = re.compile(r"[A-Za-z0-9]+")


def distinct_leads(
    tokenizer: Any, taken: Sequence[str], texts: Sequence[str], rng: np.random.Generator
) -> list[str]:
    """A leading line for each of `texts`, so that no two prompts start alike.

    Args:
        tokenizer: The tokenizer whose ids the engine sees, or None (nothing is checked).
        taken: The prompts sent as they are, whose first tokens are already used.
        texts: The prompts to send again, in order.
        rng: Orders the candidate words.

    Returns:
        One line (ending in a newline) per text.

    Raises:
        DatasetError: If even two-word lines run out.
    """
    words = _words(tokenizer, rng)
    candidates = itertools.chain(((w,) for w in words), ((a, b) for b in words for a in words))
    if tokenizer is None:
        lines = (" ".join(c) + "\n" for c in candidates)
        return [line for line, _ in zip(lines, texts, strict=False)]
    start = content_start(tokenizer)
    used: list[set[tuple[int, ...]]] = [set(), set()]  # first one and first two content ids
    for ids in tokenizer(list(taken)).input_ids if taken else []:
        _use(used, ids[start:])
    leads = []
    for text in texts:
        leads.append(_next_lead(tokenizer, start, used, candidates, text, len(texts)))
    return leads


def content_start(tokenizer: Any) -> int:
    """How many ids the engine's view puts before a prompt's content (BOS, a chat opening).

    Read as the ids that the encodings of two one-letter texts have in common.
    """
    return common_prefix(tokenizer("a").input_ids, tokenizer("b").input_ids)


def _next_lead(
    tokenizer: Any,
    start: int,
    used: list[set[tuple[int, ...]]],
    candidates: Iterator[tuple[str, ...]],
    text: str,
    wanted: int,
) -> str:
    """The next candidate line whose first content ids (as many as it has words) are unused."""
    for words in candidates:
        line = " ".join(words) + "\n"
        ids = tokenizer(line + text).input_ids[start:]
        if tuple(ids[: len(words)]) not in used[len(words) - 1]:
            _use(used, ids)
            return line
    raise DatasetError(
        f"cannot make {wanted} distinct prompts from this prompt file with this tokenizer; "
        "set dataset.allow_repeats=true to send its prompts again as they are"
    )


def _use(used: list[set[tuple[int, ...]]], content: Sequence[int]) -> None:
    for depth, seen in enumerate(used, start=1):
        seen.add(tuple(content[:depth]))


def _words(tokenizer: Any, rng: np.random.Generator) -> list[str]:
    """Candidate words in a seeded order: the tokenizer's own pieces, or the corpus' words."""
    if tokenizer is None:
        found = {w for sentence in corpus.corpus() for w in WORD.findall(sentence)}
        pool = sorted(found)
    else:
        vocab = content_vocab(tokenizer).tolist()
        pieces = (piece.strip() for piece in tokenizer.batch_decode([[i] for i in vocab]))
        pool = list(dict.fromkeys(p for p in pieces if WORD.fullmatch(p)))
    return [pool[i] for i in rng.permutation(len(pool))]
