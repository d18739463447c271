"""The parity check's rounds and what it prints of them (`sweep.tools.parity` runs them).

A round is one client's pass over the workload: its output tok/s, every measured request's TTFT
and, against a vLLM server, the server's own mean TTFT over the round. The report pools each
client's TTFTs over the rounds, pairs the rounds for tok/s and for what each client adds to the
server's own TTFT, and says whether ours is within `TOLERANCE` of vLLM's client, intervals
included (bootstrap, `BOOTSTRAP` resamples).
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

REF = "vllm bench"
BOOTSTRAP = 2000
TOLERANCE = 0.05


class Round:
    """One client's round: output tok/s, each measured request's TTFT in ms, and notes."""

    def __init__(self, tok_s: float, ttfts_ms: list[float], note: str = "") -> None:
        if not ttfts_ms:
            raise SystemExit("a round finished with no successful request")
        self.tok_s, self.ttfts_ms, self.note = tok_s, ttfts_ms, note
        self.median_ttft_ms = statistics.median(ttfts_ms)
        self.truth_ms: list[float] = []
        self.server_mean_ms: float | None = None  # vLLM's own mean TTFT over the round
        self.server_cpu_s: float | None = None  # CPU seconds the server's processes used

    @property
    def mean_ttft_ms(self) -> float:
        """The round's mean TTFT."""
        return statistics.fmean(self.ttfts_ms)

    def line(self, round_idx: int, client: str) -> str:
        """The round's line as it finishes (warm-up rounds have negative indices)."""
        kind = "round" if round_idx >= 0 else "warm-up"
        text = f"{kind} {round_idx} {client:>12}: {self.tok_s:8.1f} tok/s median TTFT "
        text += f"{self.median_ttft_ms:7.1f} ms"
        if self.truth_ms:
            text += f" (server: {statistics.median(self.truth_ms):.1f} ms)"
        if self.server_mean_ms is not None:
            text += f"; mean {self.mean_ttft_ms:.1f} ms, server's mean {self.server_mean_ms:.1f} ms"
        return f"{text}  [{self.note}]"


def bootstrap_ci(ours: list[Round], ref: list[Round], seed: int = 0) -> tuple[float, float]:
    """95% interval of (median(ours) - median(ref)) / median(ref) of the pooled TTFTs.

    Resamples rounds, not requests, and pairs them (round i of both clients ran side by side):
    a round's requests share its server's state (a closed loop's waves fall into one of a few
    patterns for a whole round), so they are not independent draws, and resampling requests
    would give an interval far narrower than the rounds' scatter.
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ref), (BOOTSTRAP, len(ref)))
    ratios = np.empty(BOOTSTRAP)
    for k, pick in enumerate(picks):
        a = np.median(np.concatenate([ours[i].ttfts_ms for i in pick]))
        b = np.median(np.concatenate([ref[i].ttfts_ms for i in pick]))
        ratios[k] = a / b - 1
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def median_interval(diffs: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Median of per-round paired differences, and its bootstrap 95% interval over rounds."""
    medians = np.median(np.random.default_rng(seed).choice(diffs, (BOOTSTRAP, diffs.size)), 1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(diffs)), float(low), float(high)


def paired_tok_s(ours: list[Round], ref: list[Round]) -> tuple[float, float, float]:
    """Median of the rounds' relative tok/s differences, and its 95% interval over rounds."""
    return median_interval(
        np.array([o.tok_s / r.tok_s - 1 for o, r in zip(ours, ref, strict=True)])
    )


def report(rounds: dict[str, list[Round]], args: argparse.Namespace) -> None:
    """Print the rounds, the medians and pooled medians, the server's side, the verdicts."""
    clients = list(rounds)
    mode = "closed loop" if math.isinf(args.rate) else f"{args.rate:g} req/s"
    where = (f"server on CPUs {sorted(args.server_cpus or [])}, clients on CPUs "
             f"{sorted(args.client_cpus or [])}") if args.server_cpus or args.client_cpus \
        else "not confined"  # fmt: skip
    print(
        f"\n{args.server} server; {args.prompts} prompts, {args.input_len} in / "
        f"{args.output_len} out, {mode}, concurrency cap {args.concurrency}, "
        f"{args.rounds} rounds after {args.warmup_rounds} warm-up; {where}"
    )
    print("\nper round: output tok/s / median TTFT ms")
    print(f"{'round':<7}" + "".join(f"{c:>24}" for c in clients))
    for i in range(args.rounds):
        cells = (f"{rounds[c][i].tok_s:.1f} / {rounds[c][i].median_ttft_ms:.1f}" for c in clients)
        print(f"{i:<7}" + "".join(f"{cell:>24}" for cell in cells))
    pooled = {c: np.concatenate([r.ttfts_ms for r in rounds[c]]) for c in clients}
    tok = {c: statistics.median(r.tok_s for r in rounds[c]) for c in clients}
    by_round = {c: statistics.median(r.median_ttft_ms for r in rounds[c]) for c in clients}
    pooled_median = {c: float(np.median(pooled[c])) for c in clients}
    print(
        f"\n{'client':<12}{'output tok/s':>14}{'diff':>8}{'TTFT ms, median of rounds':>28}"
        f"{'diff':>8}{'TTFT ms, pooled median':>24}{'diff':>8}   95% interval"
    )
    for client in clients:
        interval = ""
        if client != REF:
            low, high = bootstrap_ci(rounds[client], rounds[REF])
            interval = f"   {low:+.1%} .. {high:+.1%}"
        print(
            f"{client:<12}{tok[client]:>14.1f}{tok[client] / tok[REF] - 1:>+8.1%}"
            f"{by_round[client]:>28.1f}{by_round[client] / by_round[REF] - 1:>+8.1%}"
            f"{pooled_median[client]:>24.1f}{pooled_median[client] / pooled_median[REF] - 1:>+8.1%}"
            f"{interval}"
        )
    for client in clients:
        truth = [t for r in rounds[client] for t in r.truth_ms]
        if truth:
            print(f"server's own TTFT of {client}'s requests: median {np.median(truth):.2f} ms")
    print_offsets(rounds, clients)
    print_server_side(rounds, clients)
    print()
    pairs = [(c, REF) for c in clients[1:]] + ([tuple(clients[1:])] if len(clients) == 3 else [])
    for client, ref in pairs:
        print(verdict(rounds, pooled, client, ref))


