"""A reasoning model's sweep end to end: `python -m sweep` on the sim's reasoning phase.

The sim server thinks for 8 of each reply's 16 tokens (`backend.reasoning_tokens=8`, chat API)
and runs at most 2 requests at once, the rest queueing. A capacity search over the closed loop's
concurrency holds each probe to `slo.answer_ms_p99`: at concurrency 2 nothing queues and the
answer begins about 50 ms after sending (10 ms to the first token, 8 tokens of thinking 5 ms
apart), inside the 100 ms bound; at 4 every request waits about one whole reply (85 ms) for a
slot first, so the bound fails, and the search says why. The summary's token columns are exact;
its answer latencies exceed TTFT by the thinking; the report shows the time to the answer.
Behind study D's semantic-cache proxy, the answers it replays from its cache split as the
server's own did.
"""

import pandas as pd
import pytest

from sweep.core import records as R
from tests.helpers import run_sweep_here, sweep_in_process

pytestmark = pytest.mark.timeout(600)

THINKING, OUTPUT, ITL_MS = 8, 16, 5.0
REPLAY_TOKENS_PER_S = 100  # the proxy's replays: 10 ms a token


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_cluster):
    out = tmp_path_factory.mktemp("reasoning")
    result = sweep_in_process(
        f"cluster.address={ray_cluster}",
        "sweep.name=reasoning",
        f"output.dir={out}",
        "backend=sim",
        "backend.api=chat",
        f"backend.reasoning_tokens={THINKING}",
        "backend.reasoning_field=reasoning_content",
        "backend.ttft_ms=10",
        f"backend.itl_ms={ITL_MS}",
        "backend.max_num_seqs=2",
        "workload=closed_loop",
        "workload.num_requests=24",
        "workload.warmup_requests=2",
        f"workload.output_len={OUTPUT}",
        "dataset.input_len=16",
        "search=capacity",
        "search.start=2",
        "search.max_load=8",
        "search.tolerance=0.5",  # 2 passes and 4 fails: no probe between them
        "slo.answer_ms_p99=100",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = out / "reasoning"
    rows = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    return root, rows.sort_values(R.SEARCH_LOAD).reset_index(drop=True)


def test_the_answer_time_slo_passes_unqueued_and_fails_queued(searched):
    _, rows = searched
    assert (rows[R.TRIAL_STATUS] == R.STATUS_OK).all()
    verdicts = dict(zip(rows[R.SEARCH_LOAD], rows[R.SLO_PASSED], strict=True))
    assert verdicts == {2.0: True, 4.0: False}
    failed = rows[rows[R.SEARCH_LOAD] == 4.0].iloc[0]
    assert failed[R.SLO_REASON].startswith("answer_ms_p99 ") and "> 100" in failed[R.SLO_REASON]


def test_summary_splits_every_reply_exactly_and_times_the_answer(searched):
    root, rows = searched
    completed = rows[R.COMPLETED_REQUESTS]
    assert (completed == 24).all()
    assert (rows[R.OUTPUT_TOKENS_TOTAL] == OUTPUT * completed).all()
    assert (rows[R.REASONING_TOKENS_TOTAL] == THINKING * completed).all()
    assert (rows[R.ANSWER_TOKENS_TOTAL] == (OUTPUT - THINKING) * completed).all()
    requests = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.REQUESTS_FILE}"))
    assert (requests[R.REASONING_TOKENS] == THINKING).all()
    assert (requests[R.ANSWER_TOKENS] == OUTPUT - THINKING).all()
    # the answer begins after the thinking: 8 tokens ITL_MS apart after the first token
    unqueued = rows[rows[R.SEARCH_LOAD] == 2.0].iloc[0]
    thinking_ms = (
        unqueued[R.latency_column(R.ANSWER, "median")]
        - unqueued[R.latency_column("ttft", "median")]
    )
    assert thinking_ms / (THINKING * ITL_MS) == pytest.approx(1, abs=0.25)


def test_the_report_shows_the_time_to_the_answer(searched):
    root, _ = searched
    report = (root / "report.md").read_text()
    assert "Time to answer p50 (ms)" in report  # the trials' table
    assert "Time to answer p99 (ms)" in report  # and the capacity table, which it bounds


def test_the_proxy_replays_a_cached_answer_split_as_the_server_streamed_it(tmp_path):
    files = []
    run_sweep_here(
        tmp_path,
        [
            "sweep.name=reasoning_proxy",
            "backend=sim",
            "backend.api=chat",
            f"backend.reasoning_tokens={THINKING}",
            "backend.ttft_ms=20",
            "backend.itl_ms=2",
            "workload=closed_loop",
            "workload.concurrency=2",
            "workload.num_requests=24",
            "workload.warmup_requests=0",
            f"workload.output_len={OUTPUT}",
            "dataset.input_len=32",
            "dataset.paraphrase_rate=0.5",
            "proxy=semantic_cache",
            f"proxy.hit_tokens_per_s={REPLAY_TOKENS_PER_S}",
        ],
        files,
    )
    rows = files[0].requests.to_pandas()
    assert (rows[R.STATUS] == R.STATUS_OK).all()
    hits = rows[rows[R.CACHE_HIT].astype(bool)]
    assert len(hits) >= 6 and len(rows) - len(hits) >= 12  # both kinds, to compare
    assert (rows[R.REASONING_TOKENS] == THINKING).all()
    assert (rows[R.ANSWER_TOKENS] == OUTPUT - THINKING).all()
    # a replay streams the thinking too, at hit_tokens_per_s: its answer is sent 80 ms after its
    # first token. A client that reads the first one late gets both in one read (answer = TTFT),
    # so the order holds for every hit and the gap for the median, with room.
    thinking_s = THINKING / REPLAY_TOKENS_PER_S
    assert (hits[R.ANSWER_S] >= hits[R.TTFT_S]).all()
    assert (hits[R.ANSWER_S] - hits[R.TTFT_S]).median() >= 0.5 * thinking_s
