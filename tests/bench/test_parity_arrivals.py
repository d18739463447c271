"""`--same-arrivals`: one trace per round, which our trace reader takes as written."""

import argparse

import pytest

from sweep.datasets.trace_file import read_trace
from sweep.tools.parity_workload import BLOCK, arrivals_trace, round_overrides


def args(**kw) -> argparse.Namespace:
    base = dict(
        rate=2.0, prompts=80, input_len=130, output_len=32, same_arrivals=True, text_prompts=False
    )
    return argparse.Namespace(**{**base, **kw})


def test_a_rounds_trace_offers_the_rate_exactly_and_shares_no_block(tmp_path):
    trace = read_trace(str(arrivals_trace(args(), tmp_path, 3)))
    assert len(trace.arrival_s) == 80
    assert trace.arrival_s[0] == 0.0
    assert trace.arrival_s[-1] == pytest.approx(79 / 2.0, abs=1e-3)  # (n - 1) gaps at 2 req/s
    assert all(b > a for a, b in zip(trace.arrival_s[:-1], trace.arrival_s[1:], strict=True))
    assert set(trace.input_len) == {130} and set(trace.output_len) == {32}
    blocks = [b for row in trace.hash_ids for b in row]
    assert len(blocks) == 80 * -(-130 // BLOCK) == len(set(blocks))  # 9 each, none shared


def test_each_round_draws_its_own_arrivals_and_both_clients_read_the_same_file(tmp_path):
    first = arrivals_trace(args(), tmp_path, 0)
    again = arrivals_trace(args(), tmp_path, 0)
    other = arrivals_trace(args(), tmp_path, 1)
    assert first == again  # written once: vLLM's client and ours replay this one file
    assert read_trace(str(first)).arrival_s != read_trace(str(other)).arrival_s
    blocks = {b for p in (first, other) for row in read_trace(str(p)).hash_ids for b in row}
    assert len(blocks) == 2 * 80 * 9  # no prefix shared across rounds either
    assert f"dataset.path={first}" in round_overrides(args(), tmp_path, 0)
    assert round_overrides(args(same_arrivals=False), tmp_path, 0) == []
    # token ids, as vLLM's client sends a trace, unless told to send text
    assert "backend.send_token_ids=true" in round_overrides(args(), tmp_path, 0)
    assert "backend.send_token_ids=true" not in round_overrides(
        args(text_prompts=True), tmp_path, 0
    )
