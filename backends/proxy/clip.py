"""Input and output limits a proxy enforces on an OpenAI request body (`proxy.max_*_tokens`).

`clip_body` returns the body the server should get: the prompt cut to `max_input_tokens` and the
output cap (`max_tokens`, and `max_completion_tokens` where the body has it) lowered to
`max_output_tokens`. Tokens are counted with the model's own tokenizer when the proxy has it
(`Counter`), else as whitespace-separated words:

- a completions prompt of token ids keeps its first (`truncation_side=right`) or last (`left`)
  `max_input_tokens` ids;
- a completions prompt of text is counted as the server counts it, special tokens such as BOS
  included; its content tokens beyond the limit are dropped and the rest decoded to text (cut
  again by one token while the decoded text re-tokenizes longer);
- a chat conversation's limit is on its messages' content tokens (the chat template's own tokens
  are not counted): with `right` the latest content is cut first, with `left` the earliest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Limits:
    """What `clip_body` enforces (None: that side is not limited)."""

    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    side: str = "right"  # the end dropped from a long prompt: right (its end) or left (its start)


class Counter:
    """Counts and cuts text in the model's tokens, or in words without a tokenizer."""

    def __init__(self, tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str, special: bool = False) -> int:
        """Tokens of `text` (with the special tokens a server adds around a prompt if asked)."""
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=special).input_ids)

    def keep(self, text: str, n: int, side: str) -> str:
        """At most `n` content tokens of `text`: its first n (`right`) or its last n (`left`)."""
        if n <= 0:
            return ""
        if self.tokenizer is None:
            words = text.split()
            return " ".join(words[:n] if side == "right" else words[len(words) - n :])
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        while True:
            kept = ids[:n] if side == "right" else ids[len(ids) - n :]
            cut = self.tokenizer.decode(kept, skip_special_tokens=False)
            if n <= 1 or self.count(cut) <= len(kept):
                return cut
            n -= 1  # the decoded text re-tokenized longer (a merge across the cut)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (the ids themselves, as words, without a tokenizer)."""
        if self.tokenizer is None:
            return " ".join(map(str, ids))
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass(frozen=True)
class Clipped:
    """The body to forward, and what was cut."""

    body: dict[str, Any]
    input_clipped: bool = False
    output_clipped: bool = False


def clip_body(body: dict[str, Any], api: str, limits: Limits, counter: Counter) -> Clipped:
    """The body with its prompt and its output cap within `limits` (a copy when changed)."""
    if limits.max_input_tokens is None and limits.max_output_tokens is None:
        return Clipped(body)
    body = copy.deepcopy(body)
    input_clipped = False
    if limits.max_input_tokens is not None:
        if api == "chat":
            input_clipped = _clip_messages(body.get("messages"), limits, counter)
        else:
            input_clipped = _clip_prompt(body, limits, counter)
    output_clipped = False
    if limits.max_output_tokens is not None:
        output_clipped = _cap_output(body, limits.max_output_tokens)
    return Clipped(body, input_clipped, output_clipped)


def _clip_prompt(body: dict[str, Any], limits: Limits, counter: Counter) -> bool:
    prompt, limit, side = body.get("prompt"), limits.max_input_tokens, limits.side
    if isinstance(prompt, list) and all(isinstance(i, int) for i in prompt):
        if len(prompt) <= limit:
            return False
        body["prompt"] = prompt[:limit] if side == "right" else prompt[len(prompt) - limit :]
        return True
    if not isinstance(prompt, str):
        return False  # a batch of prompts: not what the load generator sends; left alone
    total = counter.count(prompt, special=True)
    if total <= limit:
        return False
    special = total - counter.count(prompt)
    budget = limit - special
    cut = counter.keep(prompt, budget, side)
    while budget > 0 and counter.count(cut, special=True) > limit:
        budget -= 1
        cut = counter.keep(prompt, budget, side)
    body["prompt"] = cut
    return True


def _clip_messages(messages: Any, limits: Limits, counter: Counter) -> bool:
    if not isinstance(messages, list):
        return False
    texts = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    counts = [counter.count(m["content"]) for m in texts]
    if sum(counts) <= limits.max_input_tokens:
        return False
    remaining = limits.max_input_tokens
    # The budget is spent from the end that is kept: the start for `right`, the end for `left`.
    order = range(len(texts)) if limits.side == "right" else range(len(texts) - 1, -1, -1)
    for i in order:
        if counts[i] <= remaining:
            remaining -= counts[i]
            continue
        texts[i]["content"] = counter.keep(texts[i]["content"], remaining, limits.side)
        remaining = 0
    return True


def _cap_output(body: dict[str, Any], cap: int) -> bool:
    present = [f for f in OUTPUT_FIELDS if isinstance(body.get(f), int)]
    if not present:
        body["max_tokens"] = cap  # no cap asked: the server's default could exceed the limit
        return True
    clipped = False
    for field in present:
        if body[field] > cap:
            body[field] = cap
            clipped = True
    return clipped
