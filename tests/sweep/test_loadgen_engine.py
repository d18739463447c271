"""The in-process workload runner on the real HF backend: batching, warm-up, discarded batch."""

import pytest

from backends.base import GenRequest
from backends.hf import HFBackend, HFBackendConfig
from backends.models.tiny import ensure_tiny_model
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.loadgen.engine import run_engine_workload


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
    assert max(t.sent for t in trackers) - trackers[0].sent < 0.3
    assert all(sum(t.chunk_tokens) == 4 for t in trackers)  # the running one finished


def test_stages_and_ramps_are_refused_before_any_request(backend):
    for shape in (
        {"request_rate": 5.0, "ramp": "linear", "ramp_s": 1.0},
        {"stages": [{"request_rate": 5.0, "duration_s": 1.0}]},
    ):
        with pytest.raises(ConfigError, match="in-process engine"):
            run_engine_workload(backend, make(2), [], WorkloadConfig(name="open_loop", **shape))
