"""Multi-turn conversations offered to a server: each turn sends its session's whole history.

A `multi_turn` trial's requests are its sessions' turns, in order: request `i` is turn
`i % num_turns + 1` of session `i // num_turns`, so `workload.num_requests` counts turns and must
hold whole sessions. Turn k sends the session's k - 1 earlier user messages, the replies the
server actually streamed back to them (their text as received), and the new user message: for
`api=completions` as one text, each message followed by `SEPARATOR`; for `api=chat` as a messages
list. Its input length is what is sent, counted with the model's tokenizer the way the server
counts it (the completions text with special tokens; chat through the model's chat template,
without adding special tokens again); without a local tokenizer, the server's `usage`.

How sessions meet the load: in the closed-loop modes (`closed_loop`, `throughput_bound`,
`latency_bound`) each of the `streams` streams is one user. It runs one session from its first
turn to its last (thinking between them, so fewer requests are in flight while users think),
then takes the next session not yet started. In `open_loop`, `request_rate` is the rate at which
sessions start, on the seeded arrival schedule (`sweep.loadgen.arrivals`); each later turn is due
its think time after the reply before it, and a `concurrency` cap bounds the requests in flight.
A turn is due when it becomes ready (its send lag, `sweep.loadgen.saturation`, includes the time
spent counting its history). A capacity probe's early stop does not apply: sessions run whole.

Before sending a turn, its exact length is checked against the context (`on_overflow`): `refuse`
fails the turn with a reason naming its session and turn; `truncate` drops the session's oldest
turns (a user message with its reply) until it fits, recording how many (`dropped_turns`).
Without a local tokenizer nothing is counted before sending: an overflow is the server's error. A
turn that failed, or was refused, ends its session: its later turns are recorded as failed, not
sent, since their history would not be the server's.

Tool calling (`dataset.tools`, chat only): every turn offers the tools (`sweep.core.tools`). A
reply that calls some goes into the history as the assistant's message with its `tool_calls`, and
the session's next turn answers them, as an agent's loop does: it waits the tool's latency (drawn
like think times) instead of a think time, then sends one `tool` message per call (the turn's
drawn message as each result) instead of a user message. A reply without calls is answered by the
next user message. The calls are checked against the tools' schemas after the load, as structured
answers are, so the client spends no time on it while it measures.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backends.base import GenRequest
from sweep.core import records as R
from sweep.core.errors import ConfigError, DatasetError
from sweep.core.tools import ToolCall, ToolSet, assemble, check_tool_choice, load_tools
from sweep.datasets.context import context_of
from sweep.datasets.multi_turn import overflow, think_times, tool_latencies
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.clock import now_s
from sweep.loadgen.http import (
    Endpoint,
    chat_messages,
    endpoint_of,
    open_client,
    refuse_repeats,
    stream_one,
)
from sweep.loadgen.recorder import RequestTracker, Trackers
from sweep.loadgen.request_ids import new_run, request_id
from sweep.loadgen.saturation import CpuMeter
from sweep.loadgen.wakeup import sleep_until

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"  # after every message of a completions history
USER, ASSISTANT, TOOL = "user", "assistant", "tool"

Send = Callable[[GenRequest, RequestTracker, float], Any]


@dataclass(frozen=True)
class Session:
    """One conversation: its turns' user messages (`prompt`) and output caps, and think times."""

    idx: int
    turns: tuple[GenRequest, ...]
    think_s: tuple[float, ...]  # before each turn; 0 before the first
    tool_s: tuple[float, ...] = ()  # before each turn that answers tool calls, instead


