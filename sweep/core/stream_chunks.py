"""OpenAI-style streamed chunks: the `data:` lines of a response, and what each says of tokens.

The one reading of a streamed completions or chat response, shared by the load generator
(`sweep.loadgen.sse`) and the semantic-cache proxy (`backends.proxy.stream`). `EventLines` splits
the bytes of network reads into `data:` payloads; `parse_event` reads one payload into a `Chunk`
(its answer and reasoning text, token ids or logprobs entries, running count, finish reason, the
server's usage) or raises `EventError`; `TokenCount` decides, chunk by chunk, which carried tokens
and the running count where it is known, and keeps the server's own totals. A reasoning model's
thinking arrives as `reasoning` deltas (vLLM >= 0.19) or `reasoning_content` (older vLLM, SGLang):
both are output tokens, kept apart from the answer's (`Chunk.kind`). Each counted chunk says which
share of its tokens were reasoning (`Counted.reasoning`); once each chunk's tokens are settled,
`reasoning_split` gives a reply's reasoning and answer tokens and `first_answer` the chunk its
answer began in, alike for the load generator and the proxy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

DONE = b"[DONE]"
ANSWER, REASONING, BOTH = "answer", "reasoning", "both"  # which text a chunk carries
# Where a chat delta carries a reasoning model's thinking, by server and version.
REASONING_FIELDS = ("reasoning", "reasoning_content")
# msgspec's decoder: a fourth of `json.loads`' time per event, every event the client reads.
_DECODE = msgspec.json.Decoder().decode


class EventError(Exception):
    """A malformed or error event: the request fails with this message."""


class EventLines:
    """Splits a stream's bytes, read in pieces cut anywhere, into its `data:` payloads."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the complete lines so far (`DONE` included), comments and blanks out."""
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]


@dataclass(slots=True)
class Chunk:
    """What one OpenAI chunk says: its texts, tokens and finish, and the server's usage.

    `has_choices` is False for the usage-only final chunk (or a keep-alive). `completion_tokens`
    is the server's count of output tokens so far, where the chunk has a usage: a running count
    in a chunk with choices (vLLM's continuous usage stats), the final count in the usage-only
    chunk. `has_text` says whether the
    chunk has a text field at all, even an empty one: vLLM sends a chunk for every engine step,
    its text empty when the step's tokens decode to none yet, while a chat chunk announcing the
    role (OpenAI's first) carries no token. `token_ids` are the chunk's own, where the server
    returns them (vLLM's `return_token_ids`); `logprob_tokens` the number of its per-token
    logprobs entries, where the request asked for them (`logprob_entries`).
    """

    has_choices: bool = False
    answer: str = ""
    reasoning: str = ""
    reasoning_field: str | None = None  # the delta key the reasoning came under
    has_text: bool = False
    token_ids: tuple[int, ...] | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None  # the server's count of them, where its usage says
    logprob_tokens: int | None = None
    # Tool-call deltas: (index, id, name, arguments' piece) each, as streamed (`tool_pieces`).
    tool_calls: tuple[tuple[int, str | None, str | None, str], ...] | None = None
    cached_tokens: int | None = None  # of the prompt, the server's prefix cache had (its usage)

    @property
    def text(self) -> str:
        """All the output text the chunk carries: its reasoning, its answer, its calls' pieces."""
        if self.tool_calls:
            return self.reasoning + self.answer + "".join(p[3] for p in self.tool_calls)
        return self.reasoning + self.answer

    @property
    def kind(self) -> str:
        """`REASONING`, `ANSWER`, or `BOTH` for the chunk that ends the reasoning."""
        if self.reasoning:
            return BOTH if self.answer else REASONING
        return ANSWER


def decode_event(payload: bytes) -> dict[str, Any]:
    """One `data:` payload as a JSON object; a malformed or error event raises `EventError`."""
    try:
        event = _DECODE(payload)
    except msgspec.DecodeError:
        try:  # only to say what is wrong in the words of Python's own parser
            json.loads(payload)
        except json.JSONDecodeError as exc:
            raise EventError(f"malformed_event: {exc.msg} in {payload[:80]!r}") from None
        raise EventError(f"malformed_event: not JSON: {payload[:80]!r}") from None
    if not isinstance(event, dict):
        raise EventError(f"malformed_event: not an object: {payload[:80]!r}")
    if "error" in event:
        raise EventError(f"server_error: {error_text(event['error'])}")
    return event


