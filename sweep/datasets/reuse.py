"""What a trial's prompts offer a cache: reusable prefix tokens and repeated prompts.

A random prompt of fixed length shares nothing with the next, so a server's prefix cache has
nothing to find; a workload whose prompts share prefixes (or repeat outright) lets it skip most
of their prefill. Two summary columns say how much a trial offered, from the prompts alone, so
that the server's own hit rate (`records.SERVER_PREFIX_CACHE_HIT_PERCENT`) reads against it:

- the reusable share: for each prompt, the longest token prefix it shares with any earlier prompt
  of the trial, summed, over all input tokens: what a perfect, unbounded prefix cache would
  reuse (a real one reuses whole blocks only, and not a block still being computed);
- the repeat share: prompts whose text is the same as an earlier prompt's;
- the near-duplicate share: prompts made as a rewording of an earlier one
  (`dataset.paraphrase_rate`), what a semantic cache could answer.

Both count every prompt the trial sends, warm-up included, in the order they were made (the
server's counters see the warm-up too). This module hands the trial those columns.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from sweep.core import records as R
from sweep.datasets.prompt import Prompt


def prompt_columns(prompts: Sequence[Prompt]) -> dict[str, float | None]:
    """The trial's reusable-prefix, repeat and near-duplicate percentages (None: no prompts)."""
    ids = [p.token_ids for p in prompts]
    reusable = reusable_prefix_fraction(ids) if all(ids) else None
    repeated = repeated_fraction([p.text for p in prompts])
    near = [p.near_duplicate_of is not None for p in prompts]
    return {
        R.PROMPT_REUSABLE_PREFIX_PERCENT: None if reusable is None else 100.0 * reusable,
        R.PROMPT_REPEAT_PERCENT: None if repeated is None else 100.0 * repeated,
        R.PROMPT_NEAR_DUPLICATE_PERCENT: 100.0 * sum(near) / len(near) if near else None,
    }


def reusable_prefix_fraction(sequences: Sequence[Sequence[int]]) -> float | None:
    """Share of all tokens that lie in a prefix shared with an earlier sequence.

    The earlier sequences are kept in lexicographic order: the longest common prefix of a
    sequence with any of them is the longer of those with its two neighbours in that order.

    Returns:
        The fraction in [0, 1]; None when there are no tokens at all.
    """
    total = sum(len(s) for s in sequences)
    if total == 0:
        return None
    earlier: list[tuple[int, ...]] = []
    shared = 0
    for sequence in sequences:
        key = tuple(sequence)
        i = bisect.bisect_left(earlier, key)
        neighbours = earlier[max(i - 1, 0) : i + 1]
        shared += max((common_prefix(key, other) for other in neighbours), default=0)
        earlier.insert(i, key)
    return shared / total


def repeated_fraction(texts: Sequence[str]) -> float | None:
    """Share of `texts` equal to an earlier one; None when there are none."""
    if not texts:
        return None
    return (len(texts) - len(set(texts))) / len(texts)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` have in common."""
    a, b = tuple(a), tuple(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]: halve the gap
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low
