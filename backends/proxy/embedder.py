"""Prompt embedders of the semantic cache: a hashing embedder of our own, or sentence-transformers.

`HashingEmbedder` needs no model and no download, so tests and CPU runs use it: it lower-cases
the text, splits it into words (runs of letters and digits) and counts three kinds of features,
each word, each pair of neighbouring words and the character trigrams of each word (padded with
`<` and `>`); every feature is hashed (CRC-32, the same in every process, unlike `hash`) into one
of `dim` buckets with a sign taken from the hash, and the vector is L2-normalised, so a dot
product is the cosine. A word changed or a short phrase appended moves a long prompt's vector a
little; two unrelated prompts share few features. It measures overlap of wording, not meaning.

`SentenceTransformerEmbedder` wraps a sentence-transformers model (the optional extra `proxy`),
normalised the same way. `load_embedder` picks one from `proxy.embedding_model` (None: hashing)
and turns a model that cannot be loaded into one `EmbedderError` line.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Protocol

import numpy as np

DEFAULT_DIM = 2048
_WORD = re.compile(r"\w+")
# Weights of the three kinds of features: wording in common counts more than spelling in common.
WORD_WEIGHT, PAIR_WEIGHT, TRIGRAM_WEIGHT = 1.0, 1.0, 0.5


class EmbedderError(Exception):
    """The embedding model cannot be used; the message is one line naming why."""


class Embedder(Protocol):
    """What the cache asks of an embedder: unit vectors of one length."""

    dim: int

    def embed(self, text: str) -> np.ndarray:
        """The L2-normalised float32 vector of `text`."""
        ...


class HashingEmbedder:
    """Hashed word, word-pair and character-trigram counts, L2-normalised (deterministic)."""

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = dim

    def embed(self, text: str) -> np.ndarray:
        """The unit vector of `text` (all zeros for a text without a word)."""
        vector = np.zeros(self.dim, dtype=np.float32)
        words = _WORD.findall(text.lower())
        for feature, weight in _features(words):
            h = zlib.crc32(feature.encode())
            # Low bits pick the bucket, bit 31 the sign: independent for any dim below 2**31.
            vector[h % self.dim] += weight if h >> 31 else -weight
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


def _features(words: list[str]) -> list[tuple[str, float]]:
    found = [(f"w:{w}", WORD_WEIGHT) for w in words]
    found += [(f"p:{a} {b}", PAIR_WEIGHT) for a, b in zip(words, words[1:], strict=False)]
    for word in words:
        padded = f"<{word}>"
        found += [(f"c:{padded[i : i + 3]}", TRIGRAM_WEIGHT) for i in range(len(padded) - 2)]
    return found


class SentenceTransformerEmbedder:
    """A sentence-transformers model's normalised embeddings."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dim = len(self.embed("probe"))  # a model that loads but cannot encode fails here

    def embed(self, text: str) -> np.ndarray:
        """The model's unit vector of `text`."""
        vector = self.model.encode(text, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vector, dtype=np.float32)


def load_embedder(name: str | None, device: str = "cpu") -> Embedder:
    """The hashing embedder for None, else the sentence-transformers model `name`.

    Raises:
        EmbedderError: sentence-transformers is not installed, or the model does not load.
    """
    if name is None:
        return HashingEmbedder()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        if exc.name != "sentence_transformers":  # installed, but one of its own imports fails
            raise EmbedderError(f"sentence-transformers does not import: {exc}") from None
        raise EmbedderError(
            f"proxy.embedding_model={name!r} needs the 'sentence-transformers' package: "
            "pip install -e '.[proxy]' (or leave proxy.embedding_model unset for the "
            "built-in hashing embedder)"
        ) from None
    try:
        return SentenceTransformerEmbedder(SentenceTransformer(name, device=device))
    except Exception as exc:  # whatever the loader raises (OSError, ValueError, HTTP errors)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbedderError(f"cannot load embedding model {name!r}: {first}") from None
