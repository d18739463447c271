"""`dataset.paraphrase_rate`: near-duplicates of earlier prompts, exact in number, seeded,
recorded."""

import numpy as np
import pytest

from backends.models.tiny import ensure_tiny_model
from backends.models.tokenizer import load_tokenizer
from backends.proxy.embedder import HashingEmbedder
from sweep.core import records as R
from sweep.core.config import PromptsDatasetConfig, RandomDatasetConfig
from sweep.core.errors import ConfigError
from sweep.datasets import load_prompts
from sweep.datasets.cache import PromptSource
from sweep.datasets.reuse import prompt_columns
from sweep.plan.plan import build_plan

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model_path():
    return str(ensure_tiny_model())


@pytest.fixture(scope="module")
def tokenizer(model_path):
    return load_tokenizer(model_path)


def similarity(a, b):
    embedder = HashingEmbedder()
    return float(embedder.embed(a) @ embedder.embed(b))


def check_near_duplicates(prompts, count):
    near = [(i, p) for i, p in enumerate(prompts) if p.near_duplicate_of is not None]
    assert len(near) == count
    for i, prompt in near:
        source = prompts[prompt.near_duplicate_of]
        assert prompt.near_duplicate_of < i and source.near_duplicate_of is None  # an original
        assert prompt.text != source.text and prompt.task == source.task
        assert similarity(prompt.text, source.text) >= 0.85  # what the cache's default takes
    return near


def test_random_near_duplicates_change_one_token_and_keep_the_length(tokenizer):
    config = RandomDatasetConfig(input_len=64, seed=3, paraphrase_rate=0.5)
    prompts = load_prompts(config, tokenizer, 40)
    near = check_near_duplicates(prompts, 20)
    assert {p.input_tokens for p in prompts} == {64}
    assert all(len(tokenizer(p.text).input_ids) == 64 for _, p in near)
    assert load_prompts(config, tokenizer, 40) == prompts  # seeded
    plain = load_prompts(RandomDatasetConfig(input_len=64, seed=3), tokenizer, 40)
    kept = [i for i, p in enumerate(prompts) if p.near_duplicate_of is None]
    assert [prompts[i] for i in kept] == [plain[i] for i in kept]  # the others do not move
    assert prompt_columns(prompts)[R.PROMPT_NEAR_DUPLICATE_PERCENT] == 50.0
    assert prompt_columns(plain)[R.PROMPT_NEAR_DUPLICATE_PERCENT] == 0.0


def test_prompt_file_near_duplicates_reword_the_text(tokenizer):
    prompts = load_prompts(PromptsDatasetConfig(paraphrase_rate=0.25), tokenizer, 32)
    near = check_near_duplicates(prompts, 8)
    for _, prompt in near:
        assert prompt.input_tokens == len(tokenizer(prompt.text).input_ids)


def test_without_a_tokenizer_the_text_is_reworded():
    prompts = load_prompts(RandomDatasetConfig(input_len=64, paraphrase_rate=0.5), None, 10)
    check_near_duplicates(prompts, 5)
    assert all(p.token_ids == () for p in prompts)


def test_the_prompt_cache_keeps_which_prompt_each_rewords(
    model_path, tokenizer, tmp_path, monkeypatch
):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(PromptSource, "tokenizer", lambda self: tokenizer)  # loaded once above
    source = PromptSource(model_path, None, False)
    config = RandomDatasetConfig(input_len=32, paraphrase_rate=0.5)
    made = source.prompts(config, 8)
    assert source.is_cached(config, 8)
    again = PromptSource(model_path, None, False).prompts(config, 8)
    assert again == made and sum(p.near_duplicate_of is not None for p in again) == 4


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_rate_outside_zero_to_one_is_one_line(rate):
    with pytest.raises(ConfigError) as info:
        RandomDatasetConfig(paraphrase_rate=rate)
    assert str(info.value) == f"dataset.paraphrase_rate must be in [0, 1), got {rate}"
    with pytest.raises(ConfigError, match=r"dataset.paraphrase_rate must be in \[0, 1\)"):
        build_plan(["backend=sim", "dataset=prompts", f"dataset.paraphrase_rate={rate}"])


def test_the_rate_moves_a_trials_id_only_when_set():
    base = ["backend=sim", "dataset.input_len=64"]
    (plain,) = build_plan(base).trials
    (zero,) = build_plan([*base, "dataset.paraphrase_rate=0"]).trials
    (half,) = build_plan([*base, "dataset.paraphrase_rate=0.5"]).trials
    assert plain.trial_id == zero.trial_id != half.trial_id
    assert np.isclose(half.flat["dataset.paraphrase_rate"], 0.5)
