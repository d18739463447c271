"""The trace dataset: formats, exact prompts with shared prefixes, the replay schedule, bad input.

Real tokenizers (the tiny model's, and a GPT-2 style one trained here), real files written to a
temporary folder, and the shipped traces themselves.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from backends.models.tiny import ensure_tiny_model
from scripts.bench.shipped_traces import write_traces
from sweep.__main__ import main as sweep_main
from sweep.core.config import TraceDatasetConfig, WorkloadConfig
from sweep.core.errors import ConfigError, DatasetError
from sweep.datasets import check_dataset, load_prompts
from sweep.datasets.context import Context
from sweep.datasets.trace import resolve
from sweep.datasets.trace_file import read_trace
from sweep.loadgen.arrivals import trace_offsets
from sweep.loadgen.requests import build_requests
from tests.sweep.test_datasets import byte_level_bpe

BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
ROWS = [  # Mooncake rows: ms, lengths, prefix blocks (of 16 tokens in these tests)
    {"timestamp": 1000, "input_length": 40, "output_length": 5, "hash_ids": [0, 1, 2]},
    {"timestamp": 1500, "input_length": 37, "output_length": 6, "hash_ids": [0, 1, 3]},
    {"timestamp": 1500, "input_length": 20, "output_length": 7, "hash_ids": [0, 4]},
    {"timestamp": 2600, "input_length": 50, "output_length": 8, "hash_ids": [5, 6, 7, 8]},
    {"timestamp": 3250, "input_length": 9, "output_length": 9},
]


def write(path: Path, text: str) -> str:
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return str(path)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


@pytest.fixture
def mooncake(tmp_path):
    return write(tmp_path / "trace.jsonl", jsonl(ROWS))


# formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["trace.jsonl", "trace.jsonl.gz"])
def test_mooncake_jsonl_rows_are_read_in_seconds_from_the_first(tmp_path, name):
    trace = read_trace(write(tmp_path / name, "\n" + jsonl(ROWS)))  # a blank line is skipped
    assert trace.columns.format == "mooncake"
    assert trace.arrival_s == (0.0, 0.5, 0.5, 1.6, 2.25)
    assert trace.input_len == (40, 37, 20, 50, 9)
    assert trace.output_len == (5, 6, 7, 8, 9)
    assert trace.hash_ids == ((0, 1, 2), (0, 1, 3), (0, 4), (5, 6, 7, 8), ())
    assert trace.lines == (2, 3, 4, 5, 6)


def test_mooncake_csv_reads_hash_ids_as_json_lists(tmp_path):
    text = 'timestamp,input_length,output_length,hash_ids\n0,30,4,"[3, 4]"\n250,12,2,\n'
    trace = read_trace(write(tmp_path / "trace.csv", text))
    assert trace.arrival_s == (0.0, 0.25)
    assert trace.hash_ids == ((3, 4), ())
    assert trace.lines == (2, 3)


def test_burstgpt_columns_in_seconds_others_ignored(tmp_path):
    text = (
        f"{BURSTGPT_HEADER}\n5,ChatGPT,120,30,150,Conversation log\n7.5,GPT-4,8,300,308,API log\n"
    )
    trace = read_trace(write(tmp_path / "burst.csv.gz", text))
    assert trace.columns.format == "burstgpt"
    assert trace.arrival_s == (0.0, 2.5)
    assert trace.input_len == (120, 8)
    assert trace.output_len == (30, 300)
    assert trace.hash_ids == ((), ())


def test_shipped_traces_are_small_and_made_by_the_script(tmp_path):
    write_traces(tmp_path)
    for name, rows, span in (("bursty", 2305, 74.7), ("diurnal", 2336, 119.4)):
        path = Path(resolve(name))
        assert path.read_bytes() == (tmp_path / path.name).read_bytes()  # deterministic
        assert path.stat().st_size < 200_000
        trace = read_trace(str(path))
        assert len(trace.lines) == rows
        assert trace.arrival_s[-1] == pytest.approx(span, abs=0.1)
        assert max(i + o for i, o in zip(trace.input_len, trace.output_len, strict=True)) <= 4096
    assert any(read_trace(resolve("bursty")).hash_ids)


# prompts --------------------------------------------------------------------------------------


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize("make", ["tiny", "byte_level_bpe"])
def test_prompts_have_exact_lengths_and_share_prefix_blocks(mooncake, tiny, make):
    tokenizer = tiny if make == "tiny" else byte_level_bpe()
    cfg = TraceDatasetConfig(path=mooncake, block_size=16, seed=3)
    prompts = load_prompts(cfg, tokenizer, 100)  # an upper bound: the trace has 5 rows
    assert [p.input_tokens for p in prompts] == [40, 37, 20, 50, 9]
    for p in prompts:
        assert tuple(tokenizer(p.text).input_ids) == p.token_ids  # re-tokenized: the same ids
    ids = [p.token_ids for p in prompts]
    # BOS, then 16 tokens per shared leading block: rows 0 and 1 share 2 blocks, 0 and 2 one.
    assert common_prefix(ids[0], ids[1]) == 1 + 2 * 16
    assert common_prefix(ids[0], ids[2]) == 1 + 16
    assert common_prefix(ids[0], ids[3]) == 1  # no block in common
    assert common_prefix(ids[3], ids[4]) == 1
    again = load_prompts(cfg, tokenizer, 100)
    assert [p.token_ids for p in again] == ids  # seeded
    other = load_prompts(TraceDatasetConfig(path=mooncake, block_size=16, seed=4), tokenizer, 9)
    assert other[0].token_ids != ids[0]


def test_prompts_carry_output_lengths_and_arrivals_over_speedup(mooncake, tiny):
    prompts = load_prompts(TraceDatasetConfig(path=mooncake, block_size=16, speedup=4), tiny, 3)
    assert [p.output_tokens for p in prompts] == [5, 6, 7]  # the first rows only
    assert [p.arrival_s for p in prompts] == [0.0, 0.125, 0.125]


def test_without_a_tokenizer_prompts_share_leading_words(mooncake):
    prompts = load_prompts(TraceDatasetConfig(path=mooncake, block_size=16), None, 5)
    words = [p.text.split() for p in prompts]
    assert [len(w) for w in words] == [30, 28, 15, 38, 7]  # 0.75 words a token
    assert words[0][:24] == words[1][:24] and words[0][24] != words[1][24]
    assert all(p.token_ids == () for p in prompts)


def test_the_schedule_is_the_trace_offsets_over_the_speedup(mooncake, tiny):
    cfg = TraceDatasetConfig(path=mooncake, block_size=16, speedup=2)
    workload = WorkloadConfig(name="open_loop", output_len=99, warmup_requests=1, request_rate=5)
    warmup, requests = build_requests(load_prompts(cfg, tiny, 100), workload)
    assert [r.max_tokens for r in warmup + requests] == [5, 6, 7, 8, 9]  # not output_len
    # The first measured row (the trace's second) is due at 0; the rest at offset / speedup.
    assert trace_offsets(requests) == pytest.approx([0.0, 0.0, 0.55, 0.875], abs=1e-12)
    assert trace_offsets(warmup[:0]) is None


# bad input: one line naming the file, the line and the column --------------------------------


SORTED = r"trace\.jsonl:2: timestamp 1000 is before the previous row's"
WHOLE = "must be a whole number >= 1"
NEG = f"{WHOLE}, got -3"  # a negative length
PREFIX = r"4 hash_ids of 16 tokens \(dataset.block_size\) make a prefix longer than input_length 37"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (jsonl([ROWS[1], ROWS[0]]), SORTED),
        (jsonl([{"timestamp": 0, "input_length": 5}]), r":1: no column 'output_length'"),
        (jsonl([ROWS[0], {**ROWS[1], "input_length": -3}]), f":2: column 'input_length' {NEG}"),
        (jsonl([{**ROWS[0], "output_length": 0}]), f":1: column 'output_length' {WHOLE}, got 0"),
        (jsonl([ROWS[0], {**ROWS[1], "hash_ids": "x"}]), r":2: column 'hash_ids' must be a list"),
        (jsonl([ROWS[0], {**ROWS[1], "hash_ids": [0, 1, 2, 3]}]), f":2: {PREFIX}"),
        ("{not json\n", r"trace\.jsonl:1: not a JSON object"),
        ("\n", r"trace file .*trace\.jsonl is empty"),
    ],
)  # fmt: skip
def test_bad_rows_are_one_line_naming_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path / "trace.jsonl", text)
    with pytest.raises(DatasetError, match=message) as caught:
        check_dataset(TraceDatasetConfig(path=path, block_size=16), None)
    assert "\n" not in str(caught.value)


def test_missing_column_of_a_burstgpt_csv_is_named(tmp_path):
    path = write(tmp_path / "b.csv", "Timestamp,Model,Request tokens\n1,ChatGPT,5\n")
    with pytest.raises(DatasetError, match=r"b\.csv: no column 'Response tokens' \(burstgpt"):
        read_trace(path)
    path = write(tmp_path / "c.csv", f"{BURSTGPT_HEADER}\n1,ChatGPT,5,7,12,API log\n1,x,5,,,\n")
    with pytest.raises(DatasetError, match=r"c\.csv:3: no value in column 'Response tokens'"):
        read_trace(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(
        DatasetError, match=r"trace file .*nope\.jsonl: No such file.*dataset\.path"
    ):
        check_dataset(TraceDatasetConfig(path=str(tmp_path / "nope.jsonl")), None)
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\x00" * 20)  # a gzip header, then garbage
    with pytest.raises(DatasetError, match=r"cannot read trace file .*bad\.jsonl\.gz"):
        read_trace(str(bad))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00timestamp")
    with pytest.raises(DatasetError, match=r"cannot read trace file .*binary\.csv"):
        read_trace(str(binary))


def test_a_row_longer_than_the_context_is_refused(mooncake, tiny):
    cfg = TraceDatasetConfig(path=mooncake, block_size=16)
    too_long = r"trace\.jsonl:4: input_length 50 \+ output_length 8 exceeds the context"
    rows = r"; 1 of the 5 rows taken do not fit: set dataset.too_long=skip or truncate"
    with pytest.raises(
        DatasetError, match=too_long + r" of 57 tokens \(model\.max_model_len\)" + rows
    ):
        check_dataset(cfg, Context(57, "model.max_model_len"))
    check_dataset(cfg, Context(58, "model.max_model_len"))
    with pytest.raises(
        DatasetError, match=r":4: .* context of 50 tokens \(backend\.max_model_len\)"
    ):
        load_prompts(cfg, tiny, 5, context=Context(50, "backend.max_model_len"))


def test_a_row_shorter_than_the_special_tokens_is_refused(tmp_path, tiny):
    path = write(tmp_path / "t.jsonl", jsonl([{**ROWS[0], "input_length": 1, "hash_ids": []}]))
    with pytest.raises(DatasetError, match=r"t\.jsonl:1: input_length 1 is below the minimum 2"):
        load_prompts(TraceDatasetConfig(path=path), tiny, 1)


def test_config_values_are_checked():
    with pytest.raises(ConfigError, match="dataset.speedup must be > 0"):
        TraceDatasetConfig(path="bursty", speedup=0)
    with pytest.raises(ConfigError, match="dataset.block_size must be > 0"):
        TraceDatasetConfig(path="bursty", block_size=0)


def test_a_bad_trace_stops_the_sweep_before_ray_starts(tmp_path, capsys):
    path = write(tmp_path / "trace.jsonl", jsonl([ROWS[1], ROWS[0]]))
    code = sweep_main(
        ["+experiment=trace_replay", f"sweep.grid.dataset.path=[{path}]",
         f"output.dir={tmp_path}/out"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"error: {path}:2: timestamp 1000 is before the previous row's (1500): "
        "a trace must be sorted by time"
    )
    assert not (tmp_path / "out").exists()
