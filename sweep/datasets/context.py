"""The one context limit a trial's prompts must fit, decided the same way in driver and worker.

A model's context is `model.max_model_len` where set, else its own `max_position_embeddings`
(read from `config.json` of a local model: a generated one or a directory; a hub id is not read
and then says nothing); a server may be started with a smaller one (`backend.max_model_len` of
vLLM, `backend.context_length` of SGLang). The limit is the smaller of the two. The driver calls
`context_of` with the model's local directory where it has one (`local_model_path`), the worker
with the path it resolved: the same files, so the same limit, and a trace the plan accepts is
never refused by its trial. The multi-turn sessions and the trace dataset read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.models.source import resolve_model_path

# The server-side keys, by the backends that have one (a backend without any says nothing).
SERVER_KEYS = ("max_model_len", "context_length")


@dataclass(frozen=True)
class Context:
    """A limit in tokens (None: nothing says) and the setting it came from, for messages."""

    tokens: int | None
    source: str


def context_of(config: Any, model_path: str | None = None) -> int | None:
    """The context in tokens a request must fit: `limit(config, model_path).tokens`."""
    return limit(config, model_path).tokens


def limit(config: Any, model_path: str | None = None) -> Context:
    """The smaller of the model's context and the server's, and where it came from.

    Args:
        config: A grid point's `Config` (`model`, `backend`).
        model_path: The model's local directory, whose `config.json` gives its own context
            when `model.max_model_len` is unset; None: not read.
    """
    model: tuple[int | None, str] = (config.model.max_model_len, "model.max_model_len")
    if model[0] is None and model_path:
        model = (_position_embeddings(Path(model_path) / "config.json"), "the model's config.json")
    known = [model] if isinstance(model[0], int) and model[0] > 0 else []
    backend = vars(config.backend)
    for key in SERVER_KEYS:
        value = backend.get(key)
        if isinstance(value, int) and value > 0:
            known.append((value, f"backend.{key}"))
    if not known:
        return Context(None, "none known")
    tokens, source = min(known, key=lambda pair: pair[0])
    return Context(tokens, source)


def local_model_path(model: Any) -> str | None:
    """The model's directory where the driver has its files (generated or local), else None."""
    if model.generator is None and not os.path.isdir(os.path.expanduser(str(model.path))):
        return None
    return resolve_model_path(model)


def _position_embeddings(path: Path) -> int | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) else None
