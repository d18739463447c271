"""A deployment's wait for a node: the set-up clock while one is on its way, the idle clock while
none is (`sweep.driver.node_wait`), and what the autoscaler has on its way
(`sweep.driver.autoscaler_status`), read from reports built with Ray's own classes, as its v1
monitor and its v2 SDK build them."""

import json
import time
from dataclasses import asdict

import pytest
from ray.autoscaler._private.autoscaler import AutoscalerSummary
from ray.autoscaler._private.node_provider_availability_tracker import (
    NodeAvailabilityRecord,
    NodeAvailabilitySummary,
    UnavailableNodeInformation,
)
from ray.autoscaler._private.util import LoadMetricsSummary
from ray.autoscaler.v2.schema import ClusterStatus, LaunchRequest, NodeInfo

from sweep.core.config import ClusterConfig
from sweep.core.errors import ConfigError
from sweep.driver.autoscaler_status import (
    FAILURE_KEPT_S,
    Pending,
    from_v1,
    from_v2,
    pending_by_type,
)
from sweep.driver.node_wait import (
    LAUNCH_ANSWER_S,
    LAUNCHING,
    NODE_WAIT,
    NONE_PENDING,
    SETTING_UP,
    SETUP_WAIT,
    GiveUp,
    NodeWait,
)

L4 = "node of type L4 with 1 GPU"
LAUNCH = {"l4_x1": Pending(launching=1)}
SETUP = {"l4_x1": Pending(setting_up=1)}
REFUSED = {"l4_x1": Pending(launching=1, failure="InsufficientInstanceCapacity: no L4")}
NOTHING: dict = {}


def wait(node_wait_s=10, setup_wait_s=100) -> NodeWait:
    return NodeWait(L4, node_wait_s, setup_wait_s, since=0)


def walk(node_wait: NodeWait, steps: list[tuple[float, dict]]) -> list:
    """Step the wait at each time with what is on its way; what each step returned."""
    return [node_wait.step(at, pending) for at, pending in steps]


def test_a_launch_pending_longer_than_node_wait_s_is_still_waited_for():
    w = wait()
    assert walk(w, [(1, LAUNCH), (15, LAUNCH), (30, LAUNCH)]) == [None, None, None]
    assert (w.state, w.idle_s, w.setup_s) == (LAUNCHING, 1, 29)


def test_a_set_up_longer_than_node_wait_s_is_still_waited_for():
    w = wait()
    assert walk(w, [(1, LAUNCH), (15, SETUP), (60, SETUP)]) == [None, None, None]
    assert (w.state, w.idle_s, w.setup_s) == (SETTING_UP, 1, 59)


def test_nothing_pending_for_node_wait_s_gives_up_naming_that_limit():
    w = wait()
    assert walk(w, [(5, NOTHING), (9.5, NOTHING), (10, NOTHING)]) == [
        None,
        None,
        GiveUp(NODE_WAIT, 10),
    ]
    reason = GiveUp(NODE_WAIT, 10).reason(L4, "l4_x1: 1 launch(es) pending")
    assert reason == (
        "no node of type L4 with 1 GPU came within 10 s (cluster.node_wait_s); "
        "the autoscaler: l4_x1: 1 launch(es) pending"
    )


def test_a_set_up_past_node_setup_wait_s_gives_up_naming_that_limit():
    w = wait()
    assert walk(w, [(1, SETUP), (50, SETUP), (101, SETUP)]) == [
        None,
        None,
        GiveUp(SETUP_WAIT, 100),
    ]
    assert GiveUp(SETUP_WAIT, 100).reason(L4, "no report on l4_x1") == (
        "no node of type L4 with 1 GPU came within 100 s launching or being set up "
        "(cluster.node_setup_wait_s); the autoscaler: no report on l4_x1"
    )


def test_each_clock_pauses_while_the_other_runs_and_keeps_its_count():
    """Launches between stretches of nothing: node_wait_s still runs out, counted in pieces."""
    w = wait()
    steps = [(4, LAUNCH), (30, NOTHING), (35, SETUP), (60, NOTHING), (61, NOTHING)]
    assert walk(w, steps) == [None, None, None, None, GiveUp(NODE_WAIT, 10)]
    assert (w.idle_s, w.setup_s) == (4 + 5 + 1, 26 + 25)


def test_launches_the_cloud_refuses_are_nothing_pending():
    w = wait()
    refusal = "l4_x1: InsufficientInstanceCapacity: no L4"
    assert walk(w, [(5, REFUSED), (10, REFUSED)]) == [None, GiveUp(NODE_WAIT, 10, refusal)]
    assert (w.state, w.failure) == (NONE_PENDING, refusal)
    # Autoscaler v2 writes no report for `autoscaler_last_word`: the refusal the wait saw says it.
    reason = GiveUp(NODE_WAIT, 10, refusal).reason(L4, "no report on l4_x1")
    assert reason.endswith(f"(cluster.node_wait_s); the autoscaler: {refusal}"), reason


def test_a_refused_type_being_set_up_is_still_on_its_way():
    w = wait()
    set_up_after_refusal = {"l4_x1": Pending(setting_up=1, failure="quota")}
    assert walk(w, [(1, set_up_after_refusal), (50, set_up_after_refusal)]) == [None, None]
    assert w.state == SETTING_UP


