"""The quality text set: the texts every deployment scores with `quality=on`, and their checks.

A set is a local file (one text a line, or JSON Lines: a JSON string a line, or an object whose
`quality.text_field` holds the text) or, with `quality.texts` unset, the English corpus packaged
with `sweep` (`sweep/data/corpus.jsonl`), so an offline run needs nothing else. `load_text_set`
hands on its texts with their identity (name, sha256); `token_ids` tokenizes them with the
model's tokenizer and applies `quality.too_long`. `check_plan` runs both in the driver for a
model whose files are local, so a missing, empty or too-long set is one line before Ray starts.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.models.source import resolve_model_path
from backends.models.tokenizer import load_tokenizer
from sweep.core.errors import DatasetError

BUNDLED = "corpus"
NO_LIMIT = 10**9  # tokenizers without a known context say 1e30


@dataclass(frozen=True)
class TextSet:
    """The texts of a quality set and where each came from."""

    name: str
    sha256: str  # of the texts as a JSON list, UTF-8
    texts: tuple[str, ...]
    lines: tuple[int, ...]  # each text's line in its file (1-based)
    source: str

    def where(self, idx: int) -> str:
        """`text 3 (line 4 of texts.jsonl)`: how an error names a text."""
        return f"text {idx} (line {self.lines[idx]} of {self.source})"


def load_text_set(cfg: Any) -> TextSet:
    """The texts of `cfg` (a `QualityConfig`), at most `cfg.max_texts`.

    Raises:
        DatasetError: the file is missing or unreadable, a line is not what its format needs,
            or the set holds no text.
    """
    if cfg.texts is None:
        path = importlib.resources.files("sweep") / "data" / "corpus.jsonl"
        name, source, jsonl = BUNDLED, "the bundled corpus sweep/data/corpus.jsonl", True
    else:
        path = Path(os.path.expanduser(cfg.texts))
        name, source, jsonl = path.stem, str(cfg.texts), path.suffix == ".jsonl"
        if not path.is_file():
            raise DatasetError(f"quality.texts={cfg.texts!r} is not a file")
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the quality set {source}: {exc}") from None
    texts, lines = [], []
    for number, line in enumerate(raw, start=1):
        if not line.strip():
            continue
        text = _jsonl_text(line, cfg.text_field, f"line {number} of {source}") if jsonl else line
        if text.strip():
            texts.append(text)
            lines.append(number)
    if cfg.max_texts is not None:
        texts, lines = texts[: cfg.max_texts], lines[: cfg.max_texts]
    if not texts:
        raise DatasetError(f"the quality set {source} holds no text")
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()
    return TextSet(name, digest, tuple(texts), tuple(lines), source)


def _jsonl_text(line: str, field: str, where: str) -> str:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{where} is not JSON: {exc}") from None
    if isinstance(value, dict):
        value = value.get(field)
    if not isinstance(value, str):
        raise DatasetError(f"{where} is neither a JSON string nor an object with a {field!r} text")
    return value


def context_of(tokenizer: Any, max_model_len: int | None) -> int | None:
    """The model's context in tokens: `model.max_model_len`, else its tokenizer's limit."""
    if max_model_len is not None:
        return max_model_len
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < NO_LIMIT else None


def token_ids(
    text_set: TextSet, tokenizer: Any, context: int | None, too_long: str
) -> list[list[int]]:
    """Each text's ids (special tokens included, as a prompt's), fitted to `context`.

    Raises:
        DatasetError: `too_long=refuse` and a text is longer than `context`, naming it; or a
            text too short to score (fewer than two tokens).
    """
    encoded = []
    for idx, text in enumerate(text_set.texts):
        ids = list(tokenizer(text)["input_ids"])
        if context is not None and len(ids) > context:
            if too_long == "refuse":
                raise DatasetError(
                    f"quality set: {text_set.where(idx)} is {len(ids)} tokens, longer than the "
                    f"model's context of {context} (quality.too_long=truncate cuts it)"
                )
            ids = ids[:context]
        if len(ids) < 2:
            raise DatasetError(f"quality set: {text_set.where(idx)} has no token to score")
        encoded.append(ids)
    return encoded


def check_plan(config: Any, tokenizers: dict[Any, Any]) -> None:
    """The driver's check of a grid point's quality set, before anything runs.

    The texts are read and, where the model's files are local (a generated or on-disk model;
    a hub model is checked by its worker), tokenized against its context. `tokenizers` keeps
    each model's tokenizer, and what was checked, across the grid's points.

    Raises:
        DatasetError: one line naming the set or the text.
    """
    quality = config.quality
    if not quality.enabled:
        return
    text_set = load_text_set(quality)
    model = config.model
    if model.generator is None and not os.path.isdir(os.path.expanduser(str(model.path))):
        return
    path = resolve_model_path(model)
    checked = ("checked", path, model.max_model_len, repr(quality))
    if checked in tokenizers:
        return
    if path not in tokenizers:
        tokenizers[path] = load_tokenizer(path, model.revision, model.trust_remote_code)
    tokenizer = tokenizers[path]
    token_ids(text_set, tokenizer, context_of(tokenizer, model.max_model_len), quality.too_long)
    tokenizers[checked] = True
