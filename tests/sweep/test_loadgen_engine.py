"""The in-process workload runner on the real HF backend: batching, warm-up, discarded batch.

The repeat rule (`workload.repeat_to_minimum`) is also run on an engine with a clock of its own,
so that "short on a fast machine" does not depend on this machine's speed.
"""

import pyarrow as pa
import pytest

from backends.base import GenRequest, GenResult
from backends.hf import HFBackend, HFBackendConfig
from backends.models.tiny import ensure_tiny_model
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.core.summary import summarize
from sweep.core.trust import too_short, with_window
from sweep.loadgen import engine as engine_module
from sweep.loadgen import recorder as recorder_module
from sweep.loadgen.engine import run_engine_workload
from sweep.loadgen.http import Endpoint, run_endpoint_workload


@pytest.fixture(scope="module")
def backend():
    with HFBackend(HFBackendConfig(mode="static_batch"), str(ensure_tiny_model())) as started:
        yield started


def make(n, max_tokens=4):
    return [GenRequest(i, "p", (1, 10, 11, 12), max_tokens) for i in range(n)]


def test_throughput_bound_submits_batches_together(backend):
    workload = WorkloadConfig(name="throughput_bound", num_requests=6, batch_size=3)
    trackers = run_engine_workload(backend, make(6), make(1), workload)
    assert [t.batch_idx for t in trackers] == [0, 0, 0, 1, 1, 1]
    assert all(sum(t.chunk_tokens) == 4 for t in trackers)
    # requests of one batch share their send time; the next batch is sent after the first ends
    assert len({t.sent for t in trackers[:3]}) == 1
    assert trackers[3].sent >= max(t.end for t in trackers[:3])


def test_latency_bound_sends_one_at_a_time(backend):
    workload = WorkloadConfig(name="latency_bound", num_requests=3, batch_size=8)
    trackers = run_engine_workload(backend, make(3), [], workload)
    assert [t.batch_idx for t in trackers] == [0, 1, 2]
    assert trackers[1].sent >= trackers[0].end


def test_offline_batch_discards_the_first_batch(backend):
    workload = WorkloadConfig(
        name="offline_batch",
        num_requests=8,
        batch_size=4,
        warmup_requests=0,
        discard_first_batch=True,
    )
    trackers = run_engine_workload(backend, make(8), [], workload)
    assert [t.idx for t in trackers] == [4, 5, 6, 7]
    assert {t.batch_idx for t in trackers} == {1}
    records = [t.record("trial", trackers[0].sent) for t in trackers]
    assert all(r["status"] == "ok" and r["output_tokens"] == 4 for r in records)
    assert all(len(r["itl_s"]) == 3 for r in records)


def test_duration_stops_starting_batches(backend):
    workload = WorkloadConfig(
        name="latency_bound", num_requests=400, duration_s=0.3, warmup_requests=0
    )
    trackers = run_engine_workload(backend, make(400), [], workload)
    assert 0 < len(trackers) < 400  # num_requests is only the upper bound
    # No batch starts past the duration: the last one's stamp follows the check by a few lines
    # of Python (0.3006 s was seen on a loaded machine), never by a whole batch.
    assert max(t.sent for t in trackers) - trackers[0].sent < 0.3 + 0.05
    assert all(sum(t.chunk_tokens) == 4 for t in trackers)  # the running one finished


def test_stages_and_ramps_are_refused_before_any_request(backend):
    for shape in (
        {"request_rate": 5.0, "ramp": "linear", "ramp_s": 1.0},
        {"stages": [{"request_rate": 5.0, "duration_s": 1.0}]},
    ):
        with pytest.raises(ConfigError, match="in-process engine"):
            run_engine_workload(backend, make(2), [], WorkloadConfig(name="open_loop", **shape))