def test_launches_unanswered_for_ten_minutes_count_as_nothing_pending():
    """v1 shows a provider's plain error only as a launch pending again: it stops counting."""
    w = NodeWait(L4, node_wait_s=1200, setup_wait_s=3600, since=0)
    steps = [(1, LAUNCH), (LAUNCH_ANSWER_S, LAUNCH), (LAUNCH_ANSWER_S + 1, LAUNCH)]
    assert walk(w, steps) == [None, None, None]
    assert w.state == NONE_PENDING and "launches unanswered for 10 min" in w.failure
    unanswered = GiveUp(NODE_WAIT, 1200, "launches unanswered for 10 min")
    assert w.step(LAUNCH_ANSWER_S + 1200, LAUNCH) == unanswered


def test_the_progress_line_comes_at_once_then_at_most_once_a_minute():
    w = NodeWait(L4, node_wait_s=1200, setup_wait_s=3600, since=0)
    lines = {}
    for at, pending in [(1, NOTHING), (2, LAUNCH), (30, SETUP), (62, SETUP), (300, SETUP),
                        (400, SETUP)]:  # fmt: skip
        w.step(at, pending)
        lines[at] = w.note(at)
    assert lines == {
        1: None,  # the submission's line said as much
        2: f"waiting for a {L4}: launching, 0 s (of 60 min: cluster.node_setup_wait_s)",
        30: None,  # changed, but within a minute of the last line
        62: f"waiting for a {L4}: being set up, 60 s (of 60 min: cluster.node_setup_wait_s)",
        300: None,  # the same state: every five minutes
        400: f"waiting for a {L4}: being set up, 7 min (of 60 min: cluster.node_setup_wait_s)",
    }


def test_the_progress_line_of_nothing_pending_names_node_wait_s_and_the_refusal():
    w = NodeWait(L4, node_wait_s=1200, setup_wait_s=3600, since=0)
    w.step(300, REFUSED)
    assert w.note(300) == (
        f"waiting for a {L4}: none pending, 5 min (of 20 min: cluster.node_wait_s; "
        "l4_x1: InsufficientInstanceCapacity: no L4)"
    )
    assert "(cluster.node_wait_s), 3600 s while one is launching" in w.first_line()


def v1_status(**fields) -> dict:
    """The monitor's status as ray/autoscaler/_private/monitor.py writes it under STATUS_KEY."""
    summary = AutoscalerSummary(
        active_nodes={"head": 1}, idle_nodes=None, failed_nodes=[], **fields
    )
    load = LoadMetricsSummary(usage={}, resource_demand=[], pg_demand=[], request_demand=[],
                              node_types=[])  # fmt: skip
    status = {"gcs_request_time": 0.01, "time": time.time(), "monitor_pid": 1,
              "load_metrics_report": asdict(load),
              "autoscaler_report": asdict(summary)}  # fmt: skip
    return json.loads(json.dumps(status))


def test_v1s_report_gives_launches_nodes_being_set_up_and_refusals():
    refused = NodeAvailabilityRecord(
        node_type="gpu_t4_never",
        is_available=False,
        last_checked_timestamp=1.0,
        unavailable_node_information=UnavailableNodeInformation(
            "InsufficientInstanceCapacity", "no T4 capacity\nin us-east-1a"
        ),
    )
    status = v1_status(
        pending_nodes=[("10.0.0.5", "l4_x1", "setting-up"), ("10.0.0.6", "l4_x1", "uninitialized")],
        pending_launches={"l4_x4": 2},
        node_availability_summary=NodeAvailabilitySummary({"gpu_t4_never": refused}),
    )
    assert from_v1(status) == {
        "l4_x1": Pending(launching=0, setting_up=2),
        "l4_x4": Pending(launching=2, setting_up=0),
        "gpu_t4_never": Pending(failure="InsufficientInstanceCapacity: no T4 capacity"),
    }
    assert from_v1(v1_status(pending_nodes=[], pending_launches={})) == {}
    assert from_v1({}) == {}  # a monitor without an autoscaler writes no autoscaler_report


def test_v2s_cluster_status_gives_the_same():
    now = 10_000

    def launch(type_name, count, state, failed_ago=None, details=None):
        failed = None if failed_ago is None else now - failed_ago
        return LaunchRequest(instance_type_name="g2-standard-8", ray_node_type_name=type_name,
                             count=count, state=state, request_ts_s=now - 100,
                             failed_ts_s=failed, details=details)  # fmt: skip

    status = ClusterStatus(
        pending_launches=[launch("l4-x1", 2, LaunchRequest.Status.PENDING)],
        pending_nodes=[
            NodeInfo(
                instance_type_name="g2-standard-8",
                ray_node_type_name="l4-x1",
                instance_id="pod-1",
                ip_address="",
            )
        ],  # fmt: skip
        failed_launches=[
            launch("l4-x4", 1, LaunchRequest.Status.FAILED, 50, "stock-out\ntrace..."),
            launch("l4-x4", 1, LaunchRequest.Status.FAILED, 90, "older"),
            launch("l4-x8", 1, LaunchRequest.Status.FAILED, FAILURE_KEPT_S + 1, "long ago"),
        ],
    )
    assert from_v2(status, now) == {
        "l4-x1": Pending(launching=2, setting_up=1),
        "l4-x4": Pending(failure="stock-out"),
    }
    assert from_v2(ClusterStatus(), now) == {}


def test_without_a_cluster_nothing_is_pending():
    assert pending_by_type() == {}  # not connected: both readers fail, quietly


@pytest.mark.parametrize("value", [0, -5])
def test_node_setup_wait_s_must_be_positive(value):
    with pytest.raises(ConfigError, match=r"cluster.node_setup_wait_s must be > 0"):
        ClusterConfig(node_setup_wait_s=value)
    assert ClusterConfig().node_setup_wait_s == 3600.0
