"""Request timeouts and cancellation against the sim server (`sweep.loadgen.cancel`).

The sim streams one chunk every `itl_ms`, far slower than any cut a test makes, or stalls on
purpose: each request ends where the test says, never by timing luck. Its own stamps
(`/sim/requests`) say what the server saw: a request whose client hung up ends there as `closed`,
before its last token.
"""

import dataclasses
import time

import httpx
import pandas as pd
import pytest

from analysis.report.ended_early import ENDED_EARLY, ended_early_sections
from analysis.report.report import write_report
from backends.process.prometheus import SOURCE as SERVER
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.core.summary import summarize
from sweep.core.timeslices import time_slices
from sweep.loadgen.attribution import require_server_counts
from sweep.loadgen.cancel import cancel_rules, chosen
from sweep.loadgen.engine import run_engine_workload
from sweep.loadgen.http import run_http_workload
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.request_ids import parse as parse_id
from sweep.spec import hash_tree
from tests.helpers import make_requests, run_sweep_here, table, workload

pytestmark = pytest.mark.timeout(90)

CLIENTS = ["asyncio", "aiohttp"]
# docs/workloads.md's example, "Timeouts and cancellation".
DOCS_EXAMPLE = (
    "backend=sim", "workload=closed_loop", "workload.concurrency=8", "workload.num_requests=32",
    "workload.output_len=64", "backend.itl_ms=20", "workload.cancel_rate=0.5",
    "workload.cancel_after=tokens", "workload.cancel_after_tokens=8", "sweep.name=cancel_sim",
)  # fmt: skip
CANCEL_FIELDS = {"cancel_rate", "cancel_after", "cancel_delay_s", "cancel_after_tokens"}


def rows_of(trackers):
    return [t.record("trial", 0.0) for t in trackers]


