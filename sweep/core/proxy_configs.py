"""The `proxy` group's config dataclasses: what stands between the load generator and a server.

`none`, `clip` and `semantic_cache` (`backends.proxy` runs them). Re-exported by
`sweep.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.core.errors import check_choice, check_positive, raise_config

PROXY_TRUNCATION_SIDES = ("right", "left")


@dataclass
class ProxyConfig:
    """`proxy=none`: the load generator talks to the server itself.

    The other options start an HTTP proxy (`backends.proxy`) in the deployment's task, between
    the load generator and an OpenAI-compatible server; `name` says which.
    """

    name: str = "none"


@dataclass
class ClipProxyConfig(ProxyConfig):
    """A proxy that enforces input and output limits (`backends.proxy.clip`).

    `max_input_tokens` cuts a longer prompt: its tokens beyond the limit are dropped from its
    end (`truncation_side=right`) or its start (`left`), counted by the model's tokenizer (by
    words without one); `max_output_tokens` caps a body's `max_tokens` and
    `max_completion_tokens`. None leaves that side unlimited.
    """

    name: str = "clip"
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    truncation_side: str = "right"
    startup_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        check_positive(
            "proxy",
            max_input_tokens=self.max_input_tokens,
            max_output_tokens=self.max_output_tokens,
            startup_timeout_s=self.startup_timeout_s,
        )
        check_choice("proxy", "truncation_side", self.truncation_side, PROXY_TRUNCATION_SIDES)
        if self.name == "clip" and self.max_input_tokens is None and self.max_output_tokens is None:
            raise_config("proxy=clip needs proxy.max_input_tokens or proxy.max_output_tokens")


@dataclass
class SemanticCacheProxyConfig(ClipProxyConfig):
    """A proxy that answers near-duplicate prompts from a cache (`backends.proxy.cache`).

    Each prompt is embedded (`embedding_model`: a sentence-transformers model, extra `proxy`;
    None: the built-in hashing embedder, `backends.proxy.embedder`); when the most similar
    cached prompt's cosine similarity is at least `threshold`, its answer is streamed back at
    `hit_tokens_per_s` (None: all at once) without asking the server; otherwise the server's
    answer is streamed through and cached (at most `max_entries`, the oldest dropped first).
    The clip limits apply too when set. The default threshold suits the hashing embedder: on
    the shipped prompts a rewording (`dataset.paraphrase_rate`) scored 0.85 or more, two
    different prompts 0.67 or less.
    """

    name: str = "semantic_cache"
    threshold: float = 0.8
    embedding_model: str | None = None
    hit_tokens_per_s: float | None = 100.0
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.threshold <= 1.0:
            raise_config(f"proxy.threshold must be in (0, 1], got {self.threshold}")
        check_positive(
            "proxy", hit_tokens_per_s=self.hit_tokens_per_s, max_entries=self.max_entries
        )
