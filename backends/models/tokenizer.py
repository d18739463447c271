"""Loading a model's tokenizer in a worker, without importing torch where it is not needed.

`AutoTokenizer` picks the tokenizer class from the model's files, but importing it imports torch
(through transformers' configuration and generation modules): 3.3 s per process here, against
0.8 s for a tokenizer class alone. Every deployment's worker loads the tokenizer (the dataset is
tokenized where it runs), so on a sweep of server backends, which never need torch in the
worker, deployments starting together on a node spend most of their start-up importing it.

`load_tokenizer` therefore remembers, per local model directory, which class AutoTokenizer
chose, and afterwards loads that class directly: the very `from_pretrained` call AutoTokenizer
ends in, with the same arguments. An entry is keyed by the transformers version and the bytes of
every file AutoTokenizer decides from (tokenizer_config.json, config.json), so an edited model or
another transformers version asks AutoTokenizer again. Hub ids, remote code and a first load go
through AutoTokenizer. Entries live in `$SWEEP_CACHE_DIR/tokenizers/<key>.json`, one small file
each, written atomically.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

from backends.models.cache import first_line, read_entry, write_entry
from sweep.core import records as R
from sweep.core.errors import BackendError

# What AutoTokenizer reads to choose the class (besides the class name it finds there).
DECIDING_FILES = ("tokenizer_config.json", "config.json")
CACHE_KIND = "tokenizers"


def load_tokenizer(model_path: str, revision: str | None = None, remote_code: bool = False) -> Any:
    """The tokenizer AutoTokenizer would load for `model_path`, cheaply after the first time.

    Raises:
        BackendError: kind `backend_start_failed`, when the tokenizer cannot be loaded.
    """
    key = None if remote_code else class_key(model_path, revision)
    try:
        cls = _cached_class(key) if key else None
        if cls is not None:
            return cls.from_pretrained(model_path, revision=revision)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            model_path, revision=revision, trust_remote_code=remote_code
        )
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"cannot load the tokenizer of {model_path!r}: {first_line(exc)}",
            kind=R.ERROR_BACKEND_START,
        ) from None
    if key:
        _remember(key, type(tokenizer))
    return tokenizer


def class_key(model_path: str, revision: str | None) -> str | None:
    """The cache key of a local model directory's tokenizer class; None for anything else."""
    path = Path(model_path)
    if not path.is_dir():
        return None
    import transformers

    digest = hashlib.sha256(f"{transformers.__version__}\0{revision}".encode())
    for name in DECIDING_FILES:
        file = path / name
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update(file.read_bytes() if file.is_file() else b"<absent>")
    return digest.hexdigest()[:24]


def _cached_class(key: str) -> type | None:
    entry = read_entry(CACHE_KIND, key)
    try:
        cls = getattr(importlib.import_module(entry["module"]), entry["name"])
    except (TypeError, KeyError, ImportError, AttributeError):
        return None  # no entry, or one this installation cannot honour: ask AutoTokenizer
    return cls if isinstance(cls, type) else None


def _remember(key: str, cls: type) -> None:
    if not cls.__module__.startswith("transformers."):
        return  # a class from remote or user code is not looked up by name later
    write_entry(CACHE_KIND, key, {"module": cls.__module__, "name": cls.__qualname__})
