"""The semantic cache: prompts' unit vectors and their recorded answers, searched by cosine.

`SemanticCache.lookup` compares a prompt's vector with every cached one (one matrix-vector
product: the vectors are unit length, so the dot product is the cosine similarity) and returns
the answer of the most similar when it reaches the threshold. `store` adds an entry; beyond
`max_entries` the oldest is overwritten. `prompt_text` is the text a request is embedded by: a
completions prompt (token ids decoded), or a chat conversation's message contents, one a line.
An `Answer` is what a streamed response said, as `backends.proxy.stream` recorded it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.proxy.clip import Counter
from sweep.core.stream_chunks import reasoning_split

# Float32 rounding: a prompt identical to a cached one scores 1 - 6e-8, which a threshold of 1
# must still accept.
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Answer:
    """A recorded streamed answer: each chunk's text and tokens, and the server's usage.

    `exact` says whether the per-chunk tokens are the server's own running counts (continuous
    usage), which a replay may then report as it did. `reasoning` holds each chunk's reasoning
    text beside its answer text in `texts` (empty for a model that does not reason), streamed
    under the delta field `reasoning_field`.
    """

    texts: tuple[str, ...]
    tokens: tuple[int, ...]
    exact: bool
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning: tuple[str, ...] = ()
    reasoning_field: str = "reasoning"
    reasoning_shares: tuple[float, ...] = ()
    reasoning_tokens: int | None = None

    def split(self, chunks: int | None = None) -> tuple[int, int]:
        """(reasoning, answer) tokens of the answer's first `chunks` chunks (all: None).

        By the load generator's rule (`stream_chunks.reasoning_split`): the server's counts of
        the whole answer where it sent them, else the chunks' shares of their recorded tokens
        (one a chunk at least where the server said no more: an estimate).
        """
        whole = chunks is None or chunks >= len(self.tokens)
        tokens = self.tokens if whole else self.tokens[:chunks]
        shares = self.reasoning_shares[: len(tokens)] or None
        if not whole:
            return reasoning_split(tokens, shares, None)
        thought, answer = reasoning_split(tokens, shares, self.reasoning_tokens)
        if self.completion_tokens is None:
            return thought, answer
        return min(thought, self.completion_tokens), self.completion_tokens - min(
            thought, self.completion_tokens
        )


class SemanticCache:
    """At most `max_entries` (vector, answer) pairs; a lookup hits at `threshold` or above."""

    def __init__(self, dim: int, threshold: float, max_entries: int) -> None:
        self.threshold = threshold
        self.max_entries = max_entries
        self._vectors = np.zeros((min(max_entries, 64), dim), dtype=np.float32)
        self._answers: list[Answer] = []
        self._next = 0  # the slot the next entry takes once the cache is full

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(self, vector: np.ndarray) -> tuple[Answer | None, float]:
        """The most similar entry's answer if it reaches the threshold, and its similarity."""
        if not self._answers:
            return None, 0.0
        similarities = self._vectors[: len(self._answers)] @ vector
        best = int(np.argmax(similarities))
        similarity = float(similarities[best])
        if similarity >= self.threshold - _TOLERANCE:
            return self._answers[best], similarity
        return None, similarity

    def store(self, vector: np.ndarray, answer: Answer) -> None:
        """Add an entry, overwriting the oldest when the cache is full."""
        size = len(self._answers)
        if size < self.max_entries:
            if size == len(self._vectors):
                grown = min(2 * size, self.max_entries)
                self._vectors = np.resize(self._vectors, (grown, self._vectors.shape[1]))
            self._vectors[size] = vector
            self._answers.append(answer)
            return
        self._vectors[self._next] = vector
        self._answers[self._next] = answer
        self._next = (self._next + 1) % self.max_entries

    def clear(self) -> None:
        """Forget every entry (between trials: each starts with an empty cache)."""
        self._answers.clear()
        self._next = 0


def prompt_text(body: dict[str, Any], api: str, counter: Counter) -> str | None:
    """The text a request is cached under; None when the body holds no prompt we can read."""
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        contents = [m.get("content") for m in messages if isinstance(m, dict)]
        return "\n".join(c for c in contents if isinstance(c, str))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) for i in prompt):
        return counter.decode(prompt)
    return None
