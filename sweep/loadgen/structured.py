"""A structured-output trial's requests and answers (`sweep.core.structured`).

`structured_endpoint` puts the constraint's body fields in every request of the trial (none when
`workload.structured_enforce` is false: the same requests, unconstrained) and turns `ignore_eos`
off, so an answer ends where its constraint does. The trackers keep each reply's text
(`RequestTracker.reply_parts`); `check_answers`, run after the load so it costs the client
nothing, checks every completed answer against the constraint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sweep.core.errors import ConfigError
from sweep.core.structured import JSON_SCHEMA, Constraint, load_constraint
from sweep.loadgen.recorder import RequestTracker


def workload_constraint(workload: Any) -> Constraint | None:
    """The constraint `workload.structured` and `structured_spec` name; None without one."""
    return load_constraint(workload.structured, workload.structured_spec)


def structured_endpoint(endpoint: Any, constraint: Constraint, enforce: bool) -> Any:
    """`endpoint` with the constraint's body fields (`enforce`) and `ignore_eos` off.

    Raises:
        ConfigError: a regex, choice or grammar for a server that takes no vLLM extensions
            (only OpenAI's `response_format`, a JSON schema, is standard).
    """
    if enforce and constraint.kind != JSON_SCHEMA and not endpoint.extensions:
        raise ConfigError(
            f"workload.structured={constraint.kind} is asked of the server through vLLM's "
            "structured_outputs, which this backend does not take; use json_schema "
            "(OpenAI's response_format) or workload.structured_enforce=false"
        )
    return dataclasses.replace(endpoint, structured=constraint.body() if enforce else {})


def keep_replies(trackers: Iterable[RequestTracker]) -> None:
    """Have each tracker keep its reply's text, to be checked."""
    for tracker in trackers:
        tracker.reply_parts = []


def check_answers(trackers: Iterable[RequestTracker], constraint: Constraint) -> None:
    """Check each completed answer that kept its text; set `structured_valid` and its reason."""
    for tracker in trackers:
        if tracker.reply_parts is None or tracker.error is not None or tracker.cancelled:
            continue
        if not tracker.chunk_times:  # no answer at all: failed, not invalid
            continue
        reason = constraint.check("".join(tracker.reply_parts))
        tracker.structured_valid, tracker.structured_error = reason is None, reason
