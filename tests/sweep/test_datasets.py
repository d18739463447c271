"""Tests for sweep.datasets with real tokenizers (trained here, no hub access)."""

from __future__ import annotations

import importlib
import importlib.resources
import json
import time

import datasets
import pytest
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sweep.core.config import (
    DatasetConfig,
    HFDatasetConfig,
    PromptsDatasetConfig,
    RandomDatasetConfig,
)
from sweep.core.errors import DatasetError
from sweep.datasets import load_prompts, prompt_file
from sweep.datasets.prompt import Prompt

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A small café in Zürich serves crème brûlée and naïve espresso drinks.",
    "Benchmarks measure time to first token, throughput and latency percentiles.",
    "She counted 12,345 apples, 678 pears and 90 plums in 2024!",
    "Tokenizers split text into pieces: words, sub-words, bytes and emoji 🚀✨.",
    "def main(argv):\n    return sum(int(x) for x in argv)  # code too\n",
] * 20


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2 style: byte-level BPE, every byte in the base alphabet."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    return _wrap(tok)


def sentencepiece_style_bpe() -> PreTrainedTokenizerFast:
    """Llama-2 style: metaspace ('▁') pieces with <0xNN> byte fallback and a prefix space."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    # The trainer cannot make byte-fallback pieces; add them as ordinary vocabulary.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"].update(byte_fallback=True, fuse_unk=True)
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return _wrap(Tokenizer.from_str(json.dumps(spec)))


@pytest.fixture(scope="module", params=["byte_level_bpe", "sentencepiece_style", "tiny_model"])
def tokenizer(request, tmp_path_factory):
    if request.param == "byte_level_bpe":
        return byte_level_bpe()
    if request.param == "sentencepiece_style":
        return sentencepiece_style_bpe()
    try:
        tiny_model = importlib.import_module("backends.models.tiny")
        ensure = tiny_model.ensure_tiny_model
    except (ImportError, AttributeError):
        pytest.skip("backends.models.tiny.ensure_tiny_model is not available")
    return AutoTokenizer.from_pretrained(ensure(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def bpe():
    return byte_level_bpe()


def assert_exact(prompt: Prompt, tokenizer, length: int) -> None:
    ids = tokenizer(prompt.text).input_ids
    assert prompt.input_tokens == length == len(ids)
    assert prompt.token_ids == tuple(ids)
    assert ids[0] == tokenizer.bos_token_id


# random ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["min", 17, 64, 300])
def test_random_prompts_have_exact_lengths(tokenizer, length):
    if length == "min":
        length = 1 + tokenizer.num_special_tokens_to_add(pair=False)
    cfg = RandomDatasetConfig(input_len=length, seed=3)
    prompts = load_prompts(cfg, tokenizer, 25)
    assert len(prompts) == 25
    for prompt in prompts:
        assert_exact(prompt, tokenizer, length)
    assert len({p.text for p in prompts}) > 1


def test_random_range_ratio_is_bounded_exact_and_seeded(tokenizer):
    cfg = RandomDatasetConfig(input_len=40, range_ratio=0.5, seed=7)
    prompts = load_prompts(cfg, tokenizer, 30)
    lengths = [p.input_tokens for p in prompts]
    assert all(20 <= n <= 60 for n in lengths)
    assert len(set(lengths)) > 5
    for prompt in prompts:
        assert_exact(prompt, tokenizer, prompt.input_tokens)
    assert load_prompts(cfg, tokenizer, 30) == prompts
    other = load_prompts(RandomDatasetConfig(input_len=40, range_ratio=0.5, seed=8), tokenizer, 30)
    assert [p.text for p in other] != [p.text for p in prompts]


def test_random_length_below_special_tokens_errors(bpe):
    with pytest.raises(DatasetError, match="input_len=1 is below the minimum 2"):
        load_prompts(RandomDatasetConfig(input_len=1), bpe, 1)


# prompt file ----------------------------------------------------------------------------


def test_packaged_prompt_file_has_every_task():
    path = importlib.resources.files("sweep") / "data" / "prompts.jsonl"
    by_task = prompt_file.read_prompt_file(str(path))
    assert list(by_task) == ["qa", "reasoning", "summarization", "sentiment"]
    assert all(len(texts) >= 30 for texts in by_task.values())
    for text in by_task["summarization"]:
        assert text.startswith("Summarize the following passage: ")
        words = len(text.removeprefix("Summarize the following passage: ").split())
        assert 80 <= words <= 150
    prefix = "Classify the sentiment of this review as positive, negative or neutral: "
    assert all(text.startswith(prefix) for text in by_task["sentiment"])


def test_prompt_file_interleaves_tasks_deterministically(bpe):
    prompts = load_prompts(PromptsDatasetConfig(), bpe, 10)
    assert [p.task for p in prompts[:4]] == ["qa", "reasoning", "summarization", "sentiment"]
    assert [p.task for p in prompts[4:8]] == ["qa", "reasoning", "summarization", "sentiment"]
    for prompt in prompts:
        assert prompt.token_ids == tuple(bpe(prompt.text).input_ids)
    assert load_prompts(PromptsDatasetConfig(), bpe, 10) == prompts


def test_prompt_file_task_filter_cycles(bpe):
    prompts = load_prompts(PromptsDatasetConfig(task="sentiment", allow_repeats=True), bpe, 70)
    assert {p.task for p in prompts} == {"sentiment"}
    distinct = len({p.text for p in prompts})
    assert distinct >= 30
    assert prompts[distinct] == prompts[0]


def test_prompt_file_unknown_task_is_one_line(bpe):
    with pytest.raises(DatasetError) as info:
        load_prompts(PromptsDatasetConfig(task="translation"), bpe, 1)
    message = str(info.value)
    assert "\n" not in message
    assert "qa, reasoning, summarization, sentiment" in message


def test_prompt_file_bad_line_names_it(bpe, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "qa", "prompt": "Why?"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"p\.jsonl:2"):
        load_prompts(PromptsDatasetConfig(path=str(path)), bpe, 1)


# Hugging Face datasets ------------------------------------------------------------------


def rows(n: int) -> dict[str, list[str]]:
    return {"text": [f"Story number {i}." if i % 3 else "" for i in range(n)]}


def test_hf_saved_to_disk_dataset_dict(bpe, tmp_path):
    split = datasets.Dataset.from_dict(rows(12))
    datasets.DatasetDict(validation=split, train=split).save_to_disk(str(tmp_path / "dd"))
    cfg = HFDatasetConfig(path=str(tmp_path / "dd"), max_rows=5)
    prompts = load_prompts(cfg, bpe, 7)
    texts = [f"Story number {i}." for i in (1, 2, 4, 5, 7)]
    assert [p.text for p in prompts] == texts + texts[:2]
    assert prompts[0].token_ids == tuple(bpe(texts[0]).input_ids)
    assert prompts[0].task is None


def test_hf_saved_to_disk_single_dataset(bpe, tmp_path):
    datasets.Dataset.from_dict(rows(6)).save_to_disk(str(tmp_path / "ds"))
    prompts = load_prompts(HFDatasetConfig(path=str(tmp_path / "ds")), bpe, 3)
    assert [p.text for p in prompts] == ["Story number 1.", "Story number 2.", "Story number 4."]


def test_hf_saved_to_disk_missing_split_lists_splits(bpe, tmp_path):
    datasets.DatasetDict(train=datasets.Dataset.from_dict(rows(3))).save_to_disk(str(tmp_path))
    with pytest.raises(DatasetError, match="no split 'validation'; splits: train"):
        load_prompts(HFDatasetConfig(path=str(tmp_path)), bpe, 1)


def test_hf_json_data_files(bpe, tmp_path):
    data = tmp_path / "stories.jsonl"
    data.write_text("\n".join(json.dumps({"story": f"Once upon a time {i}."}) for i in range(4)))
    cfg = HFDatasetConfig(path="json", data_files=str(data), split="train", column="story")
    prompts = load_prompts(cfg, bpe, 4)
    assert [p.text for p in prompts] == [f"Once upon a time {i}." for i in range(4)]


def test_hf_unreachable_hub_fails_fast(bpe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = HFDatasetConfig(path="roneneldan/TinyStories")
    start = time.monotonic()
    with pytest.raises(DatasetError) as info:
        load_prompts(cfg, bpe, 1)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot load Hugging Face dataset 'roneneldan/TinyStories' (split 'validation'): "
    )
    assert "no hub access?" in message


def test_hf_missing_column_names_it(bpe, tmp_path):
    datasets.Dataset.from_dict(rows(3)).save_to_disk(str(tmp_path))
    with pytest.raises(DatasetError, match="no column 'content' \\(columns: text\\)"):
        load_prompts(HFDatasetConfig(path=str(tmp_path), column="content"), bpe, 1)


def test_hf_missing_data_file_is_one_line(bpe, tmp_path):
    cfg = HFDatasetConfig(path="json", data_files=str(tmp_path / "none.jsonl"), split="train")
    with pytest.raises(DatasetError) as info:
        load_prompts(cfg, bpe, 1)
    assert "\n" not in str(info.value)


# entry ----------------------------------------------------------------------------------


def test_unknown_dataset_name_lists_valid_ones(bpe):
    with pytest.raises(DatasetError, match="choose one of: random, prompts, hf"):
        load_prompts(DatasetConfig(name="sharegpt"), bpe, 1)


def test_prompt_rejects_inconsistent_count():
    with pytest.raises(ValueError):
        Prompt(text="x", token_ids=(1, 2), input_tokens=3)