class TurnTracker(RequestTracker):
    """A turn's tracker: its session and turn, the reply's text as received, what it sent."""

    __slots__ = (
        "session", "turn", "dropped_turns", "reply", "request", "offered", "answers", "tool_wait",
        "call_errors",
    )  # fmt: skip

    def __init__(self, user: GenRequest, session: int, turn: int, offered: bool = False) -> None:
        super().__init__(user.idx, None, 0, user.max_tokens)
        self.session, self.turn = session, turn
        self.dropped_turns = 0
        self.reply: list[str] = []
        self.request: GenRequest | None = None  # as sent, history included
        self.offered = offered  # its request offered tools
        self.answers = False  # it sent tool results, not a user message
        self.tool_wait: float | None = None  # the tool latency waited before it
        self.call_errors: list[str | None] | None = None  # each call's (`check_calls`)

    def add_chunk(
        self,
        text: str,
        usage: int | None = None,
        at: float | None = None,
        reasoning: float = 0.0,
        answer: str | None = None,
    ) -> None:
        """Keep the chunk's answer for the history (the base drops text it will not re-count).

        A reasoning model's thinking is counted as output like any token, but it is not part of
        the reply the user sees, nor of what a client sends back as the assistant's message.
        """
        self.reply.append(text if answer is None else answer)
        super().add_chunk(text, usage, at, reasoning, answer)

    @property
    def reply_text(self) -> str:
        """The reply's answer as the server streamed it, without a reasoning model's thinking."""
        return "".join(self.reply)

    @property
    def completed(self) -> bool:
        """Whether it ended well with a reply the next turn can carry."""
        return self.error is None and self.sent is not None and bool(self.chunk_times)

    @property
    def calls(self) -> tuple[ToolCall, ...]:
        """The tool calls its reply made, as streamed."""
        return assemble(self.tool_pieces)

    def message(self) -> tuple:
        """Its reply as the assistant's message of the history, with its calls if it made any."""
        calls = self.calls
        if not calls:
            return (ASSISTANT, self.reply_text)
        return (ASSISTANT, self.reply_text, {"tool_calls": [c.message() for c in calls]})

    def record(self, trial_id: str, t0: float) -> dict[str, object]:
        """The base record plus the session columns (and the tool columns, where offered)."""
        row = {
            **super().record(trial_id, t0),
            R.SESSION: self.session,
            R.TURN: self.turn,
            R.DROPPED_TURNS: self.dropped_turns,
        }
        if not self.offered:
            return row
        calls = self.calls
        ok = row[R.STATUS] == R.STATUS_OK
        errors = [e for e in self.call_errors or () if e is not None]
        checked = ok and bool(calls) and self.call_errors is not None
        row.update({
            R.TOOL_CALLS: len(calls) if ok else None,
            R.TOOL_NAME: calls[0].name if ok and calls else None,
            R.TOOL_ARGS_VALID: not errors if checked else None,
            R.TOOL_ARGS_ERROR: errors[0] if checked and errors else None,
            R.TOOL_CALL_S: self.end - self.sent if ok and calls else None,
            R.TOOL_RESULT: self.answers,
            R.TOOL_WAIT_S: self.tool_wait,
        })  # fmt: skip
        return row


class Overflow(Exception):
    """A turn does not fit the context (the message names its session and turn)."""


