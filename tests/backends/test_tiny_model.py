"""Tests for backends.models.tiny: real builds, real loads, no mocks."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.models.tiny import TINY_MODEL_VERSION, default_cache_dir, ensure_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXT = "The quick brown fox jumps over the lazy dog, doesn't it? Yes: 42 times!"


def _entries(cache: Path) -> list[str]:
    """What a cache folder holds, less the builders' lock file."""
    return sorted(p.name for p in cache.iterdir() if p.name != f".{TINY_MODEL_VERSION}.lock")


def _hashes(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_directory_layout(model_dir):
    assert model_dir.name == TINY_MODEL_VERSION
    names = {p.name for p in model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    # Loadable by transformers 4.x too, with the chat template inline.
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "chat_template" in tok_config
    # Nothing but the finished directory (and the builders' lock file) is left in the cache.
    assert _entries(model_dir.parent) == [TINY_MODEL_VERSION]


def test_tokenizer_special_tokens_and_bos(tokenizer):
    assert 400 <= len(tokenizer) <= 512
    assert tokenizer.unk_token == "<unk>"
    assert tokenizer.bos_token == "<s>"
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token == "<pad>"
    ids = tokenizer(TEXT).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize(
    "text",
    [TEXT, "Our teacher repaired the broken clock near the river yesterday.", "  two  spaces\n"],
)
def test_tokenizer_round_trip(tokenizer, text):
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "system: Be brief.\nuser: Hi\nassistant: "


def test_model_config_and_generate(model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert cfg.head_dim == 64
    assert cfg.num_key_value_heads == 1
    assert cfg.vocab_size == len(tokenizer)
    assert cfg.bos_token_id == tokenizer.bos_token_id
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert cfg.pad_token_id == tokenizer.pad_token_id
    assert not cfg.tie_word_embeddings
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    inputs = tokenizer("The old farmer", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert out.shape[1] - inputs.input_ids.shape[1] == 8


def test_second_call_is_cached(model_dir):
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    dir_mtime = model_dir.stat().st_mtime_ns
    assert ensure_tiny_model(model_dir.parent) == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before
    assert model_dir.stat().st_mtime_ns == dir_mtime


def test_builds_are_byte_identical_and_incomplete_dir_is_rebuilt(model_dir, tmp_path):
    stale = tmp_path / TINY_MODEL_VERSION
    stale.mkdir()
    (stale / "config.json").write_text("{}")  # an incomplete directory gets rebuilt
    other = ensure_tiny_model(tmp_path)
    assert other == stale
    assert _hashes(other) == _hashes(model_dir)


def test_concurrent_builders_agree_and_only_one_builds(tmp_path):
    """Two processes asking at once (a node's deployments starting together): one builds, the
    other waits for it (each build costs a process several CPU-seconds of torch)."""
    cmd = [sys.executable, "-m", "backends.models.tiny", str(tmp_path)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, **pipes) for _ in "ab"]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [out.strip() for out, _ in outs] == [str(tmp_path / TINY_MODEL_VERSION)] * 2
    assert _entries(tmp_path) == [TINY_MODEL_VERSION]
    logs = "".join(err for _, err in outs)
    assert logs.count("building tiny model") == 1, logs


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SWEEP_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "llm-sweep" / "models"


def test_import_is_cheap():
    code = (
        "import sys, backends.models.tiny; "
        "print(sorted({'torch', 'transformers', 'tokenizers'} & set(sys.modules)))"
    )
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
