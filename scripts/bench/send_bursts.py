"""How long a burst of requests due at one instant takes to leave each of our HTTP clients.

`rounds` sends bursts through `http.stream_one` on the load generator's own client
(`workload.http_client=asyncio`) and on aiohttp's, alternating, against a server already
started, with one connection open per request, so that only the sending is timed. Each
request's send lag (its write, as `RequestTracker.sent` records it, minus the instant) is what
a replayed trace's bursts add to its arrivals. Run by `scripts.bench.http_clients --burst N`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd

from analysis.report.sections import markdown_table
from backends.base import GenRequest
from sweep.core.config import WorkloadConfig
from sweep.loadgen.clock import now_s
from sweep.loadgen.http import Endpoint, open_client, stream_one
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.wakeup import sleep_until

PROMPT = "hello " * 16


async def burst(name: str, url: str, size: int) -> list[float]:
    """Each send lag (ms) of `size` requests due at one instant, through client `name`.

    A request's send lag is its write (`RequestTracker.sent`) minus the instant. Connections are
    opened first, one per request, so that only the sending is timed.
    """
    endpoint = Endpoint(url, "sim", extensions=True)
    workload = WorkloadConfig(name="open_loop", request_rate=1.0, http_client=name,
                              timeout_s=60.0)  # fmt: skip
    trackers = [RequestTracker(i, None, 16, 8) for i in range(size)]
    async with open_client(endpoint, workload) as client:
        await client.open_pool(url + "/v1/models", size)
        due = now_s() + 0.05
        await sleep_until(due)
        tasks = [
            asyncio.create_task(
                stream_one(
                    client,
                    endpoint,
                    GenRequest(t.idx, PROMPT, tuple(range(16)), 8),
                    t,
                    due,
                    f"burst-{t.idx}",
                )
            )  # fmt: skip
            for t in trackers
        ]
        await asyncio.gather(*tasks)
    return [(t.sent - due) * 1e3 for t in trackers if t.error is None]


def rounds(url: str, size: int, repeats: int) -> list[dict]:
    """Bursts through our two clients, alternating, `repeats` times each."""
    rows = []
    for r in range(repeats):
        for name in ("asyncio", "aiohttp") if r % 2 == 0 else ("aiohttp", "asyncio"):
            lags = np.array(asyncio.run(burst(name, url, size)))
            rows.append({"client": name, "sent": len(lags), "p50": np.percentile(lags, 50),
                         "p99": np.percentile(lags, 99), "max": lags.max()})  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    """Median [min-max] of each burst figure per client."""
    out = []
    for client, group in pd.DataFrame(rows).groupby("client"):
        row = {"client": f"{client} (http_client)", "bursts": len(group),
               "sent": int(group["sent"].min())}  # fmt: skip
        for q in ("p50", "p99", "max"):
            v = group[q]
            row[f"send lag {q} ms"] = f"{v.median():.2f} [{v.min():.2f}-{v.max():.2f}]"
        out.append(row)
    return markdown_table(pd.DataFrame(out))