def parse_event(event: dict[str, Any], api: str) -> Chunk:
    """The `Chunk` of a decoded event of a `completions` or `chat` stream."""
    # Positional fields, no intermediate dicts: this runs for every chunk the load generator reads.
    usage = event.get("usage")
    completion = prompt = thought = cached = None
    if isinstance(usage, dict):
        completion, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        details = usage.get("completion_tokens_details")
        thought = details.get("reasoning_tokens") if isinstance(details, dict) else None
        cached = cached_in(usage.get("prompt_tokens_details"))
    choices = event.get("choices")
    if not choices:
        return Chunk(
            False, "", "", None, False, None, None, completion, prompt, thought,
            cached_tokens=cached,
        )  # fmt: skip
    choice = choices[0]
    ids = choice.get("token_ids")
    ids = tuple(ids) if isinstance(ids, list) else None
    finish = choice.get("finish_reason") or None
    if api != "chat":
        text = choice.get("text")
        return Chunk(
            True, text or "", "", None, isinstance(text, str), ids, finish, completion, prompt,
            thought, logprob_tokens=logprob_entries(choice, api),
        )  # fmt: skip
    delta = choice.get("delta") or {}
    field = reasoning = None
    for name in REASONING_FIELDS:
        reasoning = delta.get(name)
        if isinstance(reasoning, str):
            field = name
            break
    content = delta.get("content")
    calls = tool_pieces(delta.get("tool_calls"))
    has_text = calls is not None or (
        "role" not in delta and (isinstance(content, str) or field is not None)
    )
    return Chunk(
        True, content or "", reasoning if field else "", field, has_text, ids, finish, completion,
        prompt, thought, logprob_tokens=logprob_entries(choice, api), tool_calls=calls,
        cached_tokens=cached,
    )  # fmt: skip


