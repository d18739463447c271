"""Our HF-to-GGUF converter: llama.cpp loads the file and decodes exactly as transformers does."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.models.gguf_convert import convert_to_gguf
from backends.models.tiny import ensure_tiny_model
from sweep.core.errors import BackendError

gguf = pytest.importorskip("gguf", reason="needs the llamacpp extra")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def gguf_f32(model_dir, tmp_path_factory):
    return convert_to_gguf(model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf", "f32")


def field(reader, name):
    return reader.fields[name].contents()


def test_metadata_and_tensors(model_dir, gguf_f32):
    reader = gguf.GGUFReader(gguf_f32)
    hp = json.loads((model_dir / "config.json").read_text())
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == hp["num_hidden_layers"]
    assert field(reader, "llama.attention.head_count") == hp["num_attention_heads"]
    assert field(reader, "llama.attention.head_count_kv") == hp["num_key_value_heads"]
    assert field(reader, "llama.rope.dimension_count") == hp["head_dim"]
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert len(field(reader, "tokenizer.ggml.tokens")) == hp["vocab_size"]
    assert field(reader, "tokenizer.ggml.eos_token_id") == hp["eos_token_id"]
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[hp["eos_token_id"]] == gguf.TokenType.CONTROL
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.attn_q.weight"} <= names
    assert len(names) == 3 + 9 * hp["num_hidden_layers"]


def test_f16_keeps_norms_in_f32(model_dir, tmp_path):
    reader = gguf.GGUFReader(convert_to_gguf(model_dir, tmp_path / "h.gguf", "f16"))
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def assert_llama_cpp_decodes_like_transformers(model_dir, gguf_file):
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = "The quiet librarian described the old map"
    ids = tokenizer(text).input_ids
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=256, verbose=False)
    try:
        assert llm.tokenize(text.encode()) == ids  # the GGUF tokenizer is the model's own
        ours = []
        for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0):
            ours.append(token)
            if len(ours) == 12:
                break
    finally:
        llm.close()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, min_new_tokens=12,
                             do_sample=False)  # fmt: skip
    # same greedy tokens: weights, q/k RoPE layout and hyperparameters all came across right
    assert ours == out[0, len(ids) :].tolist()


def test_llama_cpp_decodes_like_transformers(model_dir, gguf_f32):
    assert_llama_cpp_decodes_like_transformers(model_dir, gguf_f32)


def test_byte_fallback_tokenizer_is_written_as_llama_vocab(model_dir, tmp_path):
    # Llama-2's kind of tokenizer.json: BPE over "▁"-joined words with <0xNN> byte tokens
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from backends.models.tiny import corpus

    spm = tmp_path / "tiny-spm"
    shutil.copytree(model_dir, spm)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])  # fmt: skip
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (spm / name).unlink()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(spm)
    out = convert_to_gguf(spm, tmp_path / "spm.gguf", "f32")
    reader = gguf.GGUFReader(out)
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert field(reader, "tokenizer.ggml.token_type")[5] == gguf.TokenType.BYTE
    assert_llama_cpp_decodes_like_transformers(spm, out)


def test_other_architectures_are_refused(model_dir, tmp_path):
    other = tmp_path / "gpt2"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="give backend.gguf_file instead"):
        convert_to_gguf(other, tmp_path / "x.gguf")


def test_rope_rows_are_reordered_for_llama_cpp():
    from backends.models.gguf_convert import _unpermute_rope

    # one head of dim 4: HF pairs (x0, x2), (x1, x3); llama.cpp wants them adjacent
    rows = np.arange(4, dtype=np.float32)[:, None]
    assert _unpermute_rope(rows, 1)[:, 0].tolist() == [0, 2, 1, 3]
