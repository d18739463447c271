"""Near-duplicate prompts: `dataset.paraphrase_rate` of a trial's prompts reword an earlier one.

A semantic cache in front of a server (`proxy=semantic_cache`) answers a prompt with the answer
to an earlier, similar one; measuring it needs prompts that come back reworded. Of a trial's `n`
prompts, `near_duplicates` replaces round(rate x n), at positions drawn with the dataset's seed
(never the first), by a light rewording of an earlier original, drawn uniformly from the
originals before it (never another near-duplicate: each is one step from a prompt the cache may
hold). The generator says how to reword: `reword_text` appends a short word or, in prompts of ten
words or more, may instead drop a word or swap two letters of one, and the text is tokenized
again; the `random` dataset changes one token and keeps the exact length
(`sweep.datasets.random_tokens`). Each near-duplicate keeps the index of its original
(`Prompt.near_duplicate_of`), and the trial records their share
(`records.PROMPT_NEAR_DUPLICATE_PERCENT`, `sweep.datasets.reuse`). The draws have a stream of
their own, so the other prompts are those the same config makes with a rate of 0.

A near-duplicate sent while its original is still being answered finds nothing cached yet; at
high concurrency the hit rate is therefore somewhat below the rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sweep.datasets.prompt import Prompt, encode

# Mixed into the dataset's seed: the near-duplicates' own random stream.
_STREAM = 0x9A7A
# What a rewording may append: short, so the prompt still reads as the same question.
APPENDED = ("Please.", "Thanks!", "Briefly.", "Thank you.")
# Prompts at least this many words long may also lose a word or get a typo.
LONG_WORDS = 10

Reword = Callable[[Prompt, np.random.Generator], Prompt]


def near_duplicates(
    prompts: Sequence[Prompt], rate: float, seed: int, reword: Reword
) -> list[Prompt]:
    """`prompts` with round(rate x n) of them replaced by rewordings of earlier originals."""
    n = len(prompts)
    count = min(round(rate * n), n - 1)
    if count <= 0:
        return list(prompts)
    rng = np.random.default_rng([seed, _STREAM])
    chosen = set(rng.choice(np.arange(1, n), size=count, replace=False).tolist())
    made, originals = [], []
    for index, prompt in enumerate(prompts):
        if index not in chosen:
            originals.append(index)
            made.append(prompt)
            continue
        source = originals[int(rng.integers(len(originals)))]
        made.append(dataclasses.replace(reword(made[source], rng), near_duplicate_of=source))
    return made


def text_rewording(tokenizer: Any) -> Reword:
    """Reword a prompt's text (`reword_text`) and tokenize it again (None: text only)."""

    def reword(prompt: Prompt, rng: np.random.Generator) -> Prompt:
        text = reword_text(prompt.text, rng)
        return dataclasses.replace(encode(tokenizer, [text], [prompt.task])[0], task=prompt.task)

    return reword


def reword_text(text: str, rng: np.random.Generator) -> str:
    """A light rewording: a short word appended, or (ten words or more) one dropped or misspelt."""
    words = text.split(" ")
    kind = "append"
    if len(words) >= LONG_WORDS:
        kind = ("append", "drop", "swap")[int(rng.integers(3))]
    if kind == "drop":
        del words[int(rng.integers(1, len(words)))]  # the first word stays: it sets the task
        return " ".join(words)
    if kind == "swap":
        swapped = _swap_letters(words, rng)
        if swapped is not None:
            return swapped
    return f"{text.rstrip()} {APPENDED[int(rng.integers(len(APPENDED)))]}"


def _swap_letters(words: list[str], rng: np.random.Generator) -> str | None:
    """Two neighbouring letters of one word swapped (a typo); None when no word has any."""
    places = [
        (i, k)
        for i, word in enumerate(words)
        if len(word) >= 4 and word.isalpha()
        for k in range(1, len(word) - 2)
        if word[k] != word[k + 1]
    ]
    if not places:
        return None
    i, k = places[int(rng.integers(len(places)))]
    word = words[i]
    words = [*words[:i], word[:k] + word[k + 1] + word[k] + word[k + 2 :], *words[i + 1 :]]
    return " ".join(words)
