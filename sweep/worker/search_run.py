"""A search run inside its deployment's task: probes chosen one after another on a started server.

`run_search` asks the search (`sweep.worker.search`) for the next load, runs a trial at that load
(`sweep.worker.trial.run_trial`, handed in), judges it against the SLO (`sweep.core.slo`) and
repeats until the search is done. Each probe is yielded as ordinary trial files with the search
columns added, so the driver records it at once; a probe already recorded (`SearchSeed.known`) is
not run again but still steers the search. The last item is a `SearchDone` with the capacity found.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from sweep.core import records as R
from sweep.core.config import Config
from sweep.core.results import TrialFiles
from sweep.core.slo import verdict
from sweep.loadgen.http import STOPPED_OVER_SATURATED, early_count
from sweep.spec import Probe, TrialSpec, flat_columns, hash_tree, stable_hash
from sweep.worker.search import Capacity, capacity, next_step, profile_loads

RunTrial = Callable[[TrialSpec], TrialFiles]
AWAIT_POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class SearchDone:
    """A search has ended: the driver counts its seed as recorded."""

    search_id: str
    capacity: Capacity


class Board(Protocol):
    """Where replicas of one deployment share a search (`sweep.driver.ledger.TrialLedger.board`)."""

    def claim(self, trial_id: str) -> bool:
        """True if this replica may run the probe `trial_id` (nobody else claimed it)."""

    def publish(self, trial_id: str, text: str) -> None:
        """Tell the other replicas the outcome of a probe this replica ran."""

    def fetch(self, trial_id: str) -> str | None:
        """The outcome another replica published, None while it runs."""


def run_search(
    seed: TrialSpec, run: RunTrial, board: Board | None = None
) -> Iterator[TrialFiles | SearchDone]:
    """Probe `seed`'s search to its end with `run`, yielding each probe's files, then SearchDone.

    With `board`, replicas of the deployment (helpers on idle GPUs) work on the same search:
    each runs the loads of a step that it claims first, and waits for the others' outcomes, so
    `search.parallel` loads are probed at once. Every replica takes the outcomes in the step's
    order, so all of them choose the same next step.
    """
    assert seed.search is not None
    known = dict(seed.search.known)
    history: list[Probe] = []

    def probe(load: float, phase: str, workload: dict[str, Any] | None = None):  # noqa: ANN202
        spec = probe_spec(seed, load, workload)
        outcome = known.get(spec.trial_id)
        if outcome is not None:
            history.append(outcome)
            return None
        files = run(spec)
        files, outcome = judged(files, seed, load, phase, len(history))
        history.append(outcome)
        return files

    settings = seed.config.search
    if seed.search.mode == "profile":
        yield from _profile(seed, probe)
    else:
        while (step := next_step(settings, seed.search.integer, history)).loads:
            outcomes: dict[float, Probe] = {}
            others: list[tuple[int, float, TrialSpec]] = []
            for position, load in enumerate(step.loads):
                spec = probe_spec(seed, load)
                if spec.trial_id in known:
                    outcomes[load] = known[spec.trial_id]
                elif board is None or board.claim(spec.trial_id):
                    files, outcomes[load] = judged(
                        run(spec), seed, load, step.phase, len(history) + position
                    )
                    if board is not None:
                        board.publish(spec.trial_id, json.dumps(dataclasses.asdict(outcomes[load])))
                    yield files
                else:
                    others.append((position, load, spec))
            for position, load, spec in others:
                outcome = _awaited(board, spec)
                if outcome is None:  # its replica was lost: run it here
                    files, outcome = judged(
                        run(spec), seed, load, step.phase, len(history) + position
                    )
                    yield files
                outcomes[load] = outcome
            history.extend(outcomes[load] for load in step.loads)
    finite = [p for p in history if math.isfinite(p.load)]  # profile: the throughput probe
    found = capacity(settings, finite, integer=seed.search.integer)
    yield SearchDone(seed.trial_id, found)


def _awaited(board: Board | None, spec: TrialSpec) -> Probe | None:
    """The outcome of a probe another replica runs; None if none came within its trial timeout."""
    assert board is not None
    deadline = time.monotonic() + spec.config.workload.trial_timeout_s
    while time.monotonic() < deadline:
        text = board.fetch(spec.trial_id)
        if text is not None:
            return Probe(**json.loads(text))
        time.sleep(AWAIT_POLL_S)
    return None


def _profile(seed: TrialSpec, probe: Callable) -> Iterator[TrialFiles]:
    """GuideLLM's sweep: one stream, then all at once, then `search.points` rates between."""
    rates = []
    for phase, load, workload in (
        ("synchronous", 1.0, {"name": "closed_loop", "concurrency": 1, "request_rate": None}),
        ("throughput", math.inf, {"request_rate": None}),
    ):
        files = probe(load, phase, workload)
        if files is not None:
            yield files
        rates.append(probe_history_achieved(seed, load, workload, files))
    synchronous, ceiling = rates
    if not synchronous or not ceiling or ceiling <= synchronous:
        return  # nothing between: the two probes say what there is to say
    for rate in profile_loads(seed.config.search, synchronous, ceiling):
        files = probe(rate, "profile")
        if files is not None:
            yield files


