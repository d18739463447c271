"""Request ids: what the load generator sends as `X-Request-Id`, shaped as a UUID.

Some servers take only a UUID there: llama-cpp-python's OpenAI server answers 400, with no body,
to any other request id. So an id is `RRRRRRRR-SSSS-400P-8000-NNNNNNNNNNNN`: the trial's run (8
random hex digits, new for each trial and client session), the shard (`sweep.loadgen.shards`,
0 when unsharded), P = 0 for a measured request and 1 for a warm-up, and the request's index in
decimal digits. Server logs and the sim server's stamps are keyed by it; `parse` reads one back.
"""

from __future__ import annotations

import re
import uuid
from typing import NamedTuple

MEASURED, WARMUP = 0, 1
_ID = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-400([01])-8000-(\d{12})$")


class RequestId(NamedTuple):
    """What a request id says."""

    run: str
    shard: int
    warmup: bool
    idx: int


def new_run() -> str:
    """A trial's run: 8 random hex digits, so ids are unique across trials and shards."""
    return uuid.uuid4().hex[:8]


def request_id(run: str, idx: int, shard: int = 0, warmup: bool = False) -> str:
    """The id of request `idx` of `run`."""
    return f"{run}-{shard:04x}-400{WARMUP if warmup else MEASURED}-8000-{idx:012d}"


def parse(rid: str) -> RequestId | None:
    """What `rid` says, or None when the load generator did not make it."""
    match = _ID.match(rid)
    if match is None:
        return None
    run, shard, phase, idx = match.groups()
    return RequestId(run, int(shard, 16), phase == str(WARMUP), int(idx))