class FastEngine:
    """An engine on a clock of its own: every batch takes `batch_s`, one token a step.

    No real engine is this exact; it makes the repeat rule deterministic whatever this machine's
    speed. The clock is the one the runner and the recorder read (`now_s`), patched to it.
    """

    interface = "engine"

    def __init__(self, batch_s: float):
        self.t, self.batch_s = 100.0, batch_s

    def now_s(self) -> float:
        return self.t

    def generate(self, requests, on_token):
        steps = max(r.max_tokens for r in requests)
        for _ in range(steps):
            self.t += self.batch_s / steps
            for r in requests:
                on_token(r.idx, 1)
        return [GenResult(r.idx, r.max_tokens) for r in requests]


@pytest.fixture
def fast(monkeypatch):
    engine = FastEngine(batch_s=0.05)
    monkeypatch.setattr(engine_module, "now_s", engine.now_s)
    monkeypatch.setattr(recorder_module, "now_s", engine.now_s)
    return engine


def quickstart_like(**extra):
    return WorkloadConfig(
        name="throughput_bound", num_requests=32, batch_size=8, output_len=4, **extra
    )


def summary_of(trackers, workload):
    rows = [t.record("trial", 0.0) for t in trackers]
    table = with_window(pa.Table.from_pylist(rows, schema=R.REQUESTS_SCHEMA), workload)
    return summarize(table.to_pandas(), num_gpus=0, price_per_hour=0.0)


def test_a_trial_short_on_a_fast_engine_repeats_its_requests_until_long_enough(fast):
    # One pass is 4 batches of 0.05 s: 0.2 s, under the 0.5 s minimum; three passes are 0.6 s.
    short = quickstart_like(min_duration_s=0.5)
    once = run_engine_workload(fast, make(32), [], short)
    assert len(once) == 32 and too_short(summary_of(once, short), short)

    workload = quickstart_like(min_duration_s=0.5, repeat_to_minimum=True)
    trackers = run_engine_workload(fast, make(32), [], workload)
    assert len(trackers) == 96  # whole passes: every prompt sent equally often
    assert [t.idx for t in trackers] == list(range(96))  # each repeat a request of its own
    assert [t.batch_idx for t in trackers] == [i // 8 for i in range(96)]
    summary = summary_of(trackers, workload)
    assert summary[R.COMPLETED_REQUESTS] == 96
    assert summary[R.DURATION_S] == pytest.approx(0.6)
    # throughput over what was measured: 96 requests of 4 tokens in 0.6 s
    assert summary[R.OUTPUT_THROUGHPUT] == pytest.approx(96 * 4 / 0.6)
    assert not too_short(summary, workload)


def test_repeats_stop_at_the_minimum_request_count(fast):
    workload = quickstart_like(min_requests=40, repeat_to_minimum=True)
    assert len(run_engine_workload(fast, make(32), [], workload)) == 64
    enough = quickstart_like(min_requests=32, min_duration_s=0.2, repeat_to_minimum=True)
    assert len(run_engine_workload(fast, make(32), [], enough)) == 32  # long enough at once


def test_repeats_on_the_real_engine_are_distinct_complete_requests(backend):
    workload = WorkloadConfig(
        name="throughput_bound", num_requests=4, batch_size=2, min_requests=10,
        repeat_to_minimum=True,
    )  # fmt: skip
    trackers = run_engine_workload(backend, make(4), make(1), workload)
    assert [t.idx for t in trackers] == list(range(12))  # 3 passes of 4 reach 10 requests
    assert all(sum(t.chunk_tokens) == 4 for t in trackers)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"repeat_to_minimum": True}, "set one of them above 0"),
        ({"repeat_to_minimum": True, "min_requests": 8, "duration_s": 1.0}, "set one of them"),
    ],
)
def test_repeat_settings_that_cannot_work_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as caught:
        WorkloadConfig(name="throughput_bound", **settings)
    assert "\n" not in str(caught.value)


def test_a_server_refuses_repeats_before_any_request():
    endpoint = Endpoint("http://127.0.0.1:9", "m")  # nothing listens: no request may go
    workload = WorkloadConfig(name="closed_loop", concurrency=2, min_requests=8,
                              repeat_to_minimum=True)  # fmt: skip
    with pytest.raises(ConfigError, match="in-process engine's batches"):
        run_endpoint_workload(endpoint, make(2), [], workload)
