"""A deployment's wait for a node: which of two limits runs, and when the wait gives up.

A deployment that no alive node fits waits for the cluster's autoscaler. Two clocks count the
wait, one at a time, by what the autoscaler has on its way of the node types that fit it
(`sweep.driver.autoscaler_status`):
- a node launching or being set up (a machine asked for; or one that exists, pulling its image,
  whose Ray has not joined): the set-up clock, bounded by `cluster.node_setup_wait_s`, since a
  first node of a large image takes tens of minutes to come and is coming all that time;
- nothing on its way (the autoscaler has not asked for a node, or its launches fail: a quota, a
  stock-out): the idle clock, bounded by `cluster.node_wait_s`.
Each clock pauses while the other runs and keeps what it counted; neither restarts. Were the
idle clock to restart after each launch, a type the cloud refuses, asked for again every few
seconds, would never run out of `node_wait_s`; were the set-up clock to restart, a node replaced
during its set-up (a pod evicted, a spot machine taken back) would start a fresh hour.
A launch counts as on its way until `LAUNCH_ANSWER_S` passes without a machine: Ray's v1 report
shows a provider's plain error (GCP's quota) as nothing but a launch pending again at each
update, for ever.
`NodeWait.step` says whether the deployment waits on or gives up (`GiveUp`: the limit and the
reason); `NodeWait.note` gives the progress line when one is due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sweep.driver.autoscaler_status import Pending
from sweep.driver.node_types import NO_REPORT

NODE_WAIT = "cluster.node_wait_s"
SETUP_WAIT = "cluster.node_setup_wait_s"
LAUNCHING = "launching"
SETTING_UP = "being set up"
NONE_PENDING = "none pending"
# A cloud answers a launch with a machine or an error within minutes; Ray's v2 autoscaler gives
# a launch up after ten (`RAY_AUTOSCALER_RECONCILE_REQUEST_STATUS_TIMEOUT_S`), and so does this.
LAUNCH_ANSWER_S = 600.0
NOTE_EVERY_S = 60.0  # a deployment's wait prints at most one line a minute:
REMIND_S = 300.0  # when its state changed, or every five minutes while it stays the same


@dataclass(frozen=True)
class GiveUp:
    """A limit of the wait ran out: its setting and its value."""

    limit: str  # NODE_WAIT or SETUP_WAIT
    limit_s: float
    failure: str = ""  # why the fitting types' launches failed, as the wait last saw it

    def reason(self, wanted: str, last_word: str) -> str:
        """The trials' `no_node` message: the node, the limit, what the autoscaler last said.

        `last_word` is v1's report (`autoscaler_last_word`); autoscaler v2 writes none, so
        without it the failures the wait saw (v2's failed launches) stand in.
        """
        if last_word.startswith(NO_REPORT) and self.failure:
            last_word = self.failure
        during = " launching or being set up" if self.limit == SETUP_WAIT else ""
        return (
            f"no {wanted} came within {self.limit_s:g} s{during} ({self.limit}); "
            f"the autoscaler: {last_word}"
        )


@dataclass
class NodeWait:
    """The two clocks of one deployment's wait for a node."""

    wanted: str  # the node it waits for: "node of type L4 with 1 GPU"
    node_wait_s: float
    setup_wait_s: float
    since: float  # when the wait began (monotonic seconds)
    idle_s: float = 0.0  # counted while nothing that fits was on its way
    setup_s: float = 0.0  # counted while a node that fits was launching or being set up
    state: str = NONE_PENDING
    failure: str = ""  # why the fitting types' latest launches failed, while they do
    _last: float | None = None  # when the clocks were last advanced
    _launching_since: float | None = None  # start of the present run of launches, no machine
    _noted: tuple[str, float] | None = None  # the state last printed, and when

    def first_line(self) -> str:
        """The line printed when the deployment is submitted: what it waits for, how long."""
        return (
            f"waits for a {self.wanted} (the autoscaler adds one): at most {self.node_wait_s:g} s "
            f"while none is on its way ({NODE_WAIT}), {self.setup_wait_s:g} s while one is "
            f"launching or being set up ({SETUP_WAIT})"
        )

    def step(self, now: float, pending: Mapping[str, Pending]) -> GiveUp | None:
        """Advance the clocks to `now`; `pending`: what is on its way, per fitting node type.

        The time since the last step counts on the clock of the state seen then; the state
        seen now runs the next. Returns the limit that ran out, or None to wait on.
        """
        elapsed = max(0.0, now - (self.since if self._last is None else self._last))
        if self.state == NONE_PENDING:
            self.idle_s += elapsed
        else:
            self.setup_s += elapsed
        self._last = now
        self.state = self._state(now, pending)
        if self.idle_s >= self.node_wait_s:
            return GiveUp(NODE_WAIT, self.node_wait_s, self.failure)
        if self.setup_s >= self.setup_wait_s:
            return GiveUp(SETUP_WAIT, self.setup_wait_s, self.failure)
        return None

    def _state(self, now: float, pending: Mapping[str, Pending]) -> str:
        """What is on its way now, and why the launches fail when they do."""
        self.failure = "; ".join(f"{name}: {p.failure}" for name, p in pending.items() if p.failure)
        if any(p.setting_up for p in pending.values()):
            self._launching_since = None
            return SETTING_UP
        if not any(p.underway for p in pending.values()):
            self._launching_since = None
            return NONE_PENDING
        if self._launching_since is None:
            self._launching_since = now
        if now - self._launching_since < LAUNCH_ANSWER_S:
            return LAUNCHING
        self.failure = self.failure or f"launches unanswered for {_span(LAUNCH_ANSWER_S)}"
        return NONE_PENDING

    def note(self, now: float) -> str | None:
        """The progress line due at `now`, or None.

        At most one a minute: when the state changed since the last line (the submission's
        line stands for "none pending": the first change is printed at once), or every five
        minutes while it stays. It names the clock that runs and its limit, e.g.
        "waiting for a node of type L4 with 1 GPU: being set up, 6 min (of 60 min:
        cluster.node_setup_wait_s)".
        """
        state, at = self._noted or (NONE_PENDING, None)
        if state != self.state:
            due = at is None or now - at >= NOTE_EVERY_S
        else:
            due = now - (self.since if at is None else at) >= REMIND_S
        if not due:
            return None
        self._noted = (self.state, now)
        if self.state == NONE_PENDING:
            clock, limit, name = self.idle_s, self.node_wait_s, NODE_WAIT
        else:
            clock, limit, name = self.setup_s, self.setup_wait_s, SETUP_WAIT
        why = f"; {self.failure}" if self.failure else ""
        return (
            f"waiting for a {self.wanted}: {self.state}, {_span(clock)} "
            f"(of {_span(limit)}: {name}{why})"
        )


def _span(seconds: float) -> str:
    """A duration as people read it: seconds up to two minutes, then whole minutes."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
