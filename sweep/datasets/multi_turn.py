"""The `multi_turn` dataset: the user messages of conversations, their think times, their checks.

`generate` makes one user message per request, each exactly `user_len` tokens long on its own
(special tokens excluded), by `sweep.datasets.random_tokens`' re-tokenizing loop; without a local
tokenizer, corpus text of about that length. The load generator groups them into sessions of
`num_turns` (`sweep.loadgen.sessions`, which sends each turn with its history) and waits
`think_times` between a reply and the next turn. `check_plan` refuses, before Ray starts, what
cannot run as conversations; `overflow` says when a session cannot fit the model's context
(`sweep.datasets.context`) however its replies turn out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends import backend_class
from sweep.core.dataset_configs import MultiTurnDatasetConfig, RandomDatasetConfig
from sweep.core.errors import ConfigError
from sweep.core.tools import check_tool_choice, load_tools
from sweep.datasets import corpus, random_tokens
from sweep.datasets.chat import ChatTokenizer
from sweep.datasets.context import context_of
from sweep.datasets.prompt import Prompt

NAME = "multi_turn"
# Modes that keep streams busy; a stream runs one session at a time (`sweep.loadgen.sessions`).
SESSION_MODES = ("closed_loop", "throughput_bound", "latency_bound", "open_loop")


def generate(cfg: MultiTurnDatasetConfig, tokenizer: Any, num: int) -> list[Prompt]:
    """`num` user messages of exactly `cfg.user_len` tokens each (special tokens excluded).

    Each Prompt holds the message as a prompt of its own (special tokens included): that is
    what a warm-up request sends.
    """
    if tokenizer is None:  # the server counts: lengths are approximate
        return corpus.prompts([cfg.user_len] * num, np.random.default_rng(cfg.seed))
    if isinstance(tokenizer, ChatTokenizer):  # a message's own length: the template comes per turn
        tokenizer = tokenizer.tokenizer
    special = tokenizer.num_special_tokens_to_add(pair=False)
    alone = RandomDatasetConfig(input_len=cfg.user_len + special, seed=cfg.seed)
    return random_tokens.generate(alone, tokenizer, num)


def think_times(cfg: MultiTurnDatasetConfig, sessions: int) -> np.ndarray:
    """Seconds each session's user thinks before each turn: (sessions, num_turns), 0 first.

    Drawn from `cfg.seed` on a stream of its own, so the messages do not change with it.
    """
    return _waits(cfg, sessions, cfg.think_time_s, cfg.think_time_dist, 1)


def tool_latencies(cfg: MultiTurnDatasetConfig, sessions: int) -> np.ndarray:
    """Seconds each session's tools take before each turn that answers a call, as `think_times`.

    A turn waits its tool latency instead of its think time when the reply before it called
    tools; drawn on a stream of its own, so think times do not change with it.
    """
    return _waits(cfg, sessions, cfg.tool_latency_s, cfg.tool_latency_dist, 2)


def _waits(cfg: MultiTurnDatasetConfig, sessions: int, mean: float, dist: str, stream: int):
    shape = (sessions, cfg.num_turns - 1)
    rng = np.random.default_rng([cfg.seed, stream])
    if dist == "exponential" and mean > 0:
        drawn = rng.exponential(mean, size=shape)
    elif dist == "uniform":
        drawn = rng.uniform(0.0, 2 * mean, size=shape)
    else:
        drawn = np.full(shape, mean, dtype=float)
    return np.hstack([np.zeros((sessions, 1)), drawn])


def overflow(cfg: MultiTurnDatasetConfig, workload: Any, context: int | None) -> str | None:
    """Why the sessions cannot fit `context` tokens whatever the replies are; None if they may.

    Turn k sends k user messages and k - 1 replies and asks for one more reply, so it needs
    up to k x (user_len + the longest output); chat templates and separators add a few tokens
    more, which the load generator counts exactly at each turn. With `on_overflow=refuse` the
    last turn must fit; with `truncate`, a turn without its history.
    """
    if context is None:
        return None
    longest = _longest_output(workload)
    per_turn = cfg.user_len + longest
    if cfg.on_overflow == "truncate":
        if per_turn <= context:
            return None
        return (
            f"dataset=multi_turn: a turn alone needs up to {cfg.user_len} user + {longest} "
            f"output tokens = {per_turn} > the context {context}, even with its history dropped; "
            "shorten dataset.user_len or workload.output_len"
        )
    turn = next((k for k in range(1, cfg.num_turns + 1) if k * per_turn > context), None)
    if turn is None:
        return None
    return (
        f"dataset=multi_turn: session 0, turn {turn} (every session is alike) needs up to "
        f"{turn} x ({cfg.user_len} user + {longest} output) = {turn * per_turn} tokens > the "
        f"context {context} (dataset.on_overflow=refuse); set dataset.on_overflow=truncate, "
        "or fewer dataset.num_turns, a shorter dataset.user_len or workload.output_len"
    )


def check_plan(config: Any) -> None:
    """Refuse, before any trial runs, a multi-turn grid point that cannot run as sessions.

    Raises:
        ConfigError: one line naming the key (and the backend) that does not fit.
    """
    dataset, workload = config.dataset, config.workload
    if dataset.name != NAME:
        return
    backend = config.backend.name
    interface = backend_class(backend).interface
    if interface == "engine":
        raise ConfigError(
            f"dataset=multi_turn needs a server backend (sim, vllm_server, openai): "
            f"backend={backend} runs in process and cannot send a conversation's history"
        )
    if interface != "openai":
        raise ConfigError(
            f"dataset=multi_turn needs each reply's text, which backend={backend}'s native "
            "stream does not give: use backend=openai against the server's /v1 endpoint"
        )
    if workload.name not in SESSION_MODES:
        raise ConfigError(
            f"dataset=multi_turn cannot run workload={workload.name}: a turn waits for the "
            f"reply before it; use one of {', '.join(SESSION_MODES)}"
        )
    if workload.num_requests % dataset.num_turns:
        raise ConfigError(
            f"workload.num_requests={workload.num_requests} counts turns: it must be a multiple "
            f"of dataset.num_turns={dataset.num_turns} (whole sessions)"
        )
    if workload.client_processes > 1:
        raise ConfigError("dataset=multi_turn runs from one process: unset client_processes")
    shaped = workload.duration_s is not None or workload.stages or workload.ramp != "none"
    if shaped or workload.cancel_rate:
        raise ConfigError(
            "dataset=multi_turn runs whole sessions: unset workload.duration_s, ramp, stages "
            "and cancel_rate"
        )
    if dataset.tools is not None and getattr(config.backend, "api", None) != "chat":
        raise ConfigError(
            f"dataset.tools={dataset.tools} offers tools in chat requests: set backend.api=chat "
            f"(backend={backend} sends completions)"
        )
    check_tool_choice(load_tools(dataset.tools), dataset.tool_choice)
    reason = overflow(dataset, workload, context_of(config))
    if reason is not None:
        raise ConfigError(reason)


def _longest_output(workload: Any) -> int:
    """The largest output length `sweep.loadgen.requests.output_lengths` may draw."""
    ratio = workload.output_range_ratio
    if ratio <= 0:
        return workload.output_len
    low = max(1, int(round(workload.output_len * (1 - ratio))))
    return max(low, int(round(workload.output_len * (1 + ratio))))
