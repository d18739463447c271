"""The sim server's latency schedule and faults, defined once for its config and for the server.

`SimSchedule` holds the settings the server runs with; the sim backend's config
(`backends.sim.SimBackendConfig`) inherits them, and the backend hands them to the server as one
JSON argument. `max_num_seqs` (0: unlimited) bounds the requests running at once, like a
continuous-batching engine's batch: the rest wait first in, first out, and a request's `ttft_ms`
starts when it is admitted, so its TTFT is its queue wait plus `ttft_ms`. Every delay (the first
token's and each chunk's) grows by `load_ms_per_running` per running request, waiting ones not
counted; `jitter` scales each request's delays by its own lognormal factor (median 1). `500` and
`429` answer with that HTTP status; halfway through a stream, `truncate` ends the body without its
final events, `reset` drops the connection, `malformed` sends an event that is not JSON, and
`stall` stops sending (for an hour). On the chat API, `reasoning_tokens` of each reply's tokens (at
most all of them) are a reasoning model's thinking, streamed first under the delta field
`reasoning_field` (`reasoning` as vLLM >= 0.19 names it, or `reasoning_content` as older vLLM and
SGLang do) and counted in the usage's `completion_tokens_details.reasoning_tokens`; the answer
follows under `content`, and a chunk that holds the last reasoning token and the first answer
token carries both fields, as vLLM's do. A chat message's `image_url` parts each cost
`ms_per_image` before the first token and count `tokens_per_image` prompt tokens, as a
vision-language model's encoder and image tokens do. A chat request offering tools gets a tool
call (`backends.sim_server.tool_calls`): always when it requires one or names a function, in
`tool_call_rate` of replies when it leaves the choice to the model. With a `landscape` other
than `none`, every delay is also multiplied by that landscape's factor of `max_num_seqs`,
`max_num_batched_tokens` and `chunked_prefill` (`backends.sim_server.landscape`): a server whose
capacity is a known function of its arguments, the truth a tuner is checked against. The server
imports only this module of the config code, so it starts without the config libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweep.core.stream_chunks import REASONING_FIELDS

SIM_FAULT_KINDS = ("500", "429", "truncate", "malformed", "stall", "reset")


@dataclass
class SimSchedule:
    """The latency schedule and fault injection of one simulated server."""

    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    tokens_per_chunk: int = 1
    load_ms_per_running: float = 0.0
    max_num_seqs: int = 0  # requests running at once; 0: unlimited
    fault_rate: float = 0.0
    fault_kinds: list[str] = field(default_factory=lambda: list(SIM_FAULT_KINDS))
    seed: int = 0
    usage_skew: int = 0  # added to the final usage count only: a server miscounting its tokens
    # Added to every usage.prompt_tokens: a server reading prompts otherwise than the client.
    prompt_usage_skew: int = 0
    # Per-request spread of the delays: each request's ttft_ms and itl_ms are scaled by a
    # lognormal factor of median 1 and this sigma (0: exact), as real servers' requests differ.
    jitter: float = 0.0
    # A reasoning model's thinking: the first tokens of each chat reply (0: it does not reason).
    reasoning_tokens: int = 0
    reasoning_field: str = REASONING_FIELDS[0]
    # A vision-language model's images (chat `image_url` parts): each adds this to the request's
    # first-token delay (its encoder's time) and this many tokens to its `usage.prompt_tokens`.
    ms_per_image: float = 0.0
    tokens_per_image: int = 0
    # Tool calling (`tool_calls`): the share of chat replies that call one of the offered tools
    # when the request leaves the choice to the model (`tool_choice` auto).
    tool_call_rate: float = 0.0
    # A landscape (`backends.sim_server.landscape`): every delay scaled by a known function of
    # the knobs below, which change nothing under `none` (they stand in for an engine's).
    landscape: str = "none"
    max_num_batched_tokens: int = 0
    chunked_prefill: bool = False
