"""Landscapes: the sim server's speed as a known function of engine-like knobs (tuning's truth).

With `landscape=peak` every delay of every request (its first token's and each chunk's) is
multiplied by one factor computed from three knobs, so the server's ceiling, the request rate it
serves with `max_num_seqs` requests running, is a known function of them:

    ceiling(N, B, chunked) = N / (F(N, B, chunked) * S0),  S0 = ttft_ms + (output - 1) * itl_ms

(`max_num_seqs` N, `max_num_batched_tokens` B, `chunked_prefill`). `peak` is built so that

    ceiling = PEAK_RATE * exp(-A (log2 N - log2 N*)^2 - [chunked] B_ (log2 B - log2 B*(N))^2)
              * (1 if chunked else UNCHUNKED)

with B*(N) = TOKENS_PER_SEQ * N: one optimum (N* sequences, chunked prefill, B* tokens), an
interaction (the best token budget grows with the batch) and a conditional knob (B counts only
with chunked prefill, as a real engine's batched-token budget does). The per-request `jitter`
adds a real server's noise on top. The knobs act only through the landscape: with
`landscape=none` (the default) they change nothing. `ceiling` and `optimum` are the truth a
tuning benchmark compares its answers with (`scripts.bench.tune_landscape`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LANDSCAPES = ("none", "peak")


@dataclass(frozen=True)
class Peak:
    """The `peak` landscape's constants: its optimum, curvature and the chunking penalty."""

    rate: float = 60.0  # req/s at the optimum with the reference schedule (S0 = REFERENCE_S0_MS)
    best_seqs: float = 12.0
    tokens_per_seq: float = 256.0  # B*(N) = tokens_per_seq * N
    curve_seqs: float = 0.1  # A: per (log2 N)^2
    curve_tokens: float = 0.15  # B_: per (log2 B)^2
    unchunked: float = 0.8  # the ceiling without chunked prefill, relative
    reference_s0_ms: float = 24.0  # ttft_ms 10 + 7 x itl_ms 2 (8 output tokens)


PEAK = Peak()


def relative(max_num_seqs: int, max_num_batched_tokens: int, chunked_prefill: bool) -> float:
    """The ceiling relative to the optimum's (1.0 there, below 1 everywhere else)."""
    p = PEAK
    n = max(1, max_num_seqs)
    dx = math.log2(n) - math.log2(p.best_seqs)
    exponent = -p.curve_seqs * dx * dx
    if chunked_prefill:
        budget = max(1, max_num_batched_tokens)
        dy = math.log2(budget) - math.log2(p.tokens_per_seq * n)
        exponent -= p.curve_tokens * dy * dy
        return math.exp(exponent)
    return p.unchunked * math.exp(exponent)


def delay_factor(
    landscape: str, max_num_seqs: int, max_num_batched_tokens: int, chunked_prefill: bool
) -> float:
    """What every delay is multiplied by: 1 without a landscape."""
    if landscape == "none":
        return 1.0
    n = max(1, max_num_seqs)
    ceiling_s0 = PEAK.rate * relative(n, max_num_batched_tokens, chunked_prefill)
    return n / (ceiling_s0 * PEAK.reference_s0_ms / 1e3)


def ceiling(
    max_num_seqs: int,
    max_num_batched_tokens: int,
    chunked_prefill: bool,
    s0_ms: float = PEAK.reference_s0_ms,
) -> float:
    """The request rate the `peak` server serves at most, for requests of `s0_ms` unscaled."""
    factor = delay_factor("peak", max_num_seqs, max_num_batched_tokens, chunked_prefill)
    return max(1, max_num_seqs) / (factor * s0_ms / 1e3)


def optimum(s0_ms: float = PEAK.reference_s0_ms) -> tuple[dict[str, object], float]:
    """The best knobs of `peak` and their ceiling (req/s)."""
    seqs = round(PEAK.best_seqs)
    knobs = {
        "max_num_seqs": seqs,
        "max_num_batched_tokens": round(PEAK.tokens_per_seq * seqs),
        "chunked_prefill": True,
    }
    return knobs, ceiling(seqs, int(knobs["max_num_batched_tokens"]), True, s0_ms)
