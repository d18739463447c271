"""How many tokens each streamed chunk carried, whatever the server's chunking.

Servers stream several tokens per chunk (OpenAI's API, TGI's OpenAI route, gateways, vLLM's stream
intervals and speculative decoding) and most say how many only once, in the final `usage`. A
chunk's count comes from the most exact source that covers it:

1. a running count streamed with the chunk (vLLM's `continuous_usage_stats`, an engine's token
   callback, TGI's one token per event, the chunk's token ids or logprobs entries, or our own
   count of a server that streams one token per chunk): exact;
2. the server's final count, for the chunks since the last running count, split between them in
   proportion to each chunk's re-tokenized text when there is a local tokenizer, evenly otherwise;
3. for chunks no server count covers (no usage at all, or a request cut short), each chunk's
   re-tokenized text, or one token per chunk without a tokenizer.

So a request's output length is the server's own count whenever the server gave one; only its
split between chunks (which TTFT, TPOT and ITL need) is estimated. Where no count covers its
last chunks, or a chunk of a one-token-per-chunk stream may have carried more (llama-cpp-python's,
`stream_chunks.may_carry_several`), the length itself is an estimate, and `estimated` says so
(`records.OUTPUT_TOKENS_ESTIMATED`). Re-tokenizing runs after the load (`attribute`), on the
texts each tracker kept, so streaming only appends, and the tokenizer is asked for only when
some request needs it. `RequestTracker.chunk_tokens` hands the counts on
to the request's record.

Without a local tokenizer (`backend.tokenizer=none`) every count is the server's: the tokenizer
callable returns None, final counts are spread evenly, and `require_server_counts` fails each
completed request the server sent no `usage` for, and the trial when it sent none at all.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sweep.core.errors import BackendError

log = logging.getLogger(__name__)

BATCH_REQUESTS = 512  # requests' texts per tokenizer call: bounds the memory of one call
NO_USAGE = (
    "no_usage: the server sent no usage (prompt_tokens, completion_tokens), and "
    "backend.tokenizer=none counts tokens by it"
)
NO_USAGE_AT_ALL = (
    "the endpoint sent no `usage` with any stream: backend.tokenizer=none takes every token count "
    "from it; use backend.tokenizer=local with model= naming the served model's tokenizer"
)


def chunk_counts(
    cumulative: Sequence[int | None], final: int | None, weights: Sequence[int]
) -> list[int]:
    """Tokens carried by each chunk.

    Args:
        cumulative: per chunk, the output tokens the server had counted once it sent the chunk,
            or None where it said nothing.
        final: the server's count for the whole request (its final `usage`), or None.
        weights: per chunk, its share of an estimated count: the tokens its text re-tokenizes
            to, or 1 for every chunk without a tokenizer.

    Returns:
        One count per chunk; a chunk gets 0 only when a server count is smaller than the number
        of chunks it covers.
    """
    counts: list[int] = []
    before, start = 0, 0  # the server's count before chunk `start`
    for end, total in _anchors(cumulative, final):
        counts += spread(total - before, weights[start : end + 1])
        before, start = max(before, total), end + 1
    counts += [max(1, w) for w in weights[start:]]
    return counts


def needs_weights(cumulative: Sequence[int | None], final: int | None) -> bool:
    """Whether some chunk's count must be estimated from its text.

    Not when every chunk is counted by the server, nor when a count spread over several chunks
    equals their number (each then carried one token, whatever its text).
    """
    before, start = 0, 0
    for end, total in _anchors(cumulative, final):
        if end > start and total - before != end - start + 1:
            return True
        before, start = max(before, total), end + 1
    return start < len(cumulative)


def estimated(cumulative: Sequence[int | None], final: int | None, guessed: bool) -> bool:
    """Whether a request's output count is an estimate rather than the server's.

    Args:
        cumulative: per chunk, the running count it came with, or None (as `chunk_counts`).
        final: the server's count for the whole request, or None.
        guessed: a chunk's count of one may be short (`stream_chunks.TokenCount.guessed`).

    Returns:
        False where the server's final count, or a running count at the last chunk, settles the
        length (or no chunk came); True where the last chunks' tokens were guessed.
    """
    if final is not None or not cumulative:
        return False
    return guessed or cumulative[-1] is None


def spread(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` tokens over chunks in proportion to `weights`, in whole tokens.

    Rounding the running sum (not each share) keeps the split exact when the weights already add
    up to `total`. Every chunk carried text, so each gets at least one token when `total` allows,
    and the first one does whenever `total` > 0: it is the chunk the first token came in.
    """
    total = max(total, 0)
    size = len(weights)
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1] * size, size
    counts, before, running = [], 0, 0
    for w in weights:
        running += w
        upto = (2 * total * running + whole) // (2 * whole)  # round half up, in integers
        counts.append(upto - before)
        before = upto
    for i in range(size if total >= size else min(total, 1)):
        if counts[i] == 0:
            largest = max(range(size), key=counts.__getitem__)
            counts[largest] -= 1
            counts[i] = 1
    return counts