def probe_history_achieved(
    seed: TrialSpec, load: float, workload: dict[str, Any] | None, files: TrialFiles | None
) -> float | None:
    """The request rate a profile probe achieved, from its files or from what was known."""
    if files is not None:
        return files.summary.column(R.REQUEST_THROUGHPUT)[0].as_py()
    assert seed.search is not None
    outcome = dict(seed.search.known).get(probe_spec(seed, load, workload).trial_id)
    return outcome.achieved if outcome is not None else None


def probe_spec(seed: TrialSpec, load: float, workload: dict[str, Any] | None = None) -> TrialSpec:
    """The trial of `seed`'s search at `load` (`workload` overrides other workload values)."""
    assert seed.search is not None
    section, key = seed.search.axis.split(".")
    value: float | int | None = int(round(load)) if seed.search.integer else float(load)
    if math.isinf(load):
        value = None
    changes = {key: value, **(workload or {})}
    config = _with_workload(seed.config, changes)
    tree = dataclasses.asdict(config)
    hashed = {**hash_tree(tree), "repeat": seed.repeat, "search": seed.search.mode}
    flat = flat_columns(tree, {})
    flat[R.GROUP_CHOICES] = seed.flat.get(R.GROUP_CHOICES, "{}")
    text = "max" if math.isinf(load) else f"{load:g}"
    short = "c" if seed.search.integer or (workload or {}).get("concurrency") else "r"
    return dataclasses.replace(
        seed,
        trial_id=stable_hash(hashed),
        label=f"{seed.label}-{short}{text}",
        config=config,
        flat=flat,
        search=None,
    )


def _with_workload(config: Config, changes: dict[str, Any]) -> Config:
    """`config` with workload values replaced (validated again by the dataclass)."""
    workload = dataclasses.replace(config.workload, **changes)
    return dataclasses.replace(config, workload=workload)


