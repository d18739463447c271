"""What attributing tokens to streamed chunks costs the client, per output token.

Streams are made from real text: the tiny model's corpus, tokenized, cut into requests of
OUTPUT_LEN tokens and chunks of 1, 3 or a cycle of 1,3,2,5 tokens, decoded back as a server streams
them. Three ways to re-tokenize the chunks are timed: each request's text once with offsets, as
`sweep.loadgen.attribution.text_weights` does after the load; every chunk alone in batched calls;
and one call per chunk, as a client re-tokenizing during the stream would. Then the whole
attribution as a trial runs it (`attribute`, then `RequestTracker.record`) with the server's final
count only, and, as the baseline it replaces, `record` alone, which splits that count evenly.
Reported: CPU microseconds per output token (process time, so a tokenizer's worker threads count)
and wall time.

    .venv/bin/python -m scripts.bench.token_attribution [--tokens 100000]

Only the tiny model's tokenizer (512 tokens) is at hand here, with no model hub; a BPE trained on
the same corpus stops at some 650 tokens, so a large vocabulary's cost is not measured.
"""

from __future__ import annotations

import argparse
import itertools
import time

from transformers import AutoTokenizer

from backends.models.tiny import corpus, ensure_tiny_model
from sweep.loadgen.attribution import attribute, chunk_lengths, text_weights
from sweep.loadgen.recorder import RequestTracker

PATTERNS = {"1": [1], "3": [3], "1,3,2,5": [1, 3, 2, 5]}
OUTPUT_LEN = 256  # tokens per request


def chunk_texts(tok, ids: list[int], sizes: list[int]) -> list[str]:
    """`ids` decoded chunk by chunk, chunk sizes cycling through `sizes`."""
    texts, at = [], 0
    for size in itertools.cycle(sizes):
        if at >= len(ids):
            return texts
        texts.append(tok.decode(ids[at : at + size]))
        at += size


def timed(fn, *args) -> tuple[float, float]:
    """CPU and wall seconds of `fn(*args)`."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def trackers_of(requests: list[list[str]]) -> list[RequestTracker]:
    """Finished trackers of these streams, with the server's final count only."""
    trackers = []
    for idx, chunks in enumerate(requests):
        t = RequestTracker(idx, None, 8, OUTPUT_LEN)
        t.mark_sent(0.0)
        for j, text in enumerate(chunks):
            t.add_chunk(text, None, 0.001 * (j + 1))
        t.finish(server_tokens=OUTPUT_LEN)
        trackers.append(t)
    return trackers


def one_call_per_chunk(tok, texts: list[str]) -> list[int]:
    """Each chunk tokenized alone, as a client re-tokenizing during the stream would."""
    return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]


def records(trackers: list[RequestTracker], tokenizer) -> list[dict]:
    """What a trial does with its trackers after the load."""
    attribute(trackers, tokenizer)
    return [t.record("trial", 0.0) for t in trackers]


def bench(name: str, tok, tokens: int) -> None:
    """Print the costs of every way, for every chunking, over `tokens` output tokens."""
    text = " ".join(corpus(5000))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    tok(["warm up"], add_special_tokens=False)
    for label, sizes in PATTERNS.items():
        requests = [
            chunk_texts(tok, ids[first : first + OUTPUT_LEN], sizes)
            for first in range(0, len(ids), OUTPUT_LEN)
        ]
        texts = [text for chunks in requests for text in chunks]
        whole_text = timed(text_weights, tok, requests)
        per_chunk = timed(chunk_lengths, tok, texts)
        one_by_one = timed(one_call_per_chunk, tok, texts)
        even = timed(records, trackers_of(requests), None)
        attributed = timed(records, trackers_of(requests), lambda: tok)
        for what, (cpu, wall) in (
            ("request text, offsets", whole_text),
            ("each chunk, batched", per_chunk),
            ("one call per chunk", one_by_one),
            ("record, split evenly", even),
            ("attribute + record", attributed),
        ):
            print(
                f"{name:>10} chunks of {label:>7}  {what:<22} "
                f"{cpu / tokens * 1e6:6.2f} us CPU/token  {wall / tokens * 1e6:6.2f} us wall/token"
            )


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.token_attribution`)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=100_000)
    return p


def run(a: argparse.Namespace) -> None:
    """Time the tiny model's tokenizer."""
    bench("tiny-512", AutoTokenizer.from_pretrained(str(ensure_tiny_model())), a.tokens)


if __name__ == "__main__":
    run(parser().parse_args())
