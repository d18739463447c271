"""Hugging Face Llama checkpoint to GGUF, llama.cpp's model file, written with the `gguf` package.

llama-cpp-python ships the binding but not llama.cpp's conversion script, so this module does the
part of it the benchmarks need: the Llama architecture (`LlamaForCausalLM`, and Mistral, which
llama.cpp loads as Llama), f32 or f16 weights, and the tokenizer from `tokenizer.json`, either a
byte-level BPE (written as `gpt2` tokens and merges, like the project's tiny model) or a
SentencePiece-style BPE with byte fallback (written as `llama`, like Llama-2). Tensors are read
and written one at a time (the header is written from shapes alone), so a 7B model converts in
about the memory of its largest tensor. `convert_to_gguf` hands on the finished file;
`backends.llamacpp` caches it through `backends.models.cache`.

Usage:
    python -m backends.models.gguf_convert HF_MODEL_DIR OUT.gguf [f32|f16]
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sweep.core.errors import BackendError, MissingExtraError

# Bump when the output changes, so cached conversions are redone (part of the cache key).
CONVERTER_VERSION = 1
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
OUTTYPES = {"f32": np.float32, "f16": np.float16}


def import_gguf() -> Any:
    """The `gguf` module, or a one-line error naming the extra to install."""
    try:
        import gguf
    except ImportError as exc:
        raise MissingExtraError("gguf", "llamacpp") from exc
    return gguf


def convert_to_gguf(checkpoint: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Write the Llama checkpoint in `checkpoint` as one GGUF file.

    Args:
        checkpoint: A local Hugging Face model directory (config.json, *.safetensors,
            tokenizer.json).
        out_file: The .gguf file to write.
        outtype: `f32` or `f16` for the matrices; norms stay f32 as llama.cpp expects.

    Returns:
        `out_file`.

    Raises:
        BackendError: the architecture, tokenizer or a tensor is not supported.
    """
    gguf = import_gguf()
    checkpoint, out_file = Path(checkpoint), Path(out_file)
    hparams = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    arch = next((a for a in hparams.get("architectures", []) if a in ARCHITECTURES), None)
    if arch is None:
        raise BackendError(
            f"GGUF conversion supports {', '.join(ARCHITECTURES)}, not "
            f"{hparams.get('architectures')}; give backend.gguf_file instead"
        )
    if outtype not in OUTTYPES:
        raise BackendError(f"GGUF outtype {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    writer = gguf.GGUFWriter(out_file, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _write_hparams(gguf, writer, hparams, checkpoint.name, outtype)
        _write_vocab(gguf, writer, checkpoint, hparams["vocab_size"])
        tensors = list(_tensor_plan(gguf, checkpoint, hparams, OUTTYPES[outtype]))
        for name, shape, dtype, _ in tensors:
            writer.add_tensor_info(name, shape, np.dtype(dtype), _nbytes(shape, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, _, dtype, load in tensors:
            writer.write_tensor_data(load().astype(dtype, copy=False))
    finally:
        writer.close()
    return out_file


def _write_hparams(gguf: Any, writer: Any, hp: dict, name: str, outtype: str) -> None:
    """The `llama.*` metadata keys llama.cpp reads to build the graph."""
    heads = hp["num_attention_heads"]
    head_dim = hp.get("head_dim") or hp["hidden_size"] // heads
    rope = hp.get("rope_parameters") or hp.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise BackendError(f"GGUF conversion does not support rope_type={rope_type!r}")
    writer.add_name(name)
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_block_count(hp["num_hidden_layers"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(hp.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", hp.get("rope_theta", 10000.0))))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(hp["vocab_size"])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_type[outtype])


def _write_vocab(gguf: Any, writer: Any, checkpoint: Path, n_vocab: int) -> None:
    """Tokens, their types (and scores or merges) and the special token ids."""
    path = checkpoint / "tokenizer.json"
    if not path.is_file():
        raise BackendError(f"GGUF conversion needs {path}")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer["model"]
    byte_level = (tokenizer.get("decoder") or {}).get("type") == "ByteLevel"
    if model["type"] == "BPE" and byte_level and not model.get("byte_fallback"):
        tokens, types = _byte_level_tokens(gguf, tokenizer, n_vocab)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as ByteLevel(use_regex) uses
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special = _special_vocab(gguf, checkpoint, n_vocab, merges=True)
    elif model["type"] == "BPE" and model.get("byte_fallback"):
        entries = list(gguf.vocab.LlamaHfVocab(checkpoint).all_tokens())
        entries += [(f"[PAD{i}]".encode(), -1000.0, gguf.TokenType.UNUSED)
                    for i in range(len(entries), n_vocab)]  # fmt: skip
        scores = _merge_scores(model, [text for text, _, _ in entries])
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list([text for text, _, _ in entries[:n_vocab]])
        writer.add_token_scores(scores[:n_vocab])
        writer.add_token_types([kind for _, _, kind in entries[:n_vocab]])
        special = _special_vocab(gguf, checkpoint, n_vocab, merges=False)
    else:
        raise BackendError(
            f"GGUF conversion supports byte-level or byte-fallback BPE tokenizers, not "
            f"{model['type']}; give backend.gguf_file instead"
        )
    special.add_to_gguf(writer, quiet=True)


def _merge_scores(model: dict, tokens: list[bytes]) -> list[float]:
    """SentencePiece-style scores that make llama.cpp merge in the BPE's own merge order.

    llama.cpp's `llama` tokenizer merges the adjacent pair whose result scores highest, so the
    result of merge i scores -i; tokens no merge produces keep -1000 (never merge targets).
    """
    rank = {}
    for i, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault((left + right).encode(), -float(i))
    return [rank.get(text, -1000.0) for text in tokens]


def _special_vocab(gguf: Any, checkpoint: Path, n_vocab: int, merges: bool) -> Any:
    """Special token ids, add-BOS flags, chat template (and BPE merges) from the tokenizer files.

    gguf warns about every pair template it does not parse; conversion needs only the single
    one, so its log is held at ERROR while reading.
    """
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        return gguf.SpecialVocab(checkpoint, load_merges=merges, n_vocab=n_vocab)
    finally:
        vocab_log.setLevel(level)


def _byte_level_tokens(gguf: Any, tokenizer: dict, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token strings in id order, typed as llama.cpp's own converter types them.

    Special added tokens are CONTROL even where the trainer also put them in the vocabulary
    (llama.cpp treats only CONTROL tokens as special); ids past the tokenizer are padding.
    """
    by_id = {idx: text for text, idx in tokenizer["model"]["vocab"].items()}
    added = {token["id"]: token for token in tokenizer.get("added_tokens", [])}
    tokens, types = [], []
    for idx in range(n_vocab):
        if idx in added:
            tokens.append(added[idx]["content"])
            special = added[idx].get("special")
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif idx in by_id:
            tokens.append(by_id[idx])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{idx}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def _tensor_plan(
    gguf: Any, checkpoint: Path, hp: dict, matrix_dtype: type
) -> Iterator[tuple[str, tuple[int, ...], type, Any]]:
    """(GGUF name, shape, dtype, loader) per tensor; loaders read one tensor when called."""
    from safetensors import safe_open

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise BackendError(f"GGUF conversion needs *.safetensors weights in {checkpoint}")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["num_hidden_layers"])
    heads = hp["num_attention_heads"]
    kv_heads = hp.get("num_key_value_heads") or heads
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys = list(handle.keys())
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
        for key in keys:
            if key.endswith("rotary_emb.inv_freq"):
                continue  # recomputed by llama.cpp from the rope metadata
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise BackendError(f"GGUF conversion cannot map tensor {key!r} of {file.name}")
            shape = shapes[key]
            n_head = heads if name.endswith("attn_q.weight") else kv_heads
            permute = name.endswith(("attn_q.weight", "attn_k.weight"))
            dtype = np.float32 if len(shape) == 1 else matrix_dtype
            yield name, shape, dtype, _loader(file, key, n_head if permute else None)


def _loader(file: Path, key: str, rope_heads: int | None) -> Any:
    def load() -> np.ndarray:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            array = handle.get_tensor(key).float().numpy()  # via torch: bf16 has no numpy dtype
        return _unpermute_rope(array, rope_heads) if rope_heads else array

    return load


def _unpermute_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved pairs."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _nbytes(shape: tuple[int, ...], dtype: type) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def main(argv: list[str] | None = None) -> None:
    """Convert a model directory from the command line and print the output path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit(
            "usage: python -m backends.models.gguf_convert HF_MODEL_DIR OUT.gguf [f32|f16]"
        )
    print(convert_to_gguf(args[0], args[1], *args[2:]))


if __name__ == "__main__":
    main()
