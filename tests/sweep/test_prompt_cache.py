"""The prompt cache: cached prompts equal freshly made ones, need no tokenizer, and go stale.

Real tokenizer (the project's tiny model, copied so that its files can be edited), real files
under a private `SWEEP_CACHE_DIR`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from backends.models.tiny import ensure_tiny_model
from backends.models.tokenizer import load_tokenizer
from sweep.core.config import HFDatasetConfig, PromptsDatasetConfig, RandomDatasetConfig
from sweep.core.errors import BackendError
from sweep.datasets import load_prompts
from sweep.datasets.cache import CACHE_KIND, PromptSource

RANDOM = RandomDatasetConfig(input_len=24, range_ratio=0.5, seed=3)

# Reads cached prompts in a fresh interpreter: is transformers imported, and what came back.
PROBE = """
import json, sys
from sweep.datasets.cache import PromptSource
from sweep.core.config import RandomDatasetConfig
cfg = RandomDatasetConfig(input_len=24, range_ratio=0.5, seed=3)
prompts = PromptSource(sys.argv[1], None, False).prompts(cfg, 7)
print(json.dumps({"transformers": "transformers" in sys.modules,
                  "ids": [list(p.token_ids) for p in prompts]}))
"""


@pytest.fixture
def model(tmp_path, monkeypatch):
    """A private copy of the tiny model and an empty cache."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    return str(shutil.copytree(ensure_tiny_model(), tmp_path / "model"))


def entries(tmp_path):
    return sorted((tmp_path / "cache" / CACHE_KIND).glob("*.json"))


def no_tokenizer(monkeypatch):
    """Make any tokenizer load fail, so a test sees whether one was needed."""

    def fail(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded")

    monkeypatch.setattr("sweep.datasets.cache.load_tokenizer", fail)


def test_cached_prompts_equal_fresh_ones_and_need_no_tokenizer(model, tmp_path, monkeypatch):
    fresh = load_prompts(RANDOM, load_tokenizer(model), 7)
    first = PromptSource(model, None, False)
    assert not first.is_cached(RANDOM, 7)
    assert first.prompts(RANDOM, 7) == fresh
    assert len(entries(tmp_path)) == 1
    no_tokenizer(monkeypatch)
    second = PromptSource(model, None, False)
    assert second.is_cached(RANDOM, 7)
    assert second.prompts(RANDOM, 7) == fresh  # text, ids, counts and tasks all equal
    assert [p.input_tokens for p in fresh] == [len(p.token_ids) for p in fresh]


def test_a_worker_reading_the_cache_never_imports_transformers(model, tmp_path):
    made = PromptSource(model, None, False).prompts(RANDOM, 7)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, model], capture_output=True, text=True, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["transformers"] is False
    assert seen["ids"] == [list(p.token_ids) for p in made]


def test_each_input_of_the_prompts_changes_the_key(model, tmp_path):
    source = PromptSource(model, None, False)
    base = source.key(RANDOM, 7)
    assert source.key(RandomDatasetConfig(input_len=24, range_ratio=0.5, seed=3), 7) == base
    assert source.key(RandomDatasetConfig(input_len=25, range_ratio=0.5, seed=3), 7) != base
    assert source.key(RandomDatasetConfig(input_len=24, range_ratio=0.5, seed=4), 7) != base
    assert source.key(RANDOM, 8) != base
    assert PromptSource(model, "v2", False).key(RANDOM, 7) != base
    config = tmp_path / "model" / "tokenizer_config.json"
    config.write_text(config.read_text().replace("}", ', "model_max_length": 77}', 1))
    assert PromptSource(model, None, False).key(RANDOM, 7) != base  # an edited tokenizer


def test_an_edited_prompt_file_is_read_again(model, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"task": "qa", "prompt": "What is the capital of France?"}\n')
    cfg = PromptsDatasetConfig(path=str(path), allow_repeats=True)
    source = PromptSource(model, None, False)
    assert [p.text for p in source.prompts(cfg, 2)] == ["What is the capital of France?"] * 2
    path.write_text('{"task": "qa", "prompt": "Name a prime number."}\n')
    assert [p.text for p in source.prompts(cfg, 2)] == ["Name a prime number."] * 2
    assert len(entries(tmp_path)) == 2


def test_a_damaged_entry_is_made_again(model, tmp_path):
    source = PromptSource(model, None, False)
    made = source.prompts(RANDOM, 7)
    (entry,) = entries(tmp_path)
    entry.write_text(json.dumps(json.loads(entry.read_text())[:3]))  # too few prompts
    assert PromptSource(model, None, False).prompts(RANDOM, 7) == made
    entry.write_text("{not json")
    assert PromptSource(model, None, False).prompts(RANDOM, 7) == made
    assert len(json.loads(entry.read_text())) == 7


def test_hub_ids_remote_code_and_hf_datasets_are_not_cached(model, tmp_path):
    assert PromptSource("org/some-model", None, False).key(RANDOM, 7) is None
    assert PromptSource(model, None, True).key(RANDOM, 7) is None
    hf = HFDatasetConfig(path=str(tmp_path), data_files="x.jsonl")
    assert PromptSource(model, None, False).key(hf, 7) is None


def test_a_tokenizer_that_cannot_load_is_a_backend_start_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="cannot load the tokenizer"):
        PromptSource(str(tmp_path / "empty"), None, False).prompts(RANDOM, 3)