class History:
    """Renders a turn's history as the endpoint takes it and counts its tokens as the server does.

    `tokenizer` None: nothing is counted (the server's usage is recorded) and nothing checked.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        tokenizer: Any,
        context: int | None,
        on_overflow: str,
        tools: ToolSet | None = None,
    ) -> None:
        self.chat = endpoint.api == "chat"
        self.tools = list(tools.tools) if tools is not None else None
        self.send_ids = endpoint.send_token_ids and not self.chat
        self.tokenizer, self.context, self.on_overflow = tokenizer, context, on_overflow
        if self.chat and tokenizer is not None and not tokenizer.chat_template:
            raise DatasetError(
                "backend.api=chat but the model's tokenizer has no chat template to count a "
                "conversation with; use api=completions or a model whose tokenizer has one"
            )

    def request(
        self,
        session: int,
        turn: int,
        earlier: list[tuple],
        user: GenRequest,
        new: list[tuple] | None = None,
    ) -> tuple[GenRequest, int, int]:
        """Turn `turn`'s request, its input tokens (0: uncounted) and the turns it dropped.

        `new`: the messages the turn adds to `earlier` (None: the user's message). Truncating
        drops the oldest user message with all it led to (replies, tool calls, tool results).

        Raises:
            Overflow: it does not fit the context and may not be (further) truncated.
        """
        messages = [*earlier, *(new or [(USER, user.prompt)])]
        dropped = 0
        while True:
            ids = self.ids(messages)
            if ids is None or self.context is None:
                break
            if len(ids) + user.max_tokens <= self.context:
                break
            cut = next((i for i, m in enumerate(messages) if i and m[0] == USER), None)
            if self.on_overflow == "refuse" or cut is None:
                refused = self.on_overflow == "refuse"
                rule = "dataset.on_overflow=refuse" if refused else "even without its history"
                raise Overflow(
                    f"context_overflow: session {session} turn {turn} needs {len(ids)} input + "
                    f"{user.max_tokens} output tokens > the context {self.context} ({rule})"
                )
            messages, dropped = messages[cut:], dropped + 1  # the oldest user message, its turn
        text = "" if self.chat else self.text(messages)
        request = replace(
            user,
            prompt=text,
            prompt_token_ids=tuple(ids) if self.send_ids and ids is not None else (),
            messages=tuple(messages) if self.chat else (),
        )
        return request, 0 if ids is None else len(ids), dropped

    def ids(self, messages: list[tuple]) -> list[int] | None:
        """The token ids the server will see for `messages`; None without a tokenizer."""
        if self.tokenizer is None:
            return None
        if not self.chat:
            return list(self.tokenizer(self.text(messages)).input_ids)
        rendered = self.tokenizer.apply_chat_template(
            chat_messages(messages),
            tools=self.tools,  # the template renders them where it shows tools to the model
            add_generation_prompt=True,
            tokenize=False,
        )
        return list(self.tokenizer(rendered, add_special_tokens=False).input_ids)

    @staticmethod
    def text(messages: list[tuple]) -> str:
        """A completions prompt: every message, each followed by the separator."""
        return "".join(m[1] + SEPARATOR for m in messages)


def session_runner(config: Any, tokenizer: Any, model_path: str | None) -> Callable[..., Trackers]:
    """The trial's runner for a `multi_turn` dataset (the signature of `trial.RUNNERS`' ones)."""
    context = context_of(config, model_path)

    def run(
        backend: Any,
        requests: Sequence[GenRequest],
        warmup: Sequence[GenRequest],
        workload: Any,
        stop_ratio: float | None = None,  # sessions run whole: no early stop
    ) -> Trackers:
        if backend.interface != "openai":
            raise ConfigError(
                f"dataset=multi_turn needs an OpenAI-compatible server backend, not "
                f"backend={config.backend.name}"
            )
        refuse_repeats(workload)
        return run_sessions(
            endpoint_of(backend), requests, warmup, workload, config.dataset, tokenizer, context
        )

    return run


def run_sessions(
    endpoint: Endpoint,
    requests: Sequence[GenRequest],
    warmup: Sequence[GenRequest],
    workload: Any,
    dataset: Any,
    tokenizer: Any = None,
    context: int | None = None,
) -> Trackers:
    """Offer `requests` (the sessions' turns, in order) as conversations; one tracker per turn.

    Raises:
        DatasetError: the requests do not make whole sessions, or, with `on_overflow=refuse`,
            a session cannot fit `context` whatever its replies are (before any request).
        ConfigError: `dataset.tools` on an endpoint that does not take chat, or a tool set or
            `tool_choice` that is not one (`sweep.core.tools`).
    """
    sessions = make_sessions(requests, dataset)
    reason = overflow(dataset, workload, context)
    if reason is not None:
        raise DatasetError(reason)
    tools = load_tools(getattr(dataset, "tools", None))
    if tools is not None:
        if endpoint.api != "chat":
            raise ConfigError(f"dataset.tools offers tools in chat requests, not {endpoint.api}")
        check_tool_choice(tools, dataset.tool_choice)
        endpoint = replace(endpoint, tools=tools.body(dataset.tool_choice))
    history = History(endpoint, tokenizer, context, dataset.on_overflow, tools)
    trackers = asyncio.run(_offer(endpoint, sessions, warmup, workload, history))
    if tools is not None:
        check_calls(trackers, tools)
    cut = sum(1 for t in trackers if t.dropped_turns)
    if cut:
        log.warning(
            "%d turn(s) sent without their oldest turns to fit the context %s", cut, context
        )
    return trackers


def make_sessions(requests: Sequence[GenRequest], dataset: Any) -> list[Session]:
    """Group the turns into sessions of `dataset.num_turns`, with their think times."""
    turns = dataset.num_turns
    if len(requests) % turns:
        raise DatasetError(
            f"{len(requests)} requests do not make whole sessions of dataset.num_turns={turns}"
        )
    count = len(requests) // turns
    thinks = think_times(dataset, count)
    tools = tool_latencies(dataset, count) if getattr(dataset, "tools", None) else None
    return [
        Session(
            s,
            tuple(requests[s * turns : (s + 1) * turns]),
            tuple(map(float, thinks[s])),
            tuple(map(float, tools[s])) if tools is not None else (),
        )
        for s in range(count)
    ]


def check_calls(trackers: Sequence[TurnTracker], tools: ToolSet) -> None:
    """Check every completed turn's tool calls against the tools (after the load)."""
    for tracker in trackers:
        calls = tracker.calls
        if calls and tracker.completed:
            tracker.call_errors = [tools.check(call) for call in calls]


async def _offer(
    endpoint: Endpoint,
    sessions: list[Session],
    warmup: Sequence[GenRequest],
    workload: Any,
    history: History,
) -> Trackers:
    """One client session, as `sweep.loadgen.http.run_share` opens one; sessions by mode."""
    cap = workload.streams
    run = new_run()
    trackers: list[TurnTracker] = []
    async with open_client(endpoint, workload, cap) as client:

        async def send(request: GenRequest, tracker: RequestTracker, scheduled: float) -> None:
            rid = request_id(run, request.idx)
            await stream_one(client, endpoint, request, tracker, scheduled, rid)

        async def warm(request: GenRequest) -> None:
            tracker = RequestTracker(request.idx, None, 0, request.max_tokens)
            rid = request_id(run, request.idx, warmup=True)
            await stream_one(client, endpoint, request, tracker, now_s(), rid)

        await _bounded([warm(r) for r in warmup], cap)  # untimed; opens the pooled connections
        gc.freeze()  # as run_share: a full collection would stall every stream at once
        meter = CpuMeter()
        try:
            conversation = _Conversation(send, history, trackers)
            if workload.name == "open_loop":
                await _open_loop(conversation, sessions, workload)
            else:
                await _closed_loop(conversation, sessions, cap or 1)
        finally:
            usage = meter.usage()
            gc.unfreeze()
    return Trackers(sorted(trackers, key=lambda t: t.idx), usage)


class _Conversation:
    """Runs sessions turn by turn through `send`, collecting every turn's tracker."""

    def __init__(self, send: Send, history: History, trackers: list[TurnTracker]) -> None:
        self.send, self.history, self.trackers = send, history, trackers
        self.cap: asyncio.Semaphore | None = None  # open loop: requests in flight

    async def run(self, session: Session, due: float) -> float:
        """Run `session` from `due`; returns when its last turn ended (its stream is free)."""
        earlier: list[tuple] = []
        stopped: str | None = None
        previous: TurnTracker | None = None  # the last turn sent, complete
        offered = self.history.tools is not None
        for k, user in enumerate(session.turns):
            tracker = TurnTracker(user, session.idx, k + 1, offered)
            self.trackers.append(tracker)
            if stopped is not None:
                tracker.fail(stopped)
                continue
            calls = previous.calls if previous is not None else ()
            new = [(TOOL, user.prompt, {"tool_call_id": c.id}) for c in calls] or None
            if previous is not None:  # the user reads the reply and thinks, or the tools run
                wait = session.tool_s[k] if calls else session.think_s[k]
                tracker.answers, tracker.tool_wait = bool(calls), wait if calls else None
                due = max(previous.end + wait, previous.freed)
                await sleep_until(due)
            try:
                request, tracker.input_tokens, tracker.dropped_turns = self.history.request(
                    session.idx, k + 1, earlier, user, new
                )
            except Overflow as exc:
                tracker.fail(str(exc))
                stopped = f"not_sent: session {session.idx} ended at turn {k + 1}: {exc}"
                continue
            tracker.request = request
            await self._send(request, tracker, due)
            if not tracker.completed:
                reason = tracker.error or "no tokens received"
                stopped = f"not_sent: session {session.idx} ended at turn {k + 1}: {reason}"
                continue
            earlier += [*(new or [(USER, user.prompt)]), tracker.message()]
            previous = tracker
        return previous.freed if stopped is None and previous is not None else now_s()

    async def _send(self, request: GenRequest, tracker: TurnTracker, due: float) -> None:
        if self.cap is None:
            await self.send(request, tracker, due)
            return
        async with self.cap:  # time waiting for the cap counts as client lag, as in http
            await self.send(request, tracker, due)


async def _closed_loop(conversation: _Conversation, sessions: list[Session], streams: int) -> None:
    """`streams` users, each running one whole session after another."""
    queue = iter(sessions)  # shared by the users; the event loop runs one at a time

    async def user() -> None:
        ready = now_s()
        for session in queue:
            ready = await conversation.run(session, ready)

    await asyncio.gather(*(user() for _ in range(max(1, min(streams, len(sessions))))))


async def _open_loop(conversation: _Conversation, sessions: list[Session], workload: Any) -> None:
    """Sessions start on the seeded schedule at `request_rate` sessions per second."""
    if workload.concurrency:
        conversation.cap = asyncio.Semaphore(workload.concurrency)
    offsets = arrival_offsets(
        len(sessions), workload.request_rate, workload.burstiness, workload.seed
    )
    start = now_s()
    tasks = []
    for session, offset in zip(sessions, offsets, strict=True):
        await sleep_until(start + offset)
        tasks.append(asyncio.create_task(conversation.run(session, start + offset)))
    await asyncio.gather(*tasks)


async def _bounded(calls: list, limit: int | None) -> None:
    """Await `calls` with at most `limit` at a time (all at once without one)."""
    gate = asyncio.Semaphore(limit or max(1, len(calls)))

    async def one(call: Any) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))
