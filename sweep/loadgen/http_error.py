"""One line for an HTTP error answer, naming the body field an endpoint rejected.

A strict endpoint answers 400 (OpenAI) or 422 (FastAPI, pydantic) to a field it does not know or
will not take; the request fails with `http_error: HTTP 400: the endpoint rejected field 'X':
...` when the answer says which: OpenAI's error object has `param`, pydantic errors a `loc`
(vLLM prints them into its message). Other answers keep their first line.

`MAX_RESENDS` is the one rule of both clients for a request lost to a pooled connection that the
server closed under it (`sweep.loadgen.wire` tells that failure apart in aiohttp's path): it goes
out again on another connection, at most this many times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from backends.base import Secret
from sweep.core.secrets import REDACTED

MAX_RESENDS = 3  # each resend has used up one closed connection; a fourth in a row is no race

# How servers name a rejected field in a message: OpenAI's wording, or a pydantic error printed
# into it (vLLM: "... 'loc': ('body', 'ignore_eos') ...").
FIELD_IN_MESSAGE = re.compile(
    r"(?:argument supplied|[Uu]nsupported parameter|[Uu]nknown parameter):?\s*'?([\w.]+)"
    r"|'loc': \(([^)]*)\)"
)


def error_line(status: int, text: str, secrets: Iterable[str] = ()) -> str:
    """One line for a non-200 answer; for 400 and 422, naming the field rejected if it says.

    Args:
        status: the HTTP status.
        text: the response body (or the reason phrase when it is empty).
        secrets: values to replace by `***` (a server may echo the request back).
    """
    message, rejected = text.splitlines()[0] if text else "", None
    if status in (400, 422):
        rejected, message = _rejection(text)
    line = " ".join(message.split())[:300]
    if rejected:
        line = f"the endpoint rejected field {rejected!r}: {line}"
    for secret in secrets:
        if secret:
            line = line.replace(secret, REDACTED)
    return f"http_error: HTTP {status}: {line}"


def _rejection(text: str) -> tuple[str | None, str]:
    """The field a 400/422 body names (OpenAI's `param`, pydantic's `loc`) and its message."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return None, text
    error = payload.get("error", payload)
    detail = payload.get("detail")  # FastAPI: {"detail": [{"loc": [...], "msg": ...}]}
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        error = detail[0]
    if not isinstance(error, dict):
        return None, str(error)
    message = str(error.get("message") or error.get("msg") or text)
    rejected = error.get("param") or _loc(error.get("loc"))
    if not rejected and (match := FIELD_IN_MESSAGE.search(message)):
        rejected = match[1] or _loc(re.findall(r"'([^']*)'", match[2]))
    return (str(rejected) if rejected else None), message


def _loc(loc: object) -> str | None:
    """`a.b` for pydantic's location `("body", "a", "b")`."""
    if not isinstance(loc, list | tuple):
        return None
    parts = [str(p) for p in loc]
    return ".".join(parts[1:] if parts[:1] == ["body"] else parts) or None


class RequestFailed(Exception):
    """A request failed; the message is its one-line reason (`RequestTracker.fail`)."""


class TimedOut(RequestFailed):
    """The client gave up on a request after `workload.timeout_s` (`timeout: ...`)."""


def endpoint_secrets(endpoint: object) -> list[str]:
    """The values read from the environment (`backends.base.Secret`) that requests carry.

    A server may echo a request back in its error: these are redacted from the line recorded.
    """
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, Secret):
            found.append(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(endpoint.headers)
    walk(endpoint.extra_body)
    return found
