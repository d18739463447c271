"""Prompts kept on disk, so that a worker that has made a trial's prompts once needs no tokenizer.

Making prompts needs the model's tokenizer, and loading one imports transformers: 0.7 s of CPU
per worker process here, paid by every deployment of a sweep as it starts, while the deployments
of a node start together. Random prompts also re-tokenize until each length is exact, which on a
large vocabulary takes longer than the load.

Prompts depend only on the dataset config, their number, the tokenizer's files, the versions of
transformers and tokenizers, and the code in `sweep.datasets` that makes them. An entry is keyed
by all of these, so changing any of them makes new prompts. Only a local model directory without
remote code, and the datasets made from their config alone or from files we can fingerprint
(`random`, `shared_prefix`, `prompts`, `trace`: the trace file's sha256, its window, block size
and seed, and the context limit its rows were fitted to), are cached; a hub id or an `hf`
dataset is made each time. Entries live in `$SWEEP_CACHE_DIR/prompts/<key>.json`, written
atomically; an entry that does not read back as exactly the prompts asked for is made again. A
source without a local tokenizer (`local=False`: the endpoint counts tokens) loads none and
caches nothing: its prompts are text, cheap to make. Chat prompts (`chat=True`) are cached
apart from the others.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from backends.models.cache import entry_path, read_entry, write_entry
from backends.models.tokenizer import load_tokenizer
from sweep.datasets import AT_MOST, load_prompts, prompt_file, trace
from sweep.datasets.context import Context
from sweep.datasets.prompt import Prompt

CACHE_KIND = "prompts"
FORMAT = 3  # bump when the entry layout changes (3: a trace's output lengths and arrivals)
# Files of a model directory a tokenizer can read: configs, vocabularies, templates.
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja")
VERSIONED = ("transformers", "tokenizers")
CACHED_DATASETS = ("random", "prompts", "shared_prefix", "trace")


class PromptSource:
    """The prompts of one model's tokenizer: from the cache, or made (and cached) on a miss.

    The tokenizer is loaded only when some prompts must be made, at most once; never when
    `local` is False (the server's counts are used). With `chat` the prompts go out as chat
    messages, and their ids and lengths include the model's chat template. `context` is the
    deployment's context limit (`sweep.datasets.context`), which a trace's rows must fit.
    """

    def __init__(
        self,
        model_path: str,
        revision: str | None,
        remote_code: bool,
        local: bool = True,
        chat: bool = False,
        context: Context | None = None,
    ) -> None:
        self.model_path, self.revision, self.remote_code = model_path, revision, remote_code
        self.local, self.chat, self.context = local, chat, context
        self._tokenizer: Any = None
        self._model_digest: str | None = None

    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded on first use; None without a local tokenizer.

        Raises:
            BackendError: kind `backend_start_failed`, when it cannot be loaded.
        """
        if self._tokenizer is None and self.local:
            self._tokenizer = load_tokenizer(self.model_path, self.revision, self.remote_code)
        return self._tokenizer

    def prompts(self, cfg: Any, num: int) -> list[Prompt]:
        """Exactly `num` prompts of dataset `cfg`, as `sweep.datasets.load_prompts` makes them."""
        key = self.key(cfg, num)
        if key is not None:
            cached = _read(key, num, exact=cfg.name not in AT_MOST)
            if cached is not None:
                return cached
        prompts = load_prompts(cfg, self.tokenizer(), num, chat=self.chat, context=self.context)
        if key is not None:
            _write(key, prompts)
        return prompts

    def is_cached(self, cfg: Any, num: int) -> bool:
        """Whether the cache has an entry for these prompts (then no tokenizer is needed)."""
        key = self.key(cfg, num)
        return key is not None and entry_path(CACHE_KIND, key).is_file()

    def key(self, cfg: Any, num: int) -> str | None:
        """The cache key of these prompts; None when they are not cached."""
        if not self.local or self.remote_code or cfg.name not in CACHED_DATASETS:
            return None
        model = self._model()
        if model is None:
            return None
        fields = dataclasses.asdict(cfg)
        parts = [FORMAT, model, fields, num, self.chat]
        if cfg.name == "trace":  # the rows kept depend on the context; the file is its bytes
            parts.append(None if self.context is None else self.context.tokens)
        text = json.dumps(parts, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode())
        if cfg.name == "prompts":
            digest.update(_file_digest(Path(prompt_file.path_of(cfg))).encode())
        if cfg.name == "trace":
            digest.update(_file_digest(Path(trace.resolve(cfg.path))).encode())
        return digest.hexdigest()[:24]

    def _model(self) -> str | None:
        """A digest of everything but the dataset that the prompts depend on."""
        if self._model_digest is None:
            path = Path(self.model_path)
            if not path.is_dir():
                return None
            digest = hashlib.sha256(f"{self.revision}\0{_versions()}\0{_code()}".encode())
            for file in sorted({f for p in TOKENIZER_PATTERNS for f in path.glob(p)}):
                digest.update(f"\0{file.name}\0{_file_digest(file)}".encode())
            self._model_digest = digest.hexdigest()
        return self._model_digest


def _versions() -> str:
    versions = []
    for name in VERSIONED:
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=absent")
    return ",".join(versions)


def _code() -> str:
    """A digest of the code that makes prompts: a change to it must not reuse old prompts."""
    digest = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "<unreadable>"  # the generator reports a missing file; nothing to cache
    return _digest_of(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _digest_of(path: Path, mtime_ns: int, size: int) -> str:
    """A file's sha256, read once per version of the file (a week-long trace is large)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return "<unreadable>"
    return digest.hexdigest()


def _read(key: str, num: int, exact: bool) -> list[Prompt] | None:
    entry = read_entry(CACHE_KIND, key)
    try:
        prompts = [
            Prompt(
                p["text"],
                tuple(p["ids"]),
                len(p["ids"]),
                p["task"],
                p["out"],
                p["at"],
                p["of"],
                adapter=p.get("ad"),
            )
            for p in entry
        ]
    except (KeyError, TypeError, ValueError):
        return None  # no entry, or not one of ours
    return prompts if len(prompts) == num or (not exact and len(prompts) <= num) else None


def _write(key: str, prompts: list[Prompt]) -> None:
    entry = [
        {
            "text": p.text,
            "ids": list(p.token_ids),
            "task": p.task,
            "out": p.output_tokens,
            "at": p.arrival_s,
            "of": p.near_duplicate_of,
            "ad": p.adapter,
        }
        for p in prompts
    ]
    write_entry(CACHE_KIND, key, entry)