def print_offsets(rounds: dict[str, list[Round]], clients: list[str]) -> None:
    """What each client adds to the server's own mean TTFT, and ours against vLLM's, by round.

    The difference of the two clients' offsets, paired by round, is their measurements'
    disagreement with the server's own timing taken out: its median over rounds, with a
    bootstrap 95% interval, in ms and relative to vLLM's client's mean TTFT.
    """
    offsets = {
        c: [r.mean_ttft_ms - r.server_mean_ms for r in rounds[c] if r.server_mean_ms is not None]
        for c in clients
    }
    if not all(len(v) == len(rounds[c]) for c, v in offsets.items()):
        return  # not a vLLM server, or a round whose histogram could not be read
    print(
        "\nmean TTFT, client's - server's own (vLLM's histogram over the round): what the "
        "client adds to what the server measured"
    )
    for client in clients:
        values = offsets[client]
        print(
            f"{client:<12} median over rounds {statistics.median(values):+.2f} ms "
            f"(rounds {min(values):+.2f} .. {max(values):+.2f} ms)"
        )
    scale = statistics.median(r.mean_ttft_ms for r in rounds[REF])
    for client in clients[1:]:
        diff, low, high = median_interval(np.array(offsets[client]) - np.array(offsets[REF]))
        within = max(abs(low), abs(high)) <= TOLERANCE * scale
        print(
            f"{client} against {REF}, paired by round: adds {diff:+.2f} ms "
            f"(95% interval {low:+.2f} .. {high:+.2f} ms; {diff / scale:+.1%}, "
            f"{low / scale:+.1%} .. {high / scale:+.1%} of {REF}'s mean TTFT): "
            f"{'within' if within else 'NOT within'} {TOLERANCE:.0%}"
        )


def print_server_side(rounds: dict[str, list[Round]], clients: list[str]) -> None:
    """The server's own mean TTFT and the CPU it used in ours' runs against vLLM's client's.

    Paired by round (the same arrivals, with `--same-arrivals`): when the server's own TTFT is
    higher while one client runs, the gap is the server's, not the client's measurement. The CPU
    is read around each client's whole run, so ours' also holds what the server used while idle
    during the sweep's start (Ray, a few seconds): compare it with care.
    """
    series = {
        "server's own mean TTFT": lambda r: r.server_mean_ms,
        "server's CPU seconds (whole runs)": lambda r: r.server_cpu_s,
    }
    for client in clients[1:]:
        for name, value in series.items():
            pairs = [(value(o), value(r)) for o, r in zip(rounds[client], rounds[REF], strict=True)]
            if not pairs or any(a is None or b is None or not b for a, b in pairs):
                continue
            diffs = np.array([a / b - 1 for a, b in pairs])
            diff, low, high = median_interval(diffs)
            print(
                f"{name}, {client} against {REF}, paired by round: {diff:+.1%} (95% interval "
                f"{low:+.1%} .. {high:+.1%}), higher in {int((diffs > 0).sum())} of {diffs.size}"
            )


def verdict(rounds, pooled, client: str, ref: str) -> str:
    """Whether `client` is within `TOLERANCE` of `ref` on tok/s and median TTFT, intervals too."""
    tok, tok_low, tok_high = paired_tok_s(rounds[client], rounds[ref])
    ttft = float(np.median(pooled[client]) / np.median(pooled[ref]) - 1)
    low, high = bootstrap_ci(rounds[client], rounds[ref])
    within = max(abs(tok_low), abs(tok_high), abs(low), abs(high)) <= TOLERANCE
    return (
        f"{client} against {ref}: output tok/s {tok:+.1%} (95% interval over rounds "
        f"{tok_low:+.1%} .. {tok_high:+.1%}), pooled median TTFT {ttft:+.1%} (95% interval "
        f"{low:+.1%} .. {high:+.1%}): {'within' if within else 'NOT within'} "
        f"{TOLERANCE:.0%} on both, interval included"
    )
