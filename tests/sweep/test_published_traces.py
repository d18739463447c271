"""Published traces: Azure's format, names that download and check their sha256, the window, rows
too long for the context, the summary's trace columns and the prompt cache.

Real files: Azure-format rows written here, and the slices of the published files in
`tests/fixtures/traces/` (`scripts.bench.trace_fixtures`), or where a slice is absent (it is not
committed: fetched data), a stand-in in its exact format (`tests.trace_slices`). Downloads come
from an HTTP server of this test on 127.0.0.1 (`SWEEP_TRACES_URL`), the catalog entry pointing at a
slice's own sha256.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from datetime import datetime
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from backends.models.tiny import ensure_tiny_model
from sweep.core.config import TraceDatasetConfig
from sweep.core.errors import ConfigError, DatasetError
from sweep.datasets import check_dataset, dataset_columns, load_prompts
from sweep.datasets import trace_catalog as catalog
from sweep.datasets.cache import PromptSource
from sweep.datasets.context import Context
from sweep.datasets.trace import read
from sweep.datasets.trace_catalog import CATALOG, PublishedTrace
from sweep.datasets.trace_file import read_trace
from tests.trace_slices import slice_path

AZURE_2023 = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:50.9951690,879,14
2023-11-16 18:16:02.0000001,90,3
"""
AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,2162,5
2024-05-10 00:00:00+00:00,2399,6
"""
CONTEXT = Context(4096, "model.max_model_len")


def fixture(name: str) -> Path:
    """The published slice of `name`, or a stand-in in its format (`tests.trace_slices`)."""
    return slice_path(f"{name}{Path(CATALOG[name].file).suffix}")


@pytest.fixture(scope="module")
def tiny():
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model()))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own (`SWEEP_CACHE_DIR`), the tiny model linked into it."""
    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    model = ensure_tiny_model()
    (root / "models" / model.name).symlink_to(model)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(root))
    return root


# Azure's format ---------------------------------------------------------------------------------


def test_azure_2023_dates_with_seven_digits_are_seconds_from_the_first(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    trace = read_trace(str(path))
    assert trace.columns.format == "azure"
    assert trace.arrival_s == pytest.approx((0.0, 4.314579, 4.314579, 15.3194101), abs=1e-6)
    assert trace.input_len == (374, 396, 879, 90)
    assert trace.output_len == (44, 109, 14, 3)
    assert trace.lines == (2, 3, 4, 5)


def test_azure_2024_dates_with_a_zone_and_without_a_fraction(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2024.replace("00:00:00+00:00", "00:00:01+00:00"))
    assert read_trace(str(path)).arrival_s == pytest.approx((0.0, 0.99007), abs=1e-6)


@pytest.mark.parametrize(
    "value",
    ["2023-11-16T18:15:46.68", "2023-11-16 18:15", "2023-13-16 18:15:46.6805900", "1700000000"],
)
def test_a_malformed_azure_date_is_one_line_naming_the_row(tmp_path, value):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023.replace("2023-11-16 18:15:50.9951690,396", f"{value},396"))
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path=str(path)), None)
    message = str(caught.value)
    assert message == (
        f"{path}:3: column 'TIMESTAMP' must be a date-time such as "
        f"'2023-11-16 18:15:46.6805900', got {value!r}"
    )


@pytest.mark.parametrize("name", ["azure_conv_2023", "azure_code_2023"])
def test_the_published_azure_slices_read_as_published(name):
    path = fixture(name)
    lines = path.read_text().splitlines()
    assert lines[0] == "TIMESTAMP,ContextTokens,GeneratedTokens"
    trace = read_trace(str(path))
    assert len(trace.lines) == len(lines) - 1
    last = lines[-1].split(",")
    assert (trace.input_len[-1], trace.output_len[-1]) == (int(last[1]), int(last[2]))
    assert all(b >= a for a, b in zip(trace.arrival_s, trace.arrival_s[1:], strict=False))


def test_the_published_mooncake_slices_read_with_their_blocks():
    for name in ("mooncake_conversation", "mooncake_synthetic"):
        trace = read_trace(str(fixture(name)))
        assert trace.columns.format == "mooncake"
        assert all(trace.hash_ids)  # every row of Mooncake's traces has its prefix blocks


# names: download, sha256, no network ------------------------------------------------------------


def test_an_unknown_trace_name_is_one_line_listing_the_names():
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path="azure_conv_2025"), None)
    assert str(caught.value).startswith(
        "unknown trace 'azure_conv_2025' (dataset.path): not a file, nor a published trace "
        "(azure_code_2023, azure_conv_2023, azure_code_2024, azure_conv_2024, "
        "mooncake_conversation, mooncake_synthetic, mooncake_toolagent) or a shipped one"
    )


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving a folder, as `SWEEP_TRACES_URL`."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(catalog.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}/")
    yield folder
    server.shutdown()
    server.server_close()
    thread.join()


