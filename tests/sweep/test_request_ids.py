"""Request ids are UUIDs (llama-cpp-python's server refuses any other) that say what they are."""

import uuid

from sweep.loadgen.request_ids import RequestId, new_run, parse, request_id


def test_an_id_is_a_uuid_and_reads_back():
    run = new_run()
    for idx, shard, warmup in [(0, 0, False), (123456, 2, False), (7, 0, True)]:
        rid = request_id(run, idx, shard, warmup)
        assert str(uuid.UUID(rid, version=4)) == rid  # what starlette-context's check accepts
        assert parse(rid) == RequestId(run, shard, warmup, idx)


def test_ids_of_two_runs_differ_and_foreign_ids_are_not_ours():
    assert request_id(new_run(), 1) != request_id(new_run(), 1)
    assert parse("sim-3") is None
    assert parse(str(uuid.uuid4())) is None  # a UUID, but not one the load generator made
