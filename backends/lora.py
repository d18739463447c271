"""LoRA adapters a deployment serves: which ones, from where, checked before anything launches.

A backend that serves adapters (`vllm_server`, `vllm`, `sglang_server`) has
`backend.lora_adapters`, a map of adapter name -> path (a PEFT adapter directory, or a
`generated[:rank=R][:targets=a+b][:seed=S]` adapter the project makes for its tiny model,
`backends.models.tiny_lora`), and `backend.lora_count`: how many adapters the server loads (None:
all of them). A count above the map's size serves copies of the listed adapters in turn, each
under a name of its own (`NAME-2`, ...), so one adapter directory is enough to sweep the number of
adapters; a server keeps each name apart as its own adapter. `served_adapters` is the one place
that decides the names and paths; the backend launches with them and the load generator
assigns each request one of their names (`sweep.loadgen.adapters`).

`resolve_adapters` runs in the backend's `start`, before any server or engine: a path that does
not exist, or a directory without `adapter_config.json`, fails the deployment in one line.
"""

from __future__ import annotations

import json
import pathlib
import zlib
from collections.abc import Mapping

from sweep.core import records as R
from sweep.core.errors import BackendError, ConfigError

ADAPTER_CONFIG = "adapter_config.json"
# vLLM takes only these values of --max-lora-rank (`vllm.config.lora.MaxLoRARanks`).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def check_lora(adapters: Mapping[str, str], count: int | None) -> None:
    """Config-time checks of `backend.lora_adapters` and `backend.lora_count` (paths: later).

    Raises:
        ConfigError: one line naming the key.
    """
    for name, path in adapters.items():
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(
                f"backend.lora_adapters: adapter name {name!r} must be letters, digits, '-_.'"
            )
        if not isinstance(path, str) or not path:
            raise ConfigError(f"backend.lora_adapters.{name} must be a path, got {path!r}")
    if count is not None:
        if count <= 0:
            raise ConfigError(f"backend.lora_count must be > 0, got {count}")
        if not adapters:
            raise ConfigError("backend.lora_count is set but backend.lora_adapters is empty")


def served_adapters(adapters: Mapping[str, str], count: int | None) -> dict[str, str]:
    """The adapters a server loads, name -> path as configured, in the config's order.

    The first `count` of `adapters` (all: None); past the end the listed ones again, in turn,
    named `NAME-2`, `NAME-3`, ... by their round.
    """
    listed = list(adapters.items())
    if not listed:
        return {}
    total = len(listed) if count is None else count
    served: dict[str, str] = {}
    for i in range(total):
        name, path = listed[i % len(listed)]
        served[name if i < len(listed) else f"{name}-{i // len(listed) + 1}"] = path
    return served


def resolve_adapters(adapters: Mapping[str, str], count: int | None) -> dict[str, str]:
    """`served_adapters` with every path made a local directory (generated ones built now).

    A generated adapter's seed is its listed name's, so adapters differ by name and a copy
    (`NAME-2`) has its original's weights.

    Raises:
        BackendError: one line for a path that does not exist or holds no adapter config.
    """
    from backends.models.tiny_lora import GeneratedSpec, ensure_tiny_lora, is_generated

    resolved: dict[str, str] = {}
    for name, path in served_adapters(adapters, count).items():
        if is_generated(path):
            base = name.rsplit("-", 1)[0] if name not in adapters else name
            spec = GeneratedSpec.parse(path, default_seed=zlib.crc32(base.encode()))
            resolved[name] = str(ensure_tiny_lora(spec))
            continue
        where = pathlib.Path(path).expanduser()
        if not where.exists():
            raise BackendError(
                f"backend.lora_adapters.{name}: {path} does not exist",
                kind=R.ERROR_BACKEND_START,
            )
        if not (where / ADAPTER_CONFIG).is_file():
            raise BackendError(
                f"backend.lora_adapters.{name}: {path} holds no {ADAPTER_CONFIG} (not a PEFT "
                f"LoRA adapter directory)",
                kind=R.ERROR_BACKEND_START,
            )
        resolved[name] = str(where.resolve())
    return resolved


def largest_rank(paths: Mapping[str, str]) -> int:
    """The largest `r` among the adapters' configs (0: none)."""
    configs = [json.loads((pathlib.Path(p) / ADAPTER_CONFIG).read_text()) for p in paths.values()]
    ranks = [config["r"] for config in configs]
    return max(ranks, default=0)


def vllm_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM takes that holds `rank`."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


def adapter_ids(names: list[str]) -> dict[str, int]:
    """The `lora_int_id` vLLM knows each adapter by: 1, 2, ... in order (0 means no adapter)."""
    return {name: i + 1 for i, name in enumerate(names)}