def publish(monkeypatch, served: Path, text: str, sha256: str | None = None) -> Path:
    """Serve `text` as a published trace `test_trace`, its catalog hash that of `text`."""
    (served / "test_trace.csv").write_text(text)
    digest = sha256 or hashlib.sha256(text.encode()).hexdigest()
    monkeypatch.setitem(CATALOG, "test_trace", PublishedTrace("test_trace.csv", "", digest, "x"))
    return served / "test_trace.csv"


def test_a_name_downloads_once_into_the_cache_and_is_checked(cache, served, monkeypatch):
    publish(monkeypatch, served, AZURE_2023)
    trace = read("test_trace")
    copy = cache / "traces" / "test_trace.csv"
    assert trace.path == str(copy) and copy.read_text() == AZURE_2023
    assert trace.sha256 == hashlib.sha256(AZURE_2023.encode()).hexdigest()
    (served / "test_trace.csv").unlink()  # a second use reads the copy
    assert read("test_trace").input_len == (374, 396, 879, 90)
    assert [p.name for p in copy.parent.iterdir()] == ["test_trace.csv"]  # no partial files


def test_a_download_whose_hash_differs_is_refused_and_not_kept(cache, served, monkeypatch):
    publish(monkeypatch, served, AZURE_2023, sha256="0" * 64)
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path="test_trace"), None)
    assert str(caught.value).startswith("trace test_trace: http://127.0.0.1:")
    assert "has sha256 " in str(caught.value) and "not the published 0000000000000000..." in str(
        caught.value
    )
    assert list((cache / "traces").iterdir()) == []


def test_a_cached_copy_whose_hash_differs_is_refused(cache, served, monkeypatch):
    publish(monkeypatch, served, AZURE_2023)
    copy = cache / "traces" / "test_trace.csv"
    copy.parent.mkdir(parents=True)
    copy.write_text(AZURE_2023.replace("374", "375"))
    with pytest.raises(DatasetError, match=r"^trace test_trace: .*test_trace\.csv has sha256 .* "
                       r"not the published .* \(delete it to download it again\)$"):  # fmt: skip
        read("test_trace")


def test_without_a_network_one_line_says_where_to_put_the_file(cache, monkeypatch):
    monkeypatch.setenv(catalog.MIRROR_ENV, "http://127.0.0.1:9/")  # the discard port: refused
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path="azure_conv_2023"), None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "trace azure_conv_2023: cannot download http://127.0.0.1:9/AzureLLMInferenceTrace_conv.csv"
    )
    assert message.endswith(f"put the file at {cache}/traces/AzureLLMInferenceTrace_conv.csv")


def test_a_published_file_put_in_the_cache_by_hand_is_used(cache, monkeypatch):
    source = fixture("azure_conv_2023")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(
        CATALOG, "azure_conv_2023", PublishedTrace(source.name, "", digest, "CC-BY 4.0")
    )
    (cache / "traces").mkdir()
    shutil.copy(source, cache / "traces" / source.name)
    assert read("azure_conv_2023").sha256 == digest


# the window -------------------------------------------------------------------------------------


def test_a_window_takes_its_rows_with_arrivals_from_its_first(tmp_path, tiny):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    cfg = TraceDatasetConfig(path=str(path), start_s=4.0, duration_s=10.0, speedup=2)
    prompts = load_prompts(cfg, tiny, 10, context=CONTEXT)
    assert [p.input_tokens for p in prompts] == [396, 879]
    assert [p.arrival_s for p in prompts] == [0.0, 0.0]
    cfg = TraceDatasetConfig(path=str(path), start_s=4.0, speedup=2)
    prompts = load_prompts(cfg, tiny, 10, context=CONTEXT)
    assert [p.arrival_s for p in prompts] == pytest.approx([0.0, 0.0, (15.3194101 - 4.314579) / 2])


def test_a_window_past_the_end_is_one_line(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path=str(path), start_s=16), None)
    assert str(caught.value) == (
        f"dataset.start_s=16 is past the end of trace {path}: its last row is 15.319 s after "
        "its first"
    )
    with pytest.raises(DatasetError, match=r"has no rows from 5 s to 6 s"):
        check_dataset(TraceDatasetConfig(path=str(path), start_s=5, duration_s=1), None)


def test_window_and_too_long_values_are_checked():
    with pytest.raises(ConfigError, match="dataset.start_s must be >= 0"):
        TraceDatasetConfig(path="bursty", start_s=-1)
    with pytest.raises(ConfigError, match="dataset.duration_s must be > 0"):
        TraceDatasetConfig(path="bursty", duration_s=0)
    with pytest.raises(ConfigError, match="dataset.too_long='cut' is not valid"):
        TraceDatasetConfig(path="bursty", too_long="cut")


# rows too long for the context ------------------------------------------------------------------


