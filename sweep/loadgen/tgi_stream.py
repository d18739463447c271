"""TGI's native streaming API (`POST /generate_stream`): the request body and one event's meaning.

TGI streams server-sent events, one per generated token:
`data:{"index":1,"token":{"id":..,"text":..,"logprob":..,"special":false},"generated_text":null,
"details":null}`; the last event carries `generated_text` and, when asked for, `details` with
`generated_tokens`. There is no `[DONE]` line. An error arrives as `data:{"error":..,
"error_type":..}`. `sweep.loadgen.http` reads the stream and hands each event's payload to
`parse_event`, a pure function, so the format is tested on recorded bytes without a server.
TGI has no `ignore_eos`: a request may end early at EOS, which the records show as fewer output
tokens than requested.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from backends.base import GenRequest

PATH = "/generate_stream"


class TGIEvent(NamedTuple):
    """What one event means for the request: tokens it carries, and how the stream stands."""

    tokens: int
    finished: bool
    server_tokens: int | None
    error: str | None


def request_body(request: GenRequest) -> dict[str, Any]:
    """The JSON body of a `/generate_stream` request (greedy unless a temperature is set)."""
    parameters: dict[str, Any] = {"max_new_tokens": request.max_tokens, "details": True}
    if request.temperature > 0:
        parameters.update(do_sample=True, temperature=request.temperature)
    else:
        parameters["do_sample"] = False  # TGI refuses temperature 0; greedy is do_sample false
    return {"inputs": request.prompt, "parameters": parameters}


def parse_event(data: bytes | str) -> TGIEvent:
    """Interpret one event's payload (the text after `data:`).

    Every token event carries exactly one token, special ones (EOS) included, as TGI's own
    `generated_tokens` counts them. A payload that is not a JSON object is reported as an
    error rather than raised, so one bad event fails only its request.
    """
    try:
        event = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        text = data[:80] if isinstance(data, str) else data[:80].decode(errors="replace")
        return TGIEvent(0, False, None, f"malformed_event: {exc} in {text!r}")
    if not isinstance(event, dict):
        return TGIEvent(0, False, None, f"malformed_event: not an object: {str(event)[:80]!r}")
    if event.get("error") is not None:
        kind = event.get("error_type") or "error"
        return TGIEvent(0, True, None, f"server_error: {kind}: {event['error']}")
    tokens = 1 if isinstance(event.get("token"), dict) else 0
    details = event.get("details")
    server_tokens = details.get("generated_tokens") if isinstance(details, dict) else None
    finished = event.get("generated_text") is not None or details is not None
    return TGIEvent(tokens, finished, server_tokens, None)