def attribute(trackers: Iterable[Any], tokenizer: Callable[[], Any] | None) -> None:
    """Give each tracker that needs them its chunks' re-tokenized lengths, as weights.

    Args:
        trackers: `RequestTracker`s after the load.
        tokenizer: returns the model's tokenizer (loaded lazily by the caller), or None when
            there is none: counts are then spread evenly. Called only if some tracker needs it;
            it may itself return None (no local tokenizer).
    """
    pending = [t for t in trackers if needs_weights(t.chunk_usage, t.server_tokens)]
    # A failed request's length is a guess either way: alone, it is not worth loading a tokenizer.
    if tokenizer is None or all(t.error is not None for t in pending):
        return
    try:
        loaded = tokenizer()
        if loaded is None:  # no local tokenizer: the server's counts, spread evenly
            return
        weights = text_weights(loaded, [t.chunk_texts for t in pending])
    except Exception as exc:  # the counts stay the server's; only their split falls back to even
        log.warning("cannot re-tokenize streamed text (%s); tokens spread evenly over chunks", exc)
        return
    for t, w in zip(pending, weights, strict=True):
        t.set_weights(w)


def require_server_counts(trackers: Iterable[Any]) -> None:
    """With no local tokenizer, fail each completed request whose counts the server did not send.

    Its input and output lengths would be guesses (a chunk is not a token), so it is not counted
    as a success. When no completed request had them, the endpoint sends no `usage` at all: that
    is a setting to change, not a flaky request, so the trial fails with one line saying so.

    Raises:
        BackendError: no completed request carried the server's counts.
    """
    # A cancelled request never gets the final usage: it is no completed request.
    done = [t for t in trackers if t.error is None and t.cancelled is None and t.chunk_times]
    missing = [t for t in done if t.server_tokens is None or t.server_input_tokens is None]
    for t in missing:
        t.fail(NO_USAGE, at=t.end)
    if missing and len(missing) == len(done):
        raise BackendError(NO_USAGE_AT_ALL)


def text_weights(tokenizer: Any, requests: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per request, the tokens of its streamed text that end in each of its chunks.

    Each request's text is tokenized whole, once, and every token is credited to the chunk its
    last character came in. Where a server splits its text at its own token boundaries, as
    servers do, this is what tokenizing each chunk alone gives, without the artifacts of cutting
    the text up (a SentencePiece tokenizer's prefix space on every chunk, a word split between
    chunks counted twice), and cheaper: one call per request rather than one text per chunk
    (3 us of CPU per token against 7 to 24 us, `python -m scripts.bench.token_attribution`).
    """
    weights: list[list[int]] = []
    for first in range(0, len(requests), BATCH_REQUESTS):
        batch = requests[first : first + BATCH_REQUESTS]
        texts = ["".join(chunks) for chunks in batch]
        try:
            spans = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a slow (Python) tokenizer has no offsets: chunk by chunk
            weights += [chunk_lengths(tokenizer, chunks) for chunks in batch]
            continue
        for chunks, offsets in zip(batch, spans["offset_mapping"], strict=True):
            ends, end = [], 0
            for text in chunks:
                end += len(text)
                ends.append(end)
            counts = [0] * len(chunks)
            for _, stop in offsets:
                counts[min(bisect.bisect_left(ends, stop), len(chunks) - 1)] += 1
            weights.append(counts)
    return weights


def chunk_lengths(tokenizer: Any, chunks: Sequence[str]) -> list[int]:
    """Tokens in each chunk's text on its own (for a tokenizer without offsets)."""
    ids = tokenizer(list(chunks), add_special_tokens=False)["input_ids"] if chunks else []
    return [len(i) for i in ids]


def _anchors(cumulative: Sequence[int | None], final: int | None) -> list[tuple[int, int]]:
    """(chunk index, server count after it) for each chunk a server count ends at."""
    anchors = [(i, c) for i, c in enumerate(cumulative) if c is not None]
    last = len(cumulative) - 1
    if final is not None and last >= 0 and cumulative[last] is None:
        anchors.append((last, final))  # the final usage covers the chunks since the last count
    return anchors