def server_view(backend, warmup=False):
    """The sim's stamps by request index: the measured requests', or the warm-up's."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    return {i.idx: s for rid, s in stamps.items() if (i := parse_id(rid)).warmup == warmup}


def ended_on_the_server(backend, count):
    """The stamps once the server has ended all `count` requests (it sees a hang-up late)."""
    deadline = time.monotonic() + 10
    while True:
        view = server_view(backend)
        if len(view) == count and all("outcome" in s for s in view.values()):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def summary_of(rows, **options):
    return summarize(pd.DataFrame(rows), num_gpus=0, price_per_hour=1.0, **options)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_timed_out_request_keeps_its_tokens_and_is_no_good_request(sim, client):
    # Some requests (drawn by the sim's seed) stall after 4 of their 8 tokens: they time out
    # holding those 4, the others complete.
    backend = sim(ttft_ms=2, itl_ms=1, fault_rate=0.5, fault_kinds=["stall"], seed=1)
    load = workload(concurrency=12, num_requests=12, timeout_s=0.5, http_client=client)
    rows = rows_of(run_http_workload(backend, make_requests(12, 8), [], load))
    stalled = {idx for idx, s in server_view(backend).items() if s["fault"] == "stall"}
    assert 0 < len(stalled) < 12
    for r in rows:
        if r[R.REQUEST_IDX] in stalled:
            assert r[R.STATUS] == R.STATUS_FAILED and r[R.TIMED_OUT] is True, r
            assert r[R.ERROR].startswith("timeout:") and not r[R.CANCELLED]
            assert r[R.OUTPUT_TOKENS] == 4 and r[R.FIRST_TOKEN_S] is not None
        else:
            assert r[R.STATUS] == R.STATUS_OK and r[R.TIMED_OUT] is False, r
            assert r[R.OUTPUT_TOKENS] == 8
    summary = summary_of(rows, slo={"ttft_ms": 10_000.0})
    assert summary[R.TIMED_OUT_REQUESTS] == summary[R.FAILED_REQUESTS] == len(stalled)
    good = 12 - len(stalled)
    assert summary[R.COMPLETED_REQUESTS] == good
    assert summary[R.GOODPUT] * summary[R.DURATION_S] == pytest.approx(good)
    assert summary[R.SLO_ATTAINED_FRACTION] == pytest.approx(good / 12)
    # Records written before the flag existed: unknown, not 0.
    old = pd.DataFrame(rows).drop(columns=[R.TIMED_OUT, R.CANCELLED, R.CANCEL_S])
    old_summary = summarize(old, num_gpus=0, price_per_hour=1.0)
    assert old_summary[R.TIMED_OUT_REQUESTS] is None and old_summary[R.CANCELLED_REQUESTS] is None
    assert old_summary[R.FAILED_REQUESTS] == len(stalled)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("after", "count", "chunk", "kept"),
    [("first_token", None, 1, 1), ("tokens", 3, 1, 3), ("tokens", 3, 2, 4)],
)
def test_the_seeded_half_is_cancelled_at_its_token(sim, client, after, count, chunk, kept):
    # A chunk every 20 ms, 32 tokens: a cut at most 4 tokens in always comes mid-stream.
    backend = sim(ttft_ms=5, itl_ms=20, tokens_per_chunk=chunk)
    load = workload(
        concurrency=20, num_requests=20, seed=3, http_client=client,
        cancel_rate=0.5, cancel_after=after, cancel_after_tokens=count,
    )  # fmt: skip
    rows = rows_of(run_http_workload(backend, make_requests(20, 32), make_requests(2, 4), load))
    seeded = set(cancel_rules(load, 20))
    assert len(seeded) == 10
    assert {r[R.REQUEST_IDX] for r in rows if r[R.CANCELLED]} == seeded
    server = ended_on_the_server(backend, 20)
    for r in rows:
        truth = server[r[R.REQUEST_IDX]]
        if r[R.REQUEST_IDX] in seeded:
            assert r[R.STATUS] == R.STATUS_CANCELLED and r[R.ERROR] is None, r
            assert r[R.OUTPUT_TOKENS] == kept  # N, or the chunk that reached N
            assert 0 < r[R.TTFT_S] <= r[R.CANCEL_S]
            assert truth["outcome"] == "closed" and truth["output_tokens"] < 32  # it saw us go
        else:
            assert r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == 32, r
            assert r[R.CANCEL_S] is None and truth["outcome"] == "done"
    assert all(s["outcome"] == "done" for s in server_view(backend, warmup=True).values())
    summary = summary_of(rows, slo={"ttft_ms": 10_000.0})
    assert summary[R.CANCELLED_REQUESTS] == 10 and summary[R.FAILED_REQUESTS] == 0
    assert summary[R.COMPLETED_REQUESTS] == 10 and summary[R.OUTPUT_TOKENS_TOTAL] == 10 * 32
    assert summary[R.SLO_ATTAINED_FRACTION] == 1.0  # a cancelled request misses nothing
    slices = time_slices(pd.DataFrame(rows)).to_pandas()
    assert slices[R.REQUESTS_FAILED].sum() == 0 and slices[R.REQUESTS_FINISHED].sum() == 10


@pytest.mark.parametrize("client", CLIENTS)
def test_a_delay_cancels_mid_stream_counted_from_the_send(sim, client):
    # 64 tokens 20 ms apart take 1.3 s: a cut 0.2 s after the send lands mid-stream.
    backend = sim(ttft_ms=5, itl_ms=20)
    load = workload(
        concurrency=8, num_requests=8, http_client=client, cancel_rate=0.5, cancel_delay_s=0.2
    )
    rows = rows_of(run_http_workload(backend, make_requests(8, 64), [], load))
    cancelled = [r for r in rows if r[R.CANCELLED]]
    assert {r[R.REQUEST_IDX] for r in cancelled} == set(cancel_rules(load, 8))
    assert len(cancelled) == 4
    for r in cancelled:
        assert 0.2 <= r[R.CANCEL_S] < 1.0, r
        assert 0 < r[R.OUTPUT_TOKENS] < 64 and r[R.TTFT_S] is not None
    assert all(r[R.OUTPUT_TOKENS] == 64 for r in rows if r[R.STATUS] == R.STATUS_OK)


def test_a_request_done_before_its_delay_is_not_cancelled(sim):
    backend = sim(ttft_ms=2, itl_ms=1)
    load = workload(concurrency=4, num_requests=8, cancel_rate=1.0, cancel_delay_s=5.0)
    t0 = time.monotonic()
    rows = rows_of(run_http_workload(backend, make_requests(8, 8), [], load))
    assert time.monotonic() - t0 < 5  # no stream waited for its timer
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.CANCELLED] is False for r in rows)
    assert summary_of(rows)[R.CANCELLED_REQUESTS] == 0


def test_the_cancelled_requests_are_chosen_by_the_seed():
    first = chosen(20, 0.5, seed=3)
    assert len(first) == 10 and first == chosen(20, 0.5, seed=3) and first <= set(range(20))
    assert first != chosen(20, 0.5, seed=4)
    assert len(chosen(7, 0.5, 0)) == 4  # a share of whole requests, rounded half up
    assert chosen(20, 0.0, 3) == frozenset() and chosen(20, 1.0, 3) == set(range(20))
    load = WorkloadConfig(name="closed_loop", seed=3, cancel_rate=0.5, cancel_after="first_token")
    rules = cancel_rules(load, 20)
    assert set(rules) == first and {r.cut_tokens for r in rules.values()} == {1}


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"cancel_rate": 1.5}, "workload.cancel_rate must be in [0, 1]"),
        ({"cancel_rate": -0.1}, "workload.cancel_rate must be in [0, 1]"),
        ({"cancel_rate": 0.5, "cancel_delay_s": -1.0}, "workload.cancel_delay_s must be >= 0"),
        ({"cancel_rate": 0.5, "cancel_after": "tokens"}, "needs workload.cancel_after_tokens"),
        (
            {"cancel_rate": 0.5, "cancel_after": "tokens", "cancel_after_tokens": 0},
            "workload.cancel_after_tokens must be >= 1",
        ),
        ({"cancel_rate": 0.5, "cancel_after_tokens": 3}, "counts for cancel_after=tokens only"),
        (
            {"cancel_rate": 0.5, "cancel_after": "first_token", "cancel_delay_s": 1.0},
            "times cancel_after=delay only",
        ),
        ({"cancel_rate": 0.5, "cancel_after": "later"}, "workload.cancel_after='later'"),
    ],
)
def test_bad_cancel_settings_are_one_line(values, words):
    with pytest.raises(ConfigError) as raised:
        WorkloadConfig(name="closed_loop", **values)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_grid_over_cancel_rate_may_start_at_zero():
    # `workload.cancel_rate=0,0.25,0.5` beside `cancel_after=tokens`: the 0 point cancels nothing
    load = WorkloadConfig(
        name="closed_loop", cancel_rate=0.0, cancel_after="tokens", cancel_after_tokens=8
    )
    assert cancel_rules(load, 20) == {}


def test_cancel_fields_move_no_trial_id_until_they_are_used():
    def hashed(**values):
        config = WorkloadConfig(name="closed_loop", **values)
        return hash_tree({"workload": dataclasses.asdict(config)})["workload"]

    assert not CANCEL_FIELDS & set(hashed())
    used = hashed(cancel_rate=0.5, cancel_after="tokens", cancel_after_tokens=3)
    assert {k: used[k] for k in CANCEL_FIELDS & set(used)} == {
        "cancel_rate": 0.5, "cancel_after": "tokens", "cancel_after_tokens": 3,
    }  # fmt: skip


def test_an_in_process_engine_refuses_cancellation():
    load = WorkloadConfig(name="closed_loop", cancel_rate=0.5)
    with pytest.raises(ConfigError, match="an in-process engine has none"):
        run_engine_workload(None, make_requests(2, 4), [], load)


def test_the_docs_example_records_its_cancellations_in_the_trial_files(tmp_path):
    collected = []
    out = run_sweep_here(tmp_path, list(DOCS_EXAMPLE), collected)
    (files,) = collected
    summary, requests = table(files, "summary").iloc[0], table(files, "requests")
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK and summary["workload.cancel_rate"] == 0.5
    assert summary[R.CANCELLED_REQUESTS] == 16 and summary[R.FAILED_REQUESTS] == 0
    assert summary[R.TIMED_OUT_REQUESTS] == 0 and summary[R.COMPLETED_REQUESTS] == 16
    cancelled = requests[requests[R.STATUS] == R.STATUS_CANCELLED]
    assert len(cancelled) == 16 and cancelled[R.CANCELLED].all()
    assert (cancelled[R.OUTPUT_TOKENS] == 8).all() and (cancelled[R.CANCEL_S] > 0).all()
    seeded = chosen(32, 0.5, int(summary["workload.seed"]))
    assert set(cancelled[R.REQUEST_IDX]) == seeded
    # The server's count was sampled during the trial: the release estimate has its samples.
    assert summary[R.CANCEL_RELEASE_SAMPLES] >= 1
    assert summary[R.CANCEL_RELEASE_MS_MEAN] >= 0 and summary[R.CANCEL_HELD_MAX] <= 16
    # the report's table: the trial, its 32 requests, 16 completed, 16 cancelled, none timed out
    report = write_report(out).report_md.read_text()
    section = report.split("## Cancelled and timed-out requests", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| ") and "32" in line]
    assert [cell.strip() for cell in row.strip("|").split("|")][1:5] == ["32", "16", "16", "0"]


def test_a_cancelled_request_is_not_failed_for_the_usage_it_never_got():
    # backend.tokenizer=none fails each completed request the server sent no usage for; a
    # cancelled request never gets its final usage, and is no completed request.
    counted, cut = RequestTracker(0, None, 0, 4), RequestTracker(1, None, 0, 4)
    for tracker in (counted, cut):
        tracker.mark_sent(0.0)
        tracker.add_chunk(" a", at=0.1)
    counted.server_input_tokens = 7
    counted.finish(server_tokens=4, at=0.2)
    cut.cancel(0.15)
    require_server_counts([counted, cut])
    row = cut.record("t", 0.0)
    assert cut.error is None and row[R.STATUS] == R.STATUS_CANCELLED and row[R.ERROR] is None
    assert row[R.CANCEL_S] == pytest.approx(0.15) and row[R.OUTPUT_TOKENS] == 1


def test_a_report_without_hang_ups_has_no_such_table():
    trials = pd.DataFrame(
        {R.TRIAL_ID: ["a", "b"], R.CANCELLED_REQUESTS: [0, None], R.TIMED_OUT_REQUESTS: [0, 0]}
    )
    assert ended_early_sections(trials) == []
    assert ended_early_sections(trials.drop(columns=list(ENDED_EARLY))) == []
    trials.loc[1, R.TIMED_OUT_REQUESTS] = 2
    (section,) = ended_early_sections(trials)
    assert section.table["Trial"].tolist() == ["b"] and section.table["Timed out"].tolist() == ["2"]


def test_an_attached_endpoint_samples_its_servers_gauges_for_the_release(tmp_path, sim):
    """`backend=openai` with `server_kind` samples the server's running requests as a launched
    backend does, so the release is measured on an endpoint the sweep did not start too."""
    server = sim(itl_ms=20.0)
    attached = [o for o in DOCS_EXAMPLE if not o.startswith(("backend=", "backend.itl_ms"))]
    collected = []
    run_sweep_here(tmp_path, [*attached, "backend=openai", f"backend.url={server.base_url}",
                              "backend.server_kind=sim", "sweep.name=cancel_attached"],
                   collected)  # fmt: skip
    (files,) = collected
    summary, samples = table(files, "summary").iloc[0], table(files, "timeseries")
    assert summary[R.CANCELLED_REQUESTS] == 16
    running = samples[(samples[R.SOURCE] == SERVER) & (samples[R.METRIC] == R.RUNNING_REQUESTS)]
    assert len(running) >= 1 and summary[R.CANCEL_RELEASE_SAMPLES] >= 1
    assert summary[R.CANCEL_RELEASE_MS_MEAN] >= 0 and summary[R.CANCEL_HELD_MAX] <= 16