def judged(
    files: TrialFiles, seed: TrialSpec, load: float, phase: str, index: int
) -> tuple[TrialFiles, Probe]:
    """The probe's files with the search columns added, and its outcome for the search."""
    assert seed.search is not None
    row = files.summary.to_pylist()[0]
    config = seed.config
    result = verdict(config.slo, row)
    passed, margin, reason = result.passed, result.margin, result.reason
    achieved = row.get(R.REQUEST_THROUGHPUT)
    if phase == "synchronous":  # one stream: its offered load is what it achieved
        load = achieved or 0.0
    limit = config.search.saturation_ratio
    offered = load if seed.search.axis == "workload.request_rate" and math.isfinite(load) else None
    requests = files.requests.to_pandas() if files.requests.num_rows else None
    stopped = _stopped(requests)
    if stopped:  # the load generator gave up on them: the slowest requests, not in the metrics
        passed = False
        reason = f"over-saturated: {stopped} requests still in flight were stopped"
    elif (
        passed
        and offered
        and (achieved or 0.0) < limit * (keeping_up := kept_up_rate(row, offered, requests))
    ):
        passed = False
        reason = (
            f"over-saturated: achieved {achieved or 0.0:.3g} req/s where a server keeping up "
            f"with {offered:g} offered would reach {keeping_up:.3g} (below "
            f"search.saturation_ratio={limit:g})"
        )
    columns = {
        R.SEARCH_ID: seed.trial_id,
        R.SEARCH_MODE: seed.search.mode,
        R.SEARCH_AXIS: seed.search.axis,
        R.SEARCH_LOAD: None if math.isinf(load) else float(load),
        R.SEARCH_PROBE: index,
        R.SEARCH_PHASE: phase,
        R.SLO_PASSED: passed if config.slo.is_set else None,
        R.SLO_MARGIN: margin,
        R.SLO_REASON: reason or None,
    }
    summary = pa.Table.from_pylist([{**row, **columns}])
    outcome = Probe(load=load, passed=passed, margin=margin, achieved=_ceiling(row), reason=reason)
    return dataclasses.replace(files, summary=summary), outcome


def known_probe(row: dict[str, Any]) -> Probe:
    """A recorded probe's outcome, read back from its summary row (resume)."""
    load = row.get(R.SEARCH_LOAD)
    return Probe(
        load=math.inf if load is None else float(load),
        passed=bool(row.get(R.SLO_PASSED)),
        margin=_number(row.get(R.SLO_MARGIN)),
        achieved=_ceiling(row),
        reason=str(row.get(R.SLO_REASON) or ""),
    )


def kept_up_rate(row: dict[str, Any], offered: float, requests: Any = None) -> float:
    """The request rate a trial would report from a server keeping up with `offered` req/s.

    The summary's rate is requests / (last end - first send): even with no queue it is below the
    offered rate by a request's latency, n / ((n - 1) / offered + latency), which matters for a
    short probe. The latency is the median of the first requests sent (`early_count`), before
    any backlog; `requests` is the trial's requests table (pandas), else the row's median.
    """
    n = row.get(R.NUM_REQUESTS) or 0
    if n < 2:
        return offered
    latency_s = (_number(row.get(R.latency_column("e2e", "median"))) or 0.0) / 1e3
    if requests is not None and len(requests):
        ok = requests[requests[R.STATUS] == R.STATUS_OK].sort_values(R.SENT_S)
        first = ok[R.E2E_S].head(early_count(n)).dropna()
        latency_s = float(first.median()) if len(first) else latency_s
    return n / ((n - 1) / offered + latency_s)


def _stopped(requests: Any) -> int:
    """Requests the load generator stopped because the probe could no longer pass."""
    if requests is None:
        return 0
    errors = requests[R.ERROR].dropna().astype(str)
    return int(errors.str.startswith(STOPPED_OVER_SATURATED).sum())


def _ceiling(row: dict[str, Any]) -> float | None:
    """The request rate a probe achieved, as a bound on the server's ceiling for the search.

    None when the client flagged itself saturated: then the client set the pace, and the rate
    says nothing of the server (the search would cap its next probe at the client's limit).
    """
    if row.get(R.CLIENT_SATURATED) and row.get(R.SEARCH_MODE) != "profile":
        return None  # (a profile needs the rates its first two probes reached, whatever paced them)
    return _number(row.get(R.REQUEST_THROUGHPUT))


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


class _NotKnown(Exception):
    """A replayed search asked for a probe that was never recorded."""


def search_finished(seed: TrialSpec) -> bool:
    """Whether `seed`'s known probes already answer its search (resume replays it, running none)."""

    def run(spec: TrialSpec) -> TrialFiles:
        raise _NotKnown(spec.trial_id)

    try:
        for _ in run_search(seed, run):
            pass
    except _NotKnown:
        return False
    return True
