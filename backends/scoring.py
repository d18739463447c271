"""Scoring a text teacher-forced: each next token's log-probability and its top-K alternatives.

An engine that can run a forward pass over a whole token sequence hands `from_logprobs` one row
of log-probabilities per input position (row i: the distribution of the token after the first
i + 1 tokens); this module is the one place that turns those rows into per-token scores, so the
shift between "the distribution at i" and "the token at i + 1" is written once for every backend.
A server that reports prompt log-probabilities position by position (`backends.prompt_scoring`)
hands `from_positions` one `Position` per scored token instead, checked against the text's ids.
`Backend.score` (`backends.base`) returns a `TokenScores`; `sweep.worker.quality_run` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sweep.core.errors import BackendError


@dataclass(frozen=True)
class TokenScores:
    """One text's scores: position p (1..n-1) is the text's token p after tokens 0..p-1.

    Attributes:
        token_ids: the scored tokens, ids[1:] of the text (shape n - 1).
        token_logprobs: each one's natural-log probability (shape n - 1).
        top_ids: the k most likely tokens at each position, most likely first (n - 1, k).
        top_logprobs: their log-probabilities (n - 1, k).
    """

    token_ids: np.ndarray
    token_logprobs: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Rows of logits as rows of natural-log probabilities, in float64."""
    rows = np.asarray(logits, dtype=np.float64)
    return rows - np.logaddexp.reduce(rows, axis=-1, keepdims=True)


def from_logprobs(ids: Sequence[int], logprobs: np.ndarray, top_k: int) -> TokenScores:
    """Per-token scores from the log-probability rows of a forward pass over `ids`.

    Args:
        ids: the text's token ids, its leading (BOS) token first.
        logprobs: shape (len(ids), vocabulary): row i is the distribution after ids[: i + 1].
        top_k: alternatives kept per position (at most the vocabulary's size). Ties are broken
            by the lower id, so two backends with equal rows list the same tokens.

    Raises:
        ValueError: the rows do not match the ids (a caller's bug, not bad input).
    """
    rows = np.asarray(logprobs, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] != len(ids):
        raise ValueError(f"{rows.shape} log-probability rows for {len(ids)} tokens")
    targets = np.asarray(ids[1:], dtype=np.int64)
    before = rows[:-1]  # the last row predicts a token the text does not have
    k = min(top_k, rows.shape[1])
    # lexsort: the last key sorts first, so rows order by -logprob, then by id.
    order = np.lexsort((np.broadcast_to(np.arange(rows.shape[1]), before.shape), -before), axis=1)
    top = order[:, :k]
    return TokenScores(
        token_ids=targets,
        token_logprobs=before[np.arange(len(targets)), targets],
        top_ids=top.astype(np.int64),
        top_logprobs=np.take_along_axis(before, top, axis=1),
    )


@dataclass(frozen=True)
class Position:
    """What a server says about one prompt position (the text's token p after tokens 0..p-1).

    Attributes:
        token_id: the token the server scored there (checked against the text's).
        logprob: its natural-log probability.
        top: the most likely tokens there, id -> log-probability (empty: the server gives none;
            it may hold more than asked, the text's own token among them).
        ranks: each listed token's rank (1 = most likely) where the server says it, else empty.
    """

    token_id: int
    logprob: float
    top: dict[int, float]
    ranks: dict[int, int]


def from_positions(
    ids: Sequence[int], positions: Sequence[Position], top_k: int, where: str
) -> TokenScores:
    """Per-token scores from a server's prompt log-probabilities, positions 1..n-1 of `ids`.

    Keeps at each position the `top_k` most likely tokens the server listed, ranked first by the
    server's own rank where it gives one (a token listed only because it is the text's, below
    the top K, is dropped), then by log-probability, ties by the lower id as `from_logprobs`
    does. A server that lists no alternatives gives scores with no top-K (shape (n - 1, 0)):
    perplexity is computed from them, KL and top-1 agreement are not.

    Raises:
        BackendError: the server scored other tokens, or another number of them, than the
            text's (its tokenization differs), or listed fewer than `top_k` alternatives.
    """
    if len(positions) != len(ids) - 1:
        raise BackendError(
            f"{where} scored {len(positions)} prompt positions of a {len(ids)}-token text "
            f"(expected {len(ids) - 1})"
        )
    for p, position in enumerate(positions, start=1):
        if position.token_id != ids[p]:
            raise BackendError(
                f"{where} scored token {position.token_id} at position {p}, where the text has "
                f"{ids[p]}: the server tokenized the text differently"
            )
    has_top = any(position.top for position in positions)
    k = top_k if has_top else 0
    top_ids = np.zeros((len(positions), k), dtype=np.int64)
    top_lp = np.zeros((len(positions), k), dtype=np.float64)
    for row, position in enumerate(positions):
        if not has_top:
            break
        listed = [t for t in position.top if position.ranks.get(t, 1) <= top_k]
        listed.sort(key=lambda t: (position.ranks.get(t, 0), -position.top[t], t))
        if len(listed) < k:
            raise BackendError(
                f"{where} listed {len(listed)} alternatives at position {row + 1}, fewer than "
                f"quality.top_k={top_k}"
            )
        top_ids[row] = listed[:k]
        top_lp[row] = [position.top[t] for t in listed[:k]]
    return TokenScores(
        token_ids=np.asarray(ids[1:], dtype=np.int64),
        token_logprobs=np.asarray([p.logprob for p in positions], dtype=np.float64),
        top_ids=top_ids,
        top_logprobs=top_lp,
    )
