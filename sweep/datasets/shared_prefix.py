"""Groups of prompts sharing a prefix, with exact token lengths (SharedPrefixDatasetConfig).

Real traffic repeats itself: a system prompt, few-shot examples or a document heads many
requests, and a server's prefix cache skips their prefill. Random prompts hide that; these
prompts show it by design. There are `num_groups` prefixes of random tokens; each prompt is its
group's prefix, ending in a newline, then a random suffix of its own. Prompt for prompt, the
first `prefix_len` ids (special and chat-template tokens before the content included) are the
group's, and the whole prompt has `prefix_len + suffix_len` ids, both checked on the ids the
engine will see by re-tokenizing, as `sweep.datasets.random_tokens` does for one prompt. Groups
get their prompts in equal numbers, or zipf-skewed (group k in proportion to 1 / k^s), and the
prompts of all groups are shuffled together with the seed, so groups interleave as requests go
out. Without a tokenizer the prompts are corpus text of about those lengths
(`sweep.datasets.corpus`). This module hands on the Prompts, in sending order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sweep.core.errors import DatasetError
from sweep.datasets import corpus
from sweep.datasets.markers import content_start
from sweep.datasets.prompt import Prompt
from sweep.datasets.random_tokens import MAX_ATTEMPTS, content_vocab, special_ids
from sweep.datasets.reuse import common_prefix

UNBOUNDED = 10**9  # transformers' model_max_length when a tokenizer does not know its context
SEPARATOR = "\n"  # ends every prefix: a token boundary before any suffix


def generate(cfg: Any, tokenizer: Any, num: int) -> list[Prompt]:
    """Make `num` prompts of shared-prefix groups, in sending order.

    Args:
        cfg: A SharedPrefixDatasetConfig.
        tokenizer: A `transformers` tokenizer (or a `ChatTokenizer`), or None: corpus text.
        num: How many prompts to make.

    Returns:
        `num` Prompts; the same config and tokenizer always give the same prompts.

    Raises:
        DatasetError: If the groups hold fewer prompts than `num`, the lengths do not fit the
            model's context or the tokenizer's own tokens, or a length cannot be reached.
    """
    rng = np.random.default_rng(cfg.seed)
    order = interleaved_groups(group_sizes(cfg, num), num, rng)
    if tokenizer is None:  # the server counts the tokens: lengths are approximate
        return _corpus_prompts(cfg, order, rng)
    _check_context(cfg, tokenizer)
    fitter = _Fitter(tokenizer, rng)
    fitter.check_lengths(cfg)
    prefixes: dict[int, tuple[str, tuple[int, ...]]] = {}
    prompts = []
    for group in order:
        if group not in prefixes:  # made as each group is first needed: seeded, in order
            prefixes[group] = fitter.prefix(cfg.prefix_len)
        text, shared = prefixes[group]
        prompts.append(fitter.prompt(text, shared, cfg.prefix_len + cfg.suffix_len))
    return prompts


def group_sizes(cfg: Any, num: int) -> list[int]:
    """Prompts of each group: `prompts_per_group` each (None: `num` in all), zipf-split if asked.

    A zipf split gives group k (from 1) a share of the total in proportion to 1 / k^s, rounded
    by largest remainder, so the sizes add up exactly; a rare group may get none.

    Raises:
        DatasetError: If the groups hold fewer prompts than the workload sends.
    """
    groups = cfg.num_groups
    total = num if cfg.prompts_per_group is None else groups * cfg.prompts_per_group
    if total < num:
        raise DatasetError(
            f"dataset.num_groups x dataset.prompts_per_group = {groups} x "
            f"{cfg.prompts_per_group} = {total} prompts, but the workload sends {num} (warm-up "
            "included); raise prompts_per_group, or set it to null to fit the workload"
        )
    ranks = np.arange(1, groups + 1, dtype=float)
    weights = ranks**-cfg.zipf_exponent if cfg.group_distribution == "zipf" else ranks**0
    exact = total * weights / weights.sum()
    sizes = np.floor(exact).astype(int)
    leftover = total - int(sizes.sum())
    sizes[np.argsort(sizes - exact, kind="stable")[:leftover]] += 1  # largest remainders
    return [int(s) for s in sizes]


def interleaved_groups(sizes: list[int], num: int, rng: np.random.Generator) -> list[int]:
    """The group of each of the first `num` prompts: every group's prompts, shuffled together."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return [int(g) for g in rng.permutation(labels)[:num]]


def _check_context(cfg: Any, tokenizer: Any) -> None:
    """One line, before any request, when a prompt could not fit the model's context."""
    limit = tokenizer.model_max_length
    length = cfg.prefix_len + cfg.suffix_len
    if limit < UNBOUNDED and length > limit:
        raise DatasetError(
            f"dataset.prefix_len + dataset.suffix_len = {cfg.prefix_len} + {cfg.suffix_len} = "
            f"{length} tokens exceed the model's context of {limit} tokens (its tokenizer's "
            "model_max_length)"
        )