def tool_pieces(calls: object) -> tuple[tuple[int, str | None, str | None, str], ...] | None:
    """A chat delta's `tool_calls` as (index, id, name, arguments' piece) each; None: none.

    OpenAI's stream (and vLLM's, SGLang's) opens a call with its id and function name and sends
    its arguments' JSON in pieces after, each piece under the call's `index`.
    """
    if not isinstance(calls, list) or not calls:
        return None
    pieces = []
    for n, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        index = call.get("index")
        name, arguments, cid = function.get("name"), function.get("arguments"), call.get("id")
        pieces.append(
            (
                index if isinstance(index, int) else n,
                cid if isinstance(cid, str) else None,
                name if isinstance(name, str) else None,
                arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(pieces) or None


def cached_in(details: object) -> int | None:
    """The prompt's tokens the server's prefix cache held (usage's `prompt_tokens_details`)."""
    if not isinstance(details, dict):
        return None
    cached = details.get("cached_tokens")
    return cached if isinstance(cached, int) else None


def logprob_entries(choice: dict[str, Any], api: str) -> int | None:
    """How many tokens a choice lists in its per-token logprobs; None where it has none.

    A completions chunk lists them under `logprobs.tokens`, a chat chunk under `logprobs.content`,
    one entry a token (OpenAI's format, which vLLM, SGLang and llama-cpp-python follow): asked for,
    they count a stream's tokens exactly where the server sends no usage.
    """
    return entries_in(choice.get("logprobs"), api)


def entries_in(logprobs: object, api: str) -> int | None:
    """How many entries a choice's `logprobs` value lists (`logprob_entries`)."""
    if not isinstance(logprobs, dict):
        return None
    entries = logprobs.get("content" if api == "chat" else "tokens")
    return len(entries) if isinstance(entries, list) else None


def error_text(error: object) -> str:
    """The message of an OpenAI-style `error` field (an object or a string)."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


@dataclass(slots=True)
class Counted:
    """A chunk that carried tokens: the chunk, the running count where known, when it came.

    `reasoning` is the share of its tokens that were a reasoning model's thinking: 1 for a
    reasoning delta, 0 for an answer (and for any chunk of a model that does not reason), between
    for the chunk that ends the reasoning (its reasoning text's share of its characters); a chunk
    without text belongs to the part the reply was in (`TokenCount`).
    """

    chunk: Chunk
    running: int | None
    at: float | None = None
    reasoning: float = 0.0


class TokenCount:
    """Which chunks of one stream carried tokens, and the server's counts.

    A chunk's running count, where the server sends one (continuous usage), says it carried
    tokens when it grew; its token ids or logprobs entries, where returned, add to our own
    running count; else a chunk carried one token (at least: the final count settles how many)
    when it has text, or a text field (even empty), unless it is the closing chunk with no text;
    from a server that streams one token per chunk, every chunk but that closing one does, and
    our count is exact unless a chunk may have carried several (`may_carry_several`: `guessed`).
    A count after chunks without counts, in a chunk with no text, is a final count (llama.cpp's
    last chunk). `closing` is the closing chunk with an empty text field: a token only when the
    reply had no other and the server counted (`lone_closing`). A chunk with no text (a token
    that decodes to none yet) is reasoning while the reply is thinking: after reasoning text and
    before any answer text.
    """

    __slots__ = (
        "one_per_chunk", "seen", "server_tokens", "prompt_tokens", "reasoning_tokens",
        "finished", "finish_reason", "done", "closing", "guessed", "_counted", "_last_exact",
        "_thinking",
    )  # fmt: skip

    def __init__(self, one_per_chunk: bool = False) -> None:
        self.one_per_chunk = one_per_chunk
        self.seen = 0  # token-bearing chunks so far, or the running count where it is larger
        self.server_tokens: int | None = None  # the server's last count of the output
        self.prompt_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.finished = False
        self.finish_reason: str | None = None
        self.done = False  # `[DONE]` arrived
        self.closing: Counted | None = None  # the closing chunk with an empty text, if any
        self.guessed = False  # a chunk counted one of one per chunk may have carried more
        self._counted = 0
        self._last_exact: bool | None = None  # whether the last counted chunk had a count
        self._thinking = False  # reasoning text came, and no answer text since

    def add(self, chunk: Chunk, at: float | None = None) -> Counted | None:
        """The chunk, read at `at`, with its running count if it carried tokens, else None."""
        total = chunk.completion_tokens
        if total is not None:
            self.server_tokens = total
            self.prompt_tokens = chunk.prompt_tokens
            self.reasoning_tokens = chunk.reasoning_tokens
        if not chunk.has_choices:
            return None  # the final usage-only chunk, or a keep-alive
        if chunk.finish_reason:
            self.finished = True
            self.finish_reason = chunk.finish_reason
        text = chunk.text
        share = self._share(chunk)
        if total is None and chunk.token_ids is not None:
            total = self.seen + len(chunk.token_ids)  # our running count, from the server's ids
        elif total is None and chunk.logprob_tokens is not None:
            total = self.seen + chunk.logprob_tokens  # or from its logprobs, one entry a token
        elif total is None and self.one_per_chunk:
            if not chunk.has_text or (not text and self.finished):
                return None  # a chat chunk with a role only, or the closing one: no token
            self.seen += 1
            self.guessed = self.guessed or may_carry_several(text)
            return self._count(Counted(chunk, self.seen, at, share))  # our count (short if guessed)
        if total is not None:
            if total <= self.seen:
                return None  # the running count did not grow: no token here, whatever the text
            self.seen = total
            if not text and self._last_exact is False:
                return None  # a count after text without counts is a final count
            return self._count(Counted(chunk, total, at, share))
        if text or (not self.finished and chunk.has_text):
            self.seen += 1  # an empty text is a token that decodes to none (vLLM: a step)
            return self._count(Counted(chunk, None, at, share))
        if self.finished and chunk.has_text:
            self.closing = Counted(chunk, None, at, share)
        return None  # role-only, or a closing chunk with no text

    def _share(self, chunk: Chunk) -> float:
        """The share of the chunk's tokens that were reasoning; follows the reply's part."""
        thought, answer = len(chunk.reasoning), len(chunk.answer)
        if thought:
            self._thinking = not answer
            return 1.0 if not answer else thought / (thought + answer)
        if answer:
            self._thinking = False
            return 0.0
        return 1.0 if self._thinking else 0.0

    def lone_closing(self) -> Counted | None:
        """The closing chunk as the reply's one token, when nothing else was and usage says so."""
        if not self._counted and self.closing is not None and self.server_tokens:
            return self._count(self.closing)
        return None

    def _count(self, counted: Counted) -> Counted:
        self._counted += 1
        self._last_exact = counted.running is not None
        return counted


def reasoning_part(tokens: int, share: float) -> int:
    """How many of a chunk's `tokens` were reasoning, its `Counted.reasoning` share of them.

    The chunk that ends the reasoning carries both parts: each gets one token at least, and a
    lone token goes to the answer, which it began.
    """
    if share <= 0.0 or tokens <= 0:
        return 0
    if share >= 1.0:
        return tokens
    return min(max(round(tokens * share), 1), tokens - 1)


def reasoning_split(
    tokens: Sequence[int], shares: Sequence[float] | None, server_reasoning: int | None
) -> tuple[int, int]:
    """A reply's (reasoning, answer) output tokens, from each chunk's tokens and reasoning share.

    The server's own count of reasoning tokens (its usage's `reasoning_tokens`) where it sent
    one, as the output's length is the server's count; else the chunks' shares of their tokens.
    The two add up to the output's tokens. `shares` None: no chunk carried reasoning.
    """
    total = sum(tokens)
    if server_reasoning is not None:
        thought = min(max(server_reasoning, 0), total)
    elif shares is None:
        thought = 0
    else:
        thought = sum(reasoning_part(k, s) for k, s in zip(tokens, shares, strict=True))
    return thought, total - thought


def first_answer(tokens: Sequence[int], shares: Sequence[float] | None) -> int | None:
    """The index of the chunk the answer began in (its first token-bearing one not all reasoning).

    None when every token was reasoning (the output cap came first) or none came.
    """
    for index, k in enumerate(tokens):
        if k > 0 and (shares is None or reasoning_part(k, shares[index]) < k):
            return index
    return None


def may_carry_several(text: str) -> bool:
    """Whether a chunk of a one-token-per-chunk stream may have carried several tokens.

    llama-cpp-python holds back a token that does not decode alone (it ends inside a UTF-8
    character) and sends it in one chunk with the tokens that finish the character. Such a
    token has a byte above 0x7f, which the chunk's text keeps: a chunk whose text is ASCII (or
    empty) carried one token; one with another character, one or more.
    """
    return not text.isascii()
