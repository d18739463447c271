"""A trace's own adapter column (`dataset.lora_column`): each row's LoRA adapter, read with the
rows the trial sends, kept by the prompt cache, and sent there by
`workload.lora_assignment=dataset`; the sim server's stamps are the truth of where each request
went.
"""

import json
from collections import Counter

import pandas as pd
import pytest
from transformers import AutoTokenizer

from backends.models.tiny import ensure_tiny_model
from sweep.core import records as R
from sweep.core.config import TraceDatasetConfig
from sweep.core.errors import DatasetError
from sweep.datasets import check_dataset, load_prompts
from sweep.datasets.cache import PromptSource
from sweep.datasets.context import Context
from tests.helpers import run_sweep_here

ADAPTERS = ["sql", "chat", "sql", "code", "sql", "chat", "sql", "sql", "code", "chat", "sql", "x"]


def mooncake(path, adapters=ADAPTERS, column="adapter"):
    rows = [
        {"timestamp": 100 * i, "input_length": 20 + i, "output_length": 3, column: name}
        for i, name in enumerate(adapters)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


def test_each_prompt_carries_its_rows_adapter_within_the_window(tmp_path, tiny):
    path = mooncake(tmp_path / "t.jsonl")
    cfg = TraceDatasetConfig(path=str(path), lora_column="adapter", start_s=0.2)
    prompts = load_prompts(cfg, tiny, 5)
    assert [p.adapter for p in prompts] == ADAPTERS[2:7]  # rows from 0.2 s, the first five
    assert [p.input_tokens for p in prompts] == [22, 23, 24, 25, 26]
    plain = load_prompts(TraceDatasetConfig(path=str(path)), tiny, 5)
    assert {p.adapter for p in plain} == {None}  # without the column, no adapter


def test_the_skipped_rows_adapters_are_left_out_with_them(tmp_path, tiny):
    path = mooncake(tmp_path / "t.jsonl")
    cfg = TraceDatasetConfig(path=str(path), lora_column="adapter", too_long="skip")
    prompts = load_prompts(cfg, tiny, 12, context=Context(3 + 25, "model.max_model_len"))
    assert [p.adapter for p in prompts] == ADAPTERS[:6]  # 20..25 input tokens + 3 fit in 28


def test_the_prompt_cache_keeps_each_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    path = mooncake(tmp_path / "t.jsonl")
    cfg = TraceDatasetConfig(path=str(path), lora_column="adapter")
    model = str(ensure_tiny_model())
    made = PromptSource(model, None, False).prompts(cfg, 12)
    again = PromptSource(model, None, False)
    assert again.is_cached(cfg, 12)
    assert [p.adapter for p in again.prompts(cfg, 12)] == ADAPTERS == [p.adapter for p in made]
    assert again.key(cfg, 12) != again.key(TraceDatasetConfig(path=str(path)), 12)


@pytest.mark.parametrize(
    ("column", "adapters", "message"),
    [
        ("lora", ADAPTERS, r"t\.jsonl: no column 'lora' \(columns: 'timestamp', "),
        ("adapter", [*ADAPTERS[:3], " ", *ADAPTERS[4:]], r"t\.jsonl:4: no value in column 'adap"),
    ],
)  # fmt: skip
def test_a_missing_column_or_value_is_one_line_at_planning(tmp_path, column, adapters, message):
    path = mooncake(tmp_path / "t.jsonl", adapters)
    cfg = TraceDatasetConfig(path=str(path), lora_column=column)
    with pytest.raises(DatasetError, match=message):
        check_dataset(cfg, None, 12)


def test_each_request_reaches_the_adapter_its_row_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SIM_STAMPS_DIR", str(tmp_path))
    path = mooncake(tmp_path / "t.jsonl", ADAPTERS[:-1])  # "x" is not served
    out = run_sweep_here(
        tmp_path / "out",
        ["+experiment=trace_replay", "sweep.name=trace_lora", f"sweep.grid.dataset.path=[{path}]",
         "dataset.lora_column=adapter", "dataset.speedup=10", "workload.warmup_requests=0",
         "workload.num_requests=11", "workload.lora_assignment=dataset",
         "+backend.lora_adapters={sql: generated, chat: generated, code: generated}",
         "backend.ttft_ms=2", "backend.itl_ms=1"],
    )  # fmt: skip
    (trial,) = out.glob("*/*/")
    requests = pd.read_parquet(trial / R.REQUESTS_FILE)
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    assert list(requests[R.ADAPTER]) == ADAPTERS[:-1]  # request i went to row i's adapter
    (stamps,) = tmp_path.glob("sim-stamps-*.json")
    served = Counter(s["model"] for s in json.loads(stamps.read_text()).values())
    assert served == Counter(ADAPTERS[:-1])