def _corpus_prompts(cfg: Any, order: list[int], rng: np.random.Generator) -> list[Prompt]:
    """Corpus text of about the lengths, for a server that counts the tokens itself."""
    prefixes: dict[int, str] = {}
    prompts = []
    for group in order:
        if group not in prefixes:
            prefixes[group] = corpus.prompts([cfg.prefix_len], rng)[0].text
        suffix = corpus.prompts([cfg.suffix_len], rng)[0].text
        prompts.append(Prompt(prefixes[group] + SEPARATOR + suffix, (), 0))
    return prompts


class _Fitter:
    """Random prefixes and suffixes whose re-tokenized lengths are exactly the targets.

    Lengths are counted on the ids the engine sees (`tokenizer(text)`, special tokens or chat
    template included). `head` is how many of them come before the content (BOS, a template's
    opening), `tail` how many after it (a template's closing, an EOS some tokenizers add).
    """

    def __init__(self, tokenizer: Any, rng: np.random.Generator) -> None:
        self.tokenizer, self.rng = tokenizer, rng
        vocab = content_vocab(tokenizer)
        # Not the pieces of a character (byte-fallback or lone UTF-8 bytes): each decodes to
        # U+FFFD, whose own ids would start many prefixes alike and collapse short suffixes.
        pieces = tokenizer.batch_decode([[i] for i in vocab.tolist()])
        whole = np.array(["\ufffd" not in piece for piece in pieces], dtype=bool)
        self.vocab = vocab[whole] if whole.any() else vocab
        self.special = special_ids(tokenizer)
        self.made: set[str] = set()
        self.head = content_start(tokenizer)
        self.tail = max(len(self.ids("")) - self.head, 0)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    def check_lengths(self, cfg: Any) -> None:
        """Room for content: a prefix token and its newline, and one suffix token."""
        if cfg.prefix_len < self.head + 2:
            raise DatasetError(
                f"dataset.prefix_len={cfg.prefix_len} is below the minimum {self.head + 2} for "
                f"this tokenizer ({self.head} tokens before the content, 1 token and a newline)"
            )
        if cfg.suffix_len < self.tail + 1:
            raise DatasetError(
                f"dataset.suffix_len={cfg.suffix_len} is below the minimum {self.tail + 1} for "
                f"this tokenizer (1 content token and {self.tail} after it)"
            )

    def prefix(self, target: int) -> tuple[str, tuple[int, ...]]:
        """A prefix text whose ids, whatever suffix follows, are exactly `target` ids.

        The length is read as the ids two different one-letter suffixes have in common.
        """
        content = self._sample(target - self.head - 1)
        seen: set[str] = set()
        for _ in range(MAX_ATTEMPTS):
            text = self.tokenizer.decode(content, skip_special_tokens=False) + SEPARATOR
            with_x, with_y = self.ids(text + "x"), self.ids(text + "y")
            length = common_prefix(with_x, with_y)
            if length == target and self._clean(text):
                return text, tuple(with_x[:target])
            if text in seen or not self._clean(text):
                content = self._sample(target - self.head - 1)  # a cycle, or a special spelt
                continue
            seen.add(text)
            content = self._resized(self._content_of(text[: -len(SEPARATOR)]), length - target)
        raise DatasetError(
            f"could not make a shared prefix of exactly {target} tokens after {MAX_ATTEMPTS} "
            "attempts"
        )

    def prompt(self, prefix: str, shared: tuple[int, ...], target: int) -> Prompt:
        """The prefix and a suffix of its own: `target` ids, the first ones exactly `shared`."""
        content = self._sample(target - len(shared) - self.tail)
        seen: set[str] = set()
        for _ in range(MAX_ATTEMPTS):
            suffix = self.tokenizer.decode(content, skip_special_tokens=False)
            ids = self.ids(prefix + suffix)
            kept = tuple(ids[: len(shared)]) == shared
            new = prefix + suffix not in self.made
            if kept and new and len(ids) == target and self._clean(suffix):
                self.made.add(prefix + suffix)
                return Prompt(text=prefix + suffix, token_ids=tuple(ids), input_tokens=target)
            if not (kept and new) or suffix in seen or not self._clean(suffix):
                # The suffix merged with the prefix's newline, was made before, cycled, or spelt
                # a special token.
                content = self._sample(target - len(shared) - self.tail)
                continue
            seen.add(suffix)
            content = self._resized(self._content_of(suffix), len(ids) - target)
        raise DatasetError(
            f"could not make a shared-prefix prompt of exactly {target} tokens after "
            f"{MAX_ATTEMPTS} attempts"
        )

    def _sample(self, size: int) -> list[int]:
        return self.rng.choice(self.vocab, size=max(size, 1)).tolist()

    def _content_of(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _clean(self, text: str) -> bool:
        return not self.special.intersection(self._content_of(text))

    def _resized(self, content: list[int], excess: int) -> list[int]:
        """Continue from the tokenizer's own ids, `excess` fewer (or more, when negative)."""
        if excess > 0:
            return content[: max(len(content) - excess, 1)]
        return content + self.rng.choice(self.vocab, size=-excess).tolist()