def test_refuse_names_the_first_row_and_how_many_do_not_fit(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    with pytest.raises(DatasetError) as caught:
        check_dataset(TraceDatasetConfig(path=str(path)), Context(450, "backend.max_model_len"), 3)
    assert str(caught.value) == (
        f"{path}:3: ContextTokens 396 + GeneratedTokens 109 exceeds the context of 450 tokens "
        "(backend.max_model_len); 2 of the 3 rows taken do not fit: set dataset.too_long=skip "
        "or truncate"
    )


def test_skip_sends_the_rows_that_fit_and_counts_the_others(tmp_path, tiny):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    cfg = TraceDatasetConfig(path=str(path), too_long="skip")
    context = Context(450, "backend.max_model_len")
    prompts = load_prompts(cfg, tiny, 4, context=context)
    assert [(p.input_tokens, p.output_tokens) for p in prompts] == [(374, 44), (90, 3)]
    assert [p.arrival_s for p in prompts] == pytest.approx([0.0, 15.3194101])
    columns = dataset_columns(cfg, context, 4)
    assert columns["trace_rows_used"] == 2
    assert columns["trace_rows_skipped"] == 2
    assert columns["trace_rows_truncated"] == 0
    assert columns["trace_sha256"] == hashlib.sha256(AZURE_2023.encode()).hexdigest()


def test_truncate_cuts_the_input_then_the_output_to_fit(tmp_path, tiny):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023.replace("90,3", "90,449"))
    cfg = TraceDatasetConfig(path=str(path), too_long="truncate")
    context = Context(450, "backend.max_model_len")
    prompts = load_prompts(cfg, tiny, 4, context=context)
    assert [(p.input_tokens, p.output_tokens) for p in prompts] == [
        (374, 44), (341, 109), (436, 14), (2, 448),
    ]  # fmt: skip
    assert all(len(p.token_ids) == p.input_tokens for p in prompts)
    assert tiny(prompts[1].text).input_ids == list(prompts[1].token_ids)
    assert dataset_columns(cfg, context, 4)["trace_rows_truncated"] == 3


def test_mooncake_conversation_first_1000_rows_against_the_tiny_models_context(tiny):
    path = str(fixture("mooncake_conversation"))
    trace = read_trace(path)
    fits = [i for i in range(1000) if trace.input_len[i] + trace.output_len[i] <= 4096]
    skip = TraceDatasetConfig(path=path, too_long="skip")
    kept = load_prompts(skip, tiny, 1000, context=CONTEXT)
    assert [p.input_tokens for p in kept] == [trace.input_len[i] for i in fits]
    assert dataset_columns(skip, CONTEXT, 1000)["trace_rows_skipped"] == 1000 - len(fits)
    cut = TraceDatasetConfig(path=path, too_long="truncate")
    sent = load_prompts(cut, tiny, 1000, context=CONTEXT)
    assert len(sent) == 1000
    assert all(p.input_tokens + p.output_tokens <= 4096 for p in sent)
    refused = r":1: input_length 6758 \+ output_length 500 exceeds the context of 4096 .*; "
    with pytest.raises(DatasetError, match=refused + rf"{1000 - len(fits)} of the 1000 rows taken"):
        check_dataset(TraceDatasetConfig(path=path), CONTEXT, 1000)


# the prompt cache -------------------------------------------------------------------------------


def test_trace_prompts_are_cached_with_their_lengths_and_arrivals(cache, tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_2023)
    model = str(cache / "models" / ensure_tiny_model().name)
    cfg = TraceDatasetConfig(path=str(path), too_long="skip", speedup=2)
    made = PromptSource(model, None, False, context=Context(450, "x")).prompts(cfg, 4)
    again = PromptSource(model, None, False, context=Context(450, "x"))
    assert again.is_cached(cfg, 4)
    assert again.prompts(cfg, 4) == made and again._tokenizer is None  # no tokenizer loaded
    assert [p.arrival_s for p in made] == pytest.approx([0.0, 15.3194101 / 2])
    keys = {again.key(cfg, 4)}
    keys.add(PromptSource(model, None, False, context=Context(900, "x")).key(cfg, 4))
    keys.add(again.key(TraceDatasetConfig(path=str(path), too_long="skip", start_s=1), 4))
    path.write_text(AZURE_2023.replace("374", "375"))
    keys.add(again.key(cfg, 4))
    assert len(keys) == 4  # the context, the window and the file's bytes all make new prompts


def test_a_well_formed_azure_file_reads_column_by_column_as_row_by_row(tmp_path):
    """The columnar reader and the row reader (a CRLF copy takes it) agree on every value."""
    source = fixture("azure_conv_2023").read_text()
    plain, crlf = tmp_path / "plain.csv", tmp_path / "crlf.csv"
    plain.write_text(source)
    crlf.write_bytes(source.replace("\n", "\r\n").encode())
    fast, slow = read_trace(str(plain)), read_trace(str(crlf))
    assert fast.lines == slow.lines == tuple(range(2, 2002))
    assert fast.input_len == slow.input_len and fast.output_len == slow.output_len
    assert fast.arrival_s == pytest.approx(slow.arrival_s, abs=1e-6)
    rows = source.splitlines()[1:]
    first, last = (
        datetime.strptime(row.split(",")[0][:26], "%Y-%m-%d %H:%M:%S.%f")
        for row in (rows[0], rows[-1])
    )
    spans = (last - first).total_seconds() + (int(rows[-1][26]) - int(rows[0][26])) * 1e-7
    assert fast.arrival_s[-1] == pytest.approx(spans, abs=1e-6)  # the 7th digit counted too
