"""How late this machine wakes a waiting load generator: the floor under any replay's timing.

Each method waits for a random 1-20 ms, many times, and the lateness of each wake-up (woken -
due) is recorded: `asyncio.sleep` (the event loop's epoll timeout, whole milliseconds),
`sleep_until` (`sweep.loadgen.wakeup`: a timerfd on Linux) and `time.sleep` (the kernel's
high-resolution sleep, no event loop: the machine's own floor). Rounds alternate the methods,
so that a change in the machine's load falls on all of them. Prints a table per method, pooled
over rounds, with the spread of each round's p99.

    .venv/bin/python -m scripts.bench.wakeups [--rounds 4] [--waits 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import numpy as np
import pandas as pd

from analysis.report.sections import markdown_table
from sweep.loadgen.clock import now_s
from sweep.loadgen.wakeup import sleep_until

QUANTILES = (50, 90, 99, 99.9)


def waits(count: int, seed: int) -> list[float]:
    """`count` wait lengths, uniform in 1-20 ms, drawn from `seed`."""
    rng = random.Random(seed)
    return [rng.uniform(0.001, 0.02) for _ in range(count)]


async def loop_round(durations: list[float], precise: bool) -> list[float]:
    """Waits on the event loop: `sleep_until` if `precise`, else `asyncio.sleep`."""
    late = []
    for d in durations:
        due = now_s() + d
        await (sleep_until(due) if precise else asyncio.sleep(d))
        late.append(now_s() - due)
    return late


def time_round(durations: list[float]) -> list[float]:
    """Waits with `time.sleep`, no event loop: the lateness of each."""
    late = []
    for d in durations:
        due = now_s() + d
        time.sleep(d)
        late.append(now_s() - due)
    return late


METHODS = {
    "asyncio.sleep": lambda d: asyncio.run(loop_round(d, precise=False)),
    "sleep_until (timerfd)": lambda d: asyncio.run(loop_round(d, precise=True)),
    "time.sleep (floor)": time_round,
}


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.wakeups`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--waits", type=int, default=1000, help="per method and round")
    return parser


def table(rounds: int, waits_per_round: int) -> str:
    """Each method's lateness pooled over `rounds`, as a Markdown table."""
    late: dict[str, list[np.ndarray]] = {name: [] for name in METHODS}
    names = list(METHODS)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            late[name].append(np.array(METHODS[name](waits(waits_per_round, r))) * 1e3)
    rows = []
    for name, per_round in late.items():
        pooled = np.concatenate(per_round)
        p99s = [np.percentile(x, 99) for x in per_round]
        rows.append(
            {
                "method": name,
                "waits": pooled.size,
                **{f"p{q:g} ms": round(float(np.percentile(pooled, q)), 3) for q in QUANTILES},
                "max ms": round(float(pooled.max()), 3),
                "p99 per round, ms": f"{min(p99s):.2f}-{max(p99s):.2f}",
            }
        )
    return markdown_table(pd.DataFrame(rows))


def run(args: argparse.Namespace) -> None:
    """Print the table."""
    print(table(args.rounds, args.waits))


if __name__ == "__main__":
    run(parser().parse_args())
