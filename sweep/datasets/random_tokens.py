"""Random-token prompts whose length after re-tokenization is exactly the target.

Decoding random ids to text and encoding that text again rarely gives back the same ids
(merges across token boundaries, partial UTF-8 bytes, prefix spaces), so a prompt built by
counting sampled ids is off by a few tokens. This module closes that loop: it decodes,
re-tokenizes with special tokens exactly as the engine will, and trims or extends the
content until the count matches. It hands on Prompts with the final ids. Without a local
tokenizer (an endpoint that counts tokens itself) the prompts are text of about each length
instead (`sweep.datasets.corpus`). With `paraphrase_rate` some prompts are near-duplicates of
earlier ones (`sweep.datasets.paraphrase`): one content token changed, the length kept exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets import corpus
from sweep.datasets.paraphrase import near_duplicates, text_rewording
from sweep.datasets.prompt import Prompt

MAX_ATTEMPTS = 200  # measured: byte-level BPE needs <= 17 rounds; a tiny sentencepiece vocab <= 39


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Make `num` random prompts with exact token lengths (RandomDatasetConfig).

    Args:
        cfg: A RandomDatasetConfig: input_len, range_ratio, seed.
        tokenizer: A `transformers` tokenizer, or None: corpus text of about each length.
        num: How many prompts to make.

    Returns:
        `num` Prompts; the same config and tokenizer always give the same prompts.

    Raises:
        DatasetError: If input_len is below what the tokenizer can express, or a length
            cannot be reached.
    """
    rng = np.random.default_rng(cfg.seed)
    if tokenizer is None:  # the server counts the tokens: lengths are approximate
        made = corpus.prompts(_target_lengths(cfg.input_len, cfg.range_ratio, 1, num, rng), rng)
        return near_duplicates(made, cfg.paraphrase_rate, cfg.seed, text_rewording(None))
    vocab = content_vocab(tokenizer)
    num_special = tokenizer.num_special_tokens_to_add(pair=False)
    minimum = num_special + 1
    if cfg.input_len < minimum:
        raise DatasetError(
            f"dataset.input_len={cfg.input_len} is below the minimum {minimum} for this "
            f"tokenizer (1 content token + {num_special} special tokens)"
        )
    targets = _target_lengths(cfg.input_len, cfg.range_ratio, minimum, num, rng)
    made = [_fit(tokenizer, int(target), num_special, vocab, rng) for target in targets]

    def reword(prompt: Prompt, draw: np.random.Generator) -> Prompt:
        return _reword(tokenizer, prompt, num_special, vocab, draw)

    return near_duplicates(made, cfg.paraphrase_rate, cfg.seed, reword)


def _reword(
    tokenizer: Any, prompt: Prompt, num_special: int, vocab: np.ndarray, rng: np.random.Generator
) -> Prompt:
    """`prompt` with one content token changed, exactly as long (a near-duplicate).

    Most changes re-tokenize to the same length; one that does not (a byte token that decodes
    to U+FFFD, a merge with its neighbour) is drawn again, and only after `MAX_ATTEMPTS` is the
    last one fitted as a new prompt is (which may then drift further from the original).
    """
    special = special_ids(tokenizer)
    content = list(tokenizer(prompt.text, add_special_tokens=False).input_ids)
    changed = content
    for _ in range(MAX_ATTEMPTS):
        changed = list(content)
        changed[int(rng.integers(len(changed)))] = int(rng.choice(vocab))
        text = tokenizer.decode(changed, skip_special_tokens=False)
        ids = tokenizer(text).input_ids
        clean = not special.intersection(tokenizer(text, add_special_tokens=False).input_ids)
        if len(ids) == prompt.input_tokens and clean:
            return Prompt(text=text, token_ids=tuple(ids), input_tokens=len(ids))
    return _fit(tokenizer, prompt.input_tokens, num_special, vocab, rng, changed)


def _target_lengths(
    input_len: int, range_ratio: float, minimum: int, num: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw per-prompt lengths uniformly from the integers in input_len * [1-r, 1+r]."""
    if range_ratio <= 0:
        return np.full(num, input_len)
    low = max(math.ceil(input_len * (1 - range_ratio)), minimum)
    high = max(math.floor(input_len * (1 + range_ratio)), low)
    return rng.integers(low, high, size=num, endpoint=True)


def content_vocab(tokenizer: Any) -> np.ndarray:
    """Ids that are ordinary vocabulary: special and added tokens would add control text."""
    excluded = special_ids(tokenizer)
    return np.array([i for i in range(len(tokenizer)) if i not in excluded], dtype=np.int64)


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of special and added tokens (BOS, EOS, chat markers, ...)."""
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)


def _fit(
    tokenizer: Any,
    target: int,
    num_special: int,
    vocab: np.ndarray,
    rng: np.random.Generator,
    content: list[int] | None = None,
) -> Prompt:
    """Sample (or start from `content`), decode and re-tokenize until exactly `target` ids."""
    special = special_ids(tokenizer)
    if content is None:
        content = rng.choice(vocab, size=target - num_special).tolist()
    seen: set[str] = set()
    for _ in range(MAX_ATTEMPTS):
        text = tokenizer.decode(content, skip_special_tokens=False)
        ids = tokenizer(text).input_ids
        content = tokenizer(text, add_special_tokens=False).input_ids
        clean = not special.intersection(content)
        if len(ids) == target and clean:
            return Prompt(text=text, token_ids=tuple(ids), input_tokens=target)
        if text in seen or not clean:
            # Trimming and re-encoding can cycle (a lone byte decodes to U+FFFD, which encodes
            # as three bytes, so the text never shrinks), and random pieces can spell a
            # special token such as "</s>": start over from a fresh sample.
            content = rng.choice(vocab, size=target - num_special).tolist()
            continue
        seen.add(text)
        # Continue from the ids the tokenizer produced, so the next decode is near a fixed point.
        excess = len(ids) - target
        if excess > 0:
            content = content[: max(len(content) - excess, 1)]
        else:
            content += rng.choice(vocab, size=-excess).tolist()
    raise DatasetError(
        f"could not make a random prompt of exactly {target} tokens after {MAX_ATTEMPTS} attempts"
    )
