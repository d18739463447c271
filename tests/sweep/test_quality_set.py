"""The quality set (`quality=on`): reading it, its identity, and the plan's one-line refusals.

The plan reads the set and, for a model whose files are local (the generated tiny model here),
tokenizes it against the model's context, so a missing, empty or too-long set, or a baseline
that names no deployment, stops the sweep before Ray starts.
"""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import transformers  # noqa: F401  # its model classes set TORCHINDUCTOR_CACHE_DIR when imported
from transformers import LlamaForCausalLM  # noqa: F401  # so before a test builds the tiny model

from backends.sim import SimBackend, SimBackendConfig
from sweep.core import records as R
from sweep.core.config import QualityConfig
from sweep.core.errors import ConfigError, DatasetError, SweepError
from sweep.datasets.quality_texts import BUNDLED, load_text_set, token_ids
from sweep.plan.plan import build_plan
from sweep.worker.quality_run import score_deployment
from tests.helpers import run_sweep_here, sweep_in_process

BASE = ["backend=hf", "quality=on", "sweep.name=quality_set"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """The tiny model and its tokenizer built in the session's own cache, not the user's."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "quality-cache"))


def one_line(call, error=SweepError):
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    return message


def test_the_bundled_corpus_is_the_default_set_with_a_stable_identity():
    first, second = load_text_set(QualityConfig(name="on")), load_text_set(QualityConfig())
    assert first.name == BUNDLED and len(first.texts) == 48
    assert first.sha256 == second.sha256 and len(first.sha256) == 64
    assert load_text_set(QualityConfig(max_texts=5)).texts == first.texts[:5]
    assert load_text_set(QualityConfig(max_texts=5)).sha256 != first.sha256


def test_text_files_and_json_lines_read_alike(tmp_path):
    plain = tmp_path / "set.txt"
    plain.write_text("first text\n\nsecond text\n")
    lines = tmp_path / "set.jsonl"
    lines.write_text(json.dumps({"body": "first text"}) + "\n" + json.dumps("second text") + "\n")
    a = load_text_set(QualityConfig(texts=str(plain)))
    b = load_text_set(QualityConfig(texts=str(lines), text_field="body"))
    assert a.texts == b.texts == ("first text", "second text")
    assert a.sha256 == b.sha256  # the identity is the texts', not the file's
    assert a.where(1) == f"text 1 (line 3 of {plain})"


def test_a_missing_or_empty_set_is_refused_at_plan_time(tmp_path):
    missing = one_line(lambda: build_plan([*BASE, f"quality.texts={tmp_path}/none.txt"]))
    assert "is not a file" in missing
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert "holds no text" in one_line(lambda: build_plan([*BASE, f"quality.texts={empty}"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no text field"}\n')
    assert "line 1 of" in one_line(lambda: build_plan([*BASE, f"quality.texts={bad}"]))


def test_a_text_longer_than_the_context_is_refused_naming_it(tmp_path):
    texts = tmp_path / "long.txt"
    texts.write_text("short one\n" + "many words " * 40 + "\n")
    args = [*BASE, f"quality.texts={texts}", "model.max_model_len=32"]
    message = one_line(lambda: build_plan(args), DatasetError)
    assert f"text 1 (line 2 of {texts})" in message and "context of 32" in message
    plan = build_plan([*args, "quality.too_long=truncate"])  # cut to the context instead
    assert plan.base.quality.too_long == "truncate"


def test_truncate_cuts_a_long_text_to_the_context(tmp_path):
    texts = tmp_path / "long.txt"
    texts.write_text("short one\n" + "many words " * 40 + "\n")
    text_set = load_text_set(QualityConfig(texts=str(texts)))

    def tokenizer(text):
        return {"input_ids": [1, *range(2, 2 + len(text.split()))]}

    ids = token_ids(text_set, tokenizer, context=16, too_long="truncate")
    assert [len(i) for i in ids] == [3, 16]


def test_a_baseline_that_names_no_deployment_is_refused():
    grid = "+sweep.grid.backend=[hf,ctranslate2]"
    message = one_line(lambda: build_plan([*BASE, grid, "quality.baseline=vllm"]), ConfigError)
    assert "quality.baseline='vllm' names no deployment" in message
    assert "ctranslate2" in message and "hf" in message
    assert build_plan([*BASE, grid, "quality.baseline=ctranslate2"]).base.quality.enabled


def test_quality_moves_no_trial_id():
    off = build_plan(["backend=hf", "sweep.name=quality_set"]).trials
    on = build_plan(BASE).trials
    assert [t.trial_id for t in on] == [t.trial_id for t in off]
    assert [t.deployment_id for t in on] == [t.deployment_id for t in off]


def test_a_backend_that_cannot_score_gives_a_status_line_and_no_file():
    backend = SimBackend(SimBackendConfig(), "sim-model")
    config = SimpleNamespace(quality=QualityConfig(name="on"), backend=backend.config)
    files, status = score_deployment(backend, config, tokenizer=object(), deployment_id="d")
    assert files is None
    assert status == "not available: the sim server has no model: its tokens are made up"
    assert status != R.QUALITY_SCORED


def test_a_backend_that_cannot_score_still_runs_its_trials(tmp_path):
    """quality=on on the sim server: one status line per summary row, the trials all ran."""
    root = run_sweep_here(
        tmp_path,
        ["backend=sim", "quality=on", "sweep.name=unscored", "workload.num_requests=4",
         "+sweep.grid.workload.concurrency=[1,2]"],
    )  # fmt: skip
    summary = pd.concat(pd.read_parquet(p) for p in root.glob("*/*/summary.parquet"))
    assert len(summary) == 2 and set(summary[R.TRIAL_STATUS]) == {R.STATUS_OK}
    assert set(summary[R.QUALITY_STATUS]) == {
        "not available: the sim server has no model: its tokens are made up"
    }
    assert not list(root.glob(f"*/{R.QUALITY_FILE}"))


def test_the_command_line_says_a_missing_set_in_one_line(tmp_path):
    result = sweep_in_process(*BASE, f"quality.texts={tmp_path}/none.txt", "sweep.dry_run=true")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "none.txt" in line]
    assert len(lines) == 1 and "is not a file" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
