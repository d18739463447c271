"""A model's architecture facts, read from its own files: layers, KV heads, head size, parameters.

The worker records them in each trial's summary (`model.num_layers`, `model.num_kv_heads`,
`model.head_dim`, and `model.num_params_b` when the config left it unset), so the roofline's MBU
counts the KV cache read per decode step, not only the weights. Nothing is loaded: `config.json`
gives the shape, and the safetensors headers (a length and a JSON table of tensor shapes at the
start of each file) give the exact parameter count. A hub model is read from the local Hugging
Face cache once its backend has downloaded it; what cannot be found is left out.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from sweep.core import records as R

SAFETENSORS_HEADER_MAX = 100 * 2**20  # a header larger than this is not a safetensors header


def architecture(model_path: str, revision: str | None = None) -> dict[str, float]:
    """The summary columns this model's files support (empty when none can be read)."""
    config = _read_json(_model_file(model_path, "config.json", revision))
    if not isinstance(config, dict):
        return {}
    config = config.get("text_config", config)  # multimodal wrappers nest the language model
    facts: dict[str, float] = {}
    layers = config.get("num_hidden_layers")
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim")
    if head_dim is None and heads and config.get("hidden_size"):
        head_dim = config["hidden_size"] // heads
    for column, value in (
        (R.MODEL_NUM_LAYERS, layers),
        (R.MODEL_NUM_KV_HEADS, kv_heads),
        (R.MODEL_HEAD_DIM, head_dim),
    ):
        if isinstance(value, int | float) and value > 0:
            facts[column] = float(value)
    # A quantized checkpoint packs several weights into each stored integer: its tensor shapes
    # undercount the parameters (8x for 4-bit GPTQ), so only the config can say.
    params = None if config.get("quantization_config") else parameter_count(model_path, revision)
    if params:
        facts[R.MODEL_NUM_PARAMS_B] = params / 1e9
    return facts


def tokenizer_summary(model_path: str, revision: str | None = None) -> str | None:
    """The model's tokenizer in words, read from its files; None where they cannot be read.

    Its class and vocabulary size, e.g. "LlamaTokenizerFast (370 tokens)": what a trial's
    `model.tokenizer` records, so that two results tokenized differently are told apart
    without loading either tokenizer.
    """
    config = _read_json(_model_file(model_path, "tokenizer_config.json", revision))
    table = _read_json(_model_file(model_path, "tokenizer.json", revision))
    if not isinstance(config, dict) and not isinstance(table, dict):
        return None
    name = (config or {}).get("tokenizer_class") or "tokenizer"
    vocab = ((table or {}).get("model") or {}).get("vocab")
    if not isinstance(vocab, dict | list):
        return str(name)
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    ids |= {t.get("id") for t in (table or {}).get("added_tokens") or [] if isinstance(t, dict)}
    return f"{name} ({len(ids)} tokens)"


def parameter_count(model_path: str, revision: str | None = None) -> int | None:
    """Parameters in the model's safetensors files, from their headers; None without them."""
    root = Path(model_path)
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        index = _read_json(_model_file(model_path, "model.safetensors.index.json", revision))
        names = sorted(set((index or {}).get("weight_map", {}).values()))
        names = names or ["model.safetensors"]
        files = [f for f in (_model_file(model_path, n, revision) for n in names) if f]
    total = 0
    for path in files:
        header = _safetensors_header(path)
        if header is None:
            return None
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total or None


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > SAFETENSORS_HEADER_MAX:
                return None
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return None


def _model_file(model_path: str, name: str, revision: str | None) -> Path | None:
    """`name` in a local model folder, else in the local Hugging Face cache (never downloaded)."""
    local = Path(model_path) / name
    if local.is_file():
        return local
    if Path(model_path).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return None
    try:
        found = try_to_load_from_cache(model_path, name, revision=revision)
    except ValueError:  # not a repo id
        return None
    return Path(found) if isinstance(found, str) else None


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
