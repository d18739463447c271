"""Model sources: turn a model config into a path or hub id a backend can load.

A model with a `generator` is made locally by the project (no hub needed); any other model is
passed through as its hub id or local directory.
"""

from __future__ import annotations

import importlib

from sweep.core.config import GENERATED_MODEL_PATH
from sweep.core.errors import ConfigError

GENERATORS: dict[str, str] = {
    "tiny_llama": "backends.models.tiny:ensure_tiny_model",
}


def resolve_model_path(model: object) -> str:
    """Return the loadable path of `model` (a `ModelConfig`), generating it when needed."""
    generator = getattr(model, "generator", None)
    if generator is None:
        if str(model.path) == GENERATED_MODEL_PATH:  # a grid may still set the path later
            raise ConfigError(
                f"model.path={GENERATED_MODEL_PATH} needs model.generator (e.g. tiny_llama); "
                "or set model.path to a local directory or hub id"
            )
        return str(model.path)
    try:
        module_name, func_name = GENERATORS[generator].split(":")
    except KeyError:
        raise ConfigError(
            f"model.generator={generator!r} is unknown; choose one of: {', '.join(GENERATORS)}"
        ) from None
    return str(getattr(importlib.import_module(module_name), func_name)())
