"""The worker's tokenizer loader: the class AutoTokenizer picks, without torch the second time."""

import json
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from backends.models.tiny import ensure_tiny_model
from backends.models.tokenizer import CACHE_KIND, class_key, load_tokenizer
from sweep.core import records as R
from sweep.core.errors import BackendError

TEXTS = [
    "The old farmer carried a box",
    "",
    "  leading spaces and\ttabs\n",
    "ünïcödé and emoji 🎉",
    "<s> literal special tokens </s>",
    "word " * 300,
]

# Loads the tokenizer in a fresh interpreter, reports whether torch got imported, and the ids.
PROBE = """
import json, sys
from backends.models.tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps({"torch": "torch" in sys.modules, "class": type(tok).__name__,
                  "ids": [tok(t).input_ids for t in texts], "special": tok.all_special_ids}))
"""


@pytest.fixture
def model_copy(tmp_path, monkeypatch):
    """A private copy of the tiny model and an empty tokenizer-class cache."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    return str(shutil.copytree(ensure_tiny_model(), tmp_path / "model"))


def probe(model_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, model_path, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_load_skips_torch_and_matches_autotokenizer(model_copy, tmp_path):
    reference = AutoTokenizer.from_pretrained(model_copy)
    first = probe(model_copy)
    assert first["torch"] is True  # the first load asks AutoTokenizer, which imports torch
    entries = list((tmp_path / "cache" / CACHE_KIND).glob("*.json"))
    assert [e.stem for e in entries] == [class_key(model_copy, None)]
    second = probe(model_copy)
    assert second["torch"] is False
    for result in (first, second):
        assert result["class"] == type(reference).__name__
        assert result["ids"] == [reference(t).input_ids for t in TEXTS]
        assert result["special"] == reference.all_special_ids


def test_edited_model_files_are_a_new_key(model_copy):
    before = class_key(model_copy, None)
    assert class_key(model_copy, "main") != before  # the revision is part of the key
    config_path = f"{model_copy}/tokenizer_config.json"
    config = json.loads(open(config_path).read())
    config["model_max_length"] = 123
    with open(config_path, "w") as f:
        json.dump(config, f)
    assert class_key(model_copy, None) != before
    assert load_tokenizer(model_copy).model_max_length == 123


def test_an_entry_naming_a_missing_class_falls_back_to_autotokenizer(model_copy, tmp_path):
    root = tmp_path / "cache" / CACHE_KIND
    root.mkdir(parents=True)
    key = class_key(model_copy, None)
    (root / f"{key}.json").write_text('{"module": "transformers.nowhere", "name": "Gone"}')
    tokenizer = load_tokenizer(model_copy)
    assert type(tokenizer) is type(AutoTokenizer.from_pretrained(model_copy))
    entry = json.loads((root / f"{key}.json").read_text())
    assert entry["name"] == type(tokenizer).__qualname__  # replaced by the class that worked


def test_a_directory_without_a_tokenizer_is_a_start_failure(tmp_path):
    with pytest.raises(BackendError) as info:
        load_tokenizer(str(tmp_path))
    assert info.value.kind == R.ERROR_BACKEND_START
    assert "cannot load the tokenizer" in str(info.value)
    assert "\n" not in str(info.value)
