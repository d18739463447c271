"""Which LoRA adapter each request asks for (`workload.lora_assignment`), decided up front.

Against a backend that serves adapters (`Backend.adapters`, `backends.lora`), every request
names one: `uniform` draws each request's adapter with equal chances; `zipf` gives the k-th
served adapter (in the config's order) a chance in proportion to 1 / k^`lora_skew`, the skewed
popularity that multi-adapter serving papers (S-LoRA, Punica) replay; `dataset` takes each
prompt's own adapter (`Prompt.adapter`, e.g. from a trace's column) and refuses one that is not
served; `base` sends every request to the base model while the adapters stay loaded (what
serving adapters costs plain traffic). Draws come from the workload's seed, so a trial's
assignment is the same every run. Against a backend that serves none, requests go to the base
model, and `dataset` is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sweep.core.errors import ConfigError, DatasetError

SEED_OFFSET = 7919  # draws apart from the output lengths' (`sweep.loadgen.requests`)


def zipf_weights(count: int, skew: float) -> np.ndarray:
    """The chance of each of `count` ranked adapters under Zipf with exponent `skew`."""
    weights = 1.0 / np.arange(1, count + 1, dtype=float) ** skew
    return weights / weights.sum()


def assign_adapters(
    adapters: Sequence[str], prompts: Sequence[object], workload: object
) -> list[str | None]:
    """The adapter of each prompt's request, in order (None: the base model).

    Raises:
        ConfigError: `dataset` assignment against a backend that serves no adapters.
        DatasetError: a prompt names no adapter, or one the backend does not serve.
    """
    how = workload.lora_assignment
    if how == "dataset":
        return _from_dataset(adapters, prompts)
    if not adapters or how == "base":
        return [None] * len(prompts)
    rng = np.random.default_rng(workload.seed + SEED_OFFSET)
    weights = zipf_weights(len(adapters), workload.lora_skew) if how == "zipf" else None
    picks = rng.choice(len(adapters), size=len(prompts), p=weights)
    return [adapters[int(i)] for i in picks]


def _from_dataset(adapters: Sequence[str], prompts: Sequence[object]) -> list[str | None]:
    if not adapters:
        raise ConfigError(
            "workload.lora_assignment=dataset sends each prompt to its own LoRA adapter: set "
            "backend.lora_adapters"
        )
    served = set(adapters)
    for i, prompt in enumerate(prompts):
        if prompt.adapter is None:
            raise DatasetError(
                f"workload.lora_assignment=dataset: prompt {i} names no adapter (the dataset "
                "has no adapter column)"
            )
        if prompt.adapter not in served:
            raise DatasetError(
                f"workload.lora_assignment=dataset: prompt {i} asks for adapter "
                f"{prompt.adapter!r}, not served (backend.lora_adapters: {', '.join(adapters)})"
            )
    return [prompt.adapter for prompt in prompts]
