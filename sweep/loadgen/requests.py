"""Turns dataset prompts and a workload into the requests a backend receives.

Output lengths are `workload.output_len`, or with `output_range_ratio` > 0 uniform integers in
[len * (1 - r), len * (1 + r)] drawn from the workload's seed, as vLLM's random dataset does.
A prompt that carries its own output length and arrival (a trace) keeps them. The first
`warmup_requests` prompts become untimed warm-up requests. Against a backend that serves LoRA
adapters each request names one (`sweep.loadgen.adapters`), warm-up requests included; a prompt's
images go with its request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from backends.base import GenRequest
from sweep.loadgen.adapters import assign_adapters


def output_lengths(workload: object, count: int) -> list[int]:
    """Requested output length of each of `count` requests."""
    ratio = workload.output_range_ratio
    if ratio <= 0:
        return [workload.output_len] * count
    rng = np.random.default_rng(workload.seed)
    low = max(1, int(round(workload.output_len * (1 - ratio))))
    high = max(low, int(round(workload.output_len * (1 + ratio))))
    return [int(n) for n in rng.integers(low, high + 1, size=count)]


def build_requests(
    prompts: Sequence[object], workload: object, adapters: Sequence[str] = ()
) -> tuple[list[GenRequest], list[GenRequest]]:
    """Split `prompts` into (warm-up requests, measured requests).

    `adapters`: the LoRA adapters the backend serves, by name (none: the base model's).
    """
    lengths = output_lengths(workload, len(prompts))
    chosen = assign_adapters(adapters, prompts, workload)
    made = [
        GenRequest(
            idx=i,
            prompt=p.text,
            prompt_token_ids=tuple(p.token_ids),
            max_tokens=n if p.output_tokens is None else p.output_tokens,  # a trace's own
            ignore_eos=workload.ignore_eos,
            temperature=workload.temperature,
            arrival_s=p.arrival_s,
            adapter=adapter,
            images=p.images,
        )
        for i, (p, n, adapter) in enumerate(zip(prompts, lengths, chosen, strict=True))
    ]
    warm = workload.warmup_requests
    measured = [dataclasses.replace(r, idx=i) for i, r in enumerate(made[warm:])]
    return made[:warm], measured
