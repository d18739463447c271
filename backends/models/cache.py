"""The cache of converted models: one directory per (model, engine format, options), built once.

Engines that need their own model format (CTranslate2, GGUF for llama.cpp) convert the Hugging
Face checkpoint on first use. `cached_build` hands on the directory of a finished conversion: it
is built in a temporary sibling and renamed into place in one step, so a reader never sees a
half-written model, and an exclusive file lock makes concurrent trials on one machine wait for
the first converter instead of converting twice. The root is `$SWEEP_CACHE_DIR/<kind>`, or
`~/.cache/llm-sweep/<kind>` when the variable is unset (the same root as the tiny model's).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweep.core.errors import BackendError, MissingExtraError

log = logging.getLogger(__name__)

# Files a conversion reads from a hub checkpoint (weights, configs, tokenizer), not the rest.
CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken")


def first_line(exc: BaseException) -> str:
    """An engine's exception as one line: its message's first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cache_root(kind: str) -> Path:
    """`$SWEEP_CACHE_DIR/<kind>`, or `~/.cache/llm-sweep/<kind>` when the variable is unset."""
    root = os.environ.get("SWEEP_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "llm-sweep"
    return base / kind


def entry_path(kind: str, key: str) -> Path:
    """Where the small JSON entry `key` of cache `kind` lives."""
    return cache_root(kind) / f"{key}.json"


def read_entry(kind: str, key: str) -> Any:
    """The JSON value of an entry; None when it is missing or unreadable."""
    try:
        return json.loads(entry_path(kind, key).read_text())
    except (OSError, ValueError):
        return None


def write_entry(kind: str, key: str, value: Any) -> None:
    """Write an entry atomically (readers see all of it or none); a read-only cache is logged."""
    path = entry_path(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except OSError as exc:  # a cache that cannot be written only costs the next reader time
        log.debug("%s entry %s not cached: %s", kind, key, exc)


def cache_key(model_path: str, **options: object) -> str:
    """A short hash naming one conversion: the model's location plus every conversion option.

    A local directory is keyed by its absolute path, so the same checkpoint reached through two
    relative paths converts once.
    """
    location = os.path.abspath(model_path) if os.path.isdir(model_path) else model_path
    text = json.dumps({"model": location, **options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def build_lock(root: Path, key: str) -> Iterator[None]:
    """Hold the exclusive lock of entry `key` under `root` (`.KEY.lock`), across processes.

    Builders of one entry on one machine (a node's deployments starting together) wait for the
    first instead of building it again. The lock goes with the file's closing, also on a crash.
    """
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_build(kind: str, key: str, build: Callable[[Path], None], label: str) -> Path:
    """Return `cache_root(kind)/key`, calling `build(empty_dir)` first if it does not exist yet.

    Args:
        kind: Cache sub-directory, one per engine format (`ct2`, `gguf`).
        key: Name of the entry, from `cache_key`.
        build: Writes the converted model into the empty directory it is given.
        label: What is being built, for the log and error messages.

    Raises:
        BackendError: the conversion failed (the partial output is removed).
    """
    root = cache_root(kind)
    dest = root / key
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root, key):
        if dest.is_dir():  # another process finished while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            log.info("converting %s into %s (once per model and options)", label, dest)
            try:
                build(tmp)
            except (MissingExtraError, BackendError):
                raise
            except Exception as exc:
                raise BackendError(f"converting {label} failed: {first_line(exc)}") from exc
            tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache may be shared
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def local_checkpoint(model_path: str) -> Path:
    """The local directory of a Hugging Face checkpoint: `model_path` itself or a hub download.

    Raises:
        BackendError: it is neither a directory nor downloadable.
    """
    if os.path.isdir(model_path):
        return Path(model_path)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        raise MissingExtraError("huggingface_hub", "dev") from exc
    try:
        return Path(snapshot_download(model_path, allow_patterns=list(CHECKPOINT_PATTERNS)))
    except Exception as exc:
        raise BackendError(f"cannot fetch model {model_path!r}: {first_line(exc)}") from None
