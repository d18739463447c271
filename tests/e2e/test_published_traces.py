"""Published traces replayed through the trial path against the sim server, whose stamps are the
truth: Mooncake's conversation trace against the tiny model's 4096-token context with each
`dataset.too_long`, and the traces' catalogue, cache and windows.

The slices of the published files in `tests/fixtures/traces/` (`scripts.bench.trace_fixtures`),
or where absent (fetched data is not committed) stand-ins in their formats (`tests.trace_slices`).
Mooncake's 1,000 rows (330 s) run at 100x with a fast sim. Azure's conversation trace at its own
times, which are timed to the millisecond and so run `alone`, is `test_published_trace_arrivals.py`
(under pytest-xdist a file is one unit of work, and a unit with an `alone` test is handed out
last). Bad input (an unknown name, a hash mismatch, a malformed Azure date, a window past the end)
stops `python -m sweep` in one line before any request reaches the server.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sweep.__main__ import main as sweep_main
from sweep.core import records as R
from sweep.datasets.trace_file import read_trace
from sweep.loadgen.request_ids import parse as parse_id
from tests.helpers import run_sweep_here
from tests.trace_slices import slice_path

CONTEXT = 4096  # the tiny model's


def fixture(name: str) -> Path:
    return slice_path(name)  # the published slice, or a stand-in in its format


def replay(tmp: Path, overrides: list[str]) -> tuple[list, list[np.ndarray]]:
    """Run the trace replay here; the trials' files and the server's arrival stamps per trial."""
    stamps = tmp / "stamps"
    stamps.mkdir()
    collected: list = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SIM_STAMPS_DIR", str(stamps))  # the launched sim server inherits it
        run_sweep_here(tmp / "results", ["+experiment=trace_replay", *overrides], collected)
    arrivals: dict[str, dict[int, int]] = {}
    for dump in stamps.glob("sim-stamps-*.json"):
        for rid, stamp in json.loads(dump.read_text()).items():
            request = parse_id(rid)
            if request is not None and not request.warmup:
                arrivals.setdefault(request.run, {})[request.idx] = stamp["arrival_ns"]
    runs = [np.array([by[i] for i in sorted(by)]) for by in arrivals.values()]
    return collected, sorted(runs, key=lambda run: run[0])


MOONCAKE = [
    "workload.warmup_requests=0", "workload.num_requests=1000", "dataset.speedup=100",
    "backend.itl_ms=0.2", "backend.ttft_ms=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def mooncake():
    path = fixture("mooncake_conversation.jsonl")
    trace = read_trace(str(path))
    fits = [i for i in range(1000) if trace.input_len[i] + trace.output_len[i] <= CONTEXT]
    return path, trace, fits


def test_skip_sends_exactly_the_mooncake_rows_that_fit(tmp_path, mooncake):
    path, trace, fits = mooncake
    collected, runs = replay(
        tmp_path, [f"sweep.grid.dataset.path=[{path}]", "dataset.too_long=skip", *MOONCAKE]
    )
    summary = collected[0].summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = collected[0].requests.to_pandas()
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    assert list(requests[R.INPUT_TOKENS]) == [trace.input_len[i] for i in fits]
    assert list(requests[R.OUTPUT_TOKENS]) == [trace.output_len[i] for i in fits]
    assert [len(run) for run in runs] == [len(fits)]  # the server saw those and no others
    assert (summary[R.TRACE_ROWS_USED], summary[R.TRACE_ROWS_SKIPPED]) == (
        len(fits),
        1000 - len(fits),
    )
    assert summary[R.TRACE_ROWS_TRUNCATED] == 0


def test_truncate_sends_every_mooncake_row_within_the_context(tmp_path, mooncake):
    path, trace, fits = mooncake
    collected, runs = replay(
        tmp_path, [f"sweep.grid.dataset.path=[{path}]", "dataset.too_long=truncate", *MOONCAKE]
    )
    summary = collected[0].summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = collected[0].requests.to_pandas()
    assert len(requests) == 1000 and (requests[R.STATUS] == R.STATUS_OK).all()
    total = requests[R.INPUT_TOKENS] + requests[R.OUTPUT_TOKENS]
    assert (total <= CONTEXT).all()
    kept = requests.iloc[fits]  # the rows that fit are sent as they are
    assert list(kept[R.INPUT_TOKENS]) == [trace.input_len[i] for i in fits]
    assert [len(run) for run in runs] == [1000]
    assert summary[R.TRACE_ROWS_TRUNCATED] == 1000 - len(fits)
    assert summary[R.TRACE_ROWS_SKIPPED] == 0


def test_refuse_fails_before_any_request_naming_the_row_and_the_count(
    tmp_path, mooncake, capsys, monkeypatch
):
    path, trace, fits = mooncake
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    monkeypatch.setenv("SIM_STAMPS_DIR", str(stamps))
    code = sweep_main(
        ["+experiment=trace_replay", f"sweep.grid.dataset.path=[{path}]", *MOONCAKE,
         f"output.dir={tmp_path}/out"]
    )  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {path}:1: input_length {trace.input_len[0]} + output_length "
        f"{trace.output_len[0]} exceeds the context of 4096 "
        f"tokens (the model's config.json); {1000 - len(fits)} of the 1000 rows taken do not fit: "
        "set dataset.too_long=skip or truncate"
    )
    assert not (tmp_path / "out").exists() and not list(stamps.iterdir())


@pytest.mark.parametrize(
    "case", ["unknown name", "hash mismatch", "malformed date", "past the end"]
)
def test_bad_input_is_one_line_before_any_request(tmp_path, monkeypatch, capsys, case):
    from backends.models.tiny import ensure_tiny_model

    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    model = ensure_tiny_model()
    (cache / "models" / model.name).symlink_to(model)
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(cache))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    monkeypatch.setenv("SIM_STAMPS_DIR", str(stamps))
    azure = fixture("azure_conv_2023.csv")
    path, extra = "azure_conv_2025", []
    if case == "hash mismatch":  # a copy in the cache that is not the published file
        (cache / "traces").mkdir()
        (cache / "traces" / "AzureLLMInferenceTrace_conv.csv").write_bytes(azure.read_bytes())
        path = "azure_conv_2023"
    elif case == "malformed date":  # the second row's date written the other way round
        lines = azure.read_text().splitlines(keepends=True)
        lines[2] = "16/11/2023," + lines[2].split(",", 1)[1]
        path = tmp_path / "azure.csv"
        path.write_text("".join(lines))
    elif case == "past the end":
        last_s = read_trace(str(azure)).arrival_s[-1]
        path, extra = azure, [f"dataset.start_s={math.ceil(last_s) + 1}"]
    code = sweep_main(
        ["+experiment=trace_replay", f"sweep.grid.dataset.path=[{path}]", *extra,
         f"output.dir={tmp_path}/out"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    expected = {
        "unknown name": "error: unknown trace 'azure_conv_2025' (dataset.path): not a file",
        "hash mismatch": f"error: trace azure_conv_2023: {cache}/traces/"
        "AzureLLMInferenceTrace_conv.csv has sha256 ",
        "malformed date": f"error: {path}:3: column 'TIMESTAMP' must be a date-time such as",
        "past the end": f"error: {extra[0] if extra else ''} is past the end of trace {azure}: "
        "its last row is ",
    }[case]
    assert err.startswith(expected), err
    assert not (tmp_path / "out").exists() and not list(stamps.iterdir())
