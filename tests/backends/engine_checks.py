"""Checks every in-process engine must pass on the tiny model: exact counts, real streaming."""

from __future__ import annotations

from transformers import AutoTokenizer

from backends.base import GenRequest
from sweep.loadgen.clock import now_s

PROMPTS = ("The old farmer carried a heavy box", "Hi", "Why has the small dog opened the gate?")


def tiny_requests(model_dir, max_tokens=(5, 9, 1), ignore_eos=True):
    """Real prompts of different lengths, tokenized by the model's own tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [
        GenRequest(i, text, tuple(tokenizer(text).input_ids), n, ignore_eos)
        for i, (text, n) in enumerate(zip(PROMPTS, max_tokens, strict=True))
    ]


def run_batch(backend, requests):
    """Submit the batch; returns the results, the submit time and (idx, n, time) events."""
    events = []
    sent = now_s()
    results = backend.generate(requests, lambda idx, n: events.append((idx, n, now_s())))
    return results, sent, events


def assert_exact_streaming(results, sent, events, requests):
    """Counts match exactly, one token per event, first token after submit, times increase."""
    assert [(r.idx, r.output_tokens) for r in results] == [(q.idx, q.max_tokens) for q in requests]
    for request in requests:
        mine = [(n, t) for idx, n, t in events if idx == request.idx]
        assert [n for n, _ in mine] == [1] * request.max_tokens
        times = [t for _, t in mine]
        assert times[0] > sent  # a real TTFT: the first token exists only after submission
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
