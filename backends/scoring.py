"""Scoring a text teacher-forced: each next token's log-probability and its top-K alternatives.

An engine that can run a forward pass over a whole token sequence hands `from_logprobs` one row
of log-probabilities per input position (row i: the distribution of the token after the first
i + 1 tokens); this module is the one place that turns those rows into per-token scores, so the
shift between "the distribution at i" and "the token at i + 1" is written once for every backend.
`Backend.score` (`backends.base`) returns a `TokenScores`; `sweep.quality_run` calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
