"""What the cluster's autoscaler has on its way now, per node type: launches, nodes being set up.

A node the autoscaler adds is first a launch (the cloud, or Kubernetes, is asked for a machine),
then a node being set up (the machine exists; its image is pulled, `ray start` has not joined
yet), then an alive Ray node. `sweep.driver.node_wait` tells a deployment waiting through the first
two from one whose node never comes; this module reads them where Ray 2.60 publishes them:
- autoscaler v2 (`ray up`'s since Ray 2.50, KubeRay's): the cluster status in the GCS
  (`ray.autoscaler.v2.sdk.get_cluster_status`): `pending_launches` (a `LaunchRequest` per node
  type, with its count), `pending_nodes` (instances allocated whose Ray has not joined) and
  `failed_launches` (kept after they fail, with when and why);
- autoscaler v1 (`ray up` with `RAY_UP_enable_autoscaler_v2=0`, `ray start --head
  --autoscaling-config`, Ray's fake multi-node provider): the monitor's report in the GCS
  key-value store (`STATUS_KEY`: `ray/autoscaler/_private/monitor.py` writes
  `AutoscalerSummary` there as JSON): `pending_launches` ({type: count}), `pending_nodes`
  ([ip, type, status] of nodes not up to date yet), and `node_availability_summary`, where a
  type whose latest launch failed is not available, with the failure's category and text
  (when the provider raised a `NodeLaunchException`, as AWS's does for a quota or a
  stock-out; a plain error shows only as the launch pending again: `sweep.driver.node_wait` bounds
  it).
It hands on plain data, `Pending` per node type. Whatever cannot be read counts as nothing
pending (and is logged at debug level): the wait then runs on `cluster.node_wait_s`, and no
sweep stops over a report it could not read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sweep.driver.node_types import gcs_address, v1_status

log = logging.getLogger(__name__)
# A v2 launch that failed longer ago than this no longer marks its type as failing: v1 forgets a
# type's failed launch as late (`AUTOSCALER_NODE_AVAILABILITY_MAX_STALENESS_S`), or at its next
# successful launch.
FAILURE_KEPT_S = 30 * 60


@dataclass(frozen=True)
class Pending:
    """What one node type has on its way."""

    launching: int = 0  # launches asked for and not answered yet
    setting_up: int = 0  # machines that exist and whose Ray has not joined yet
    failure: str = ""  # why its latest launch failed ("" when it did not)

    @property
    def underway(self) -> bool:
        """Whether a node of this type is on its way.

        A machine being set up is. A launch is unless the type's latest launch failed: a type
        the cloud refuses (a quota, a stock-out) is asked again and again, and those launches,
        each answered no within seconds, are no node on its way.
        """
        return self.setting_up > 0 or (self.launching > 0 and not self.failure)


def pending_by_type(now: float | None = None) -> dict[str, Pending]:
    """Per node type, what the connected cluster's autoscaler has on its way (v2, else v1).

    Never raises: a status that cannot be read is nothing pending.
    """
    address = gcs_address()
    if address is None:
        return {}  # not connected: reading Ray's key-value store would start a local Ray
    now = time.time() if now is None else now
    for version, read in (("v2", _read_v2), ("v1", _read_v1)):
        try:
            found = read(address, now)
        except Exception as exc:  # no such autoscaler, or a format Ray changed
            log.debug("no autoscaler %s status: %s", version, exc)
            continue
        if found:
            return found
    return {}


def _read_v2(address: str, now: float) -> dict[str, Pending]:
    from ray.autoscaler.v2.sdk import get_cluster_status

    return from_v2(get_cluster_status(address, timeout=5), now)


def _read_v1(address: str, now: float) -> dict[str, Pending]:
    return from_v1(v1_status())


def from_v2(status: Any, now: float) -> dict[str, Pending]:
    """`Pending` per node type from autoscaler v2's `ClusterStatus`, read at `now` (unix s)."""
    launching: dict[str, int] = {}
    for request in status.pending_launches:
        name = request.ray_node_type_name
        launching[name] = launching.get(name, 0) + int(request.count)
    setting_up: dict[str, int] = {}
    for node in status.pending_nodes:
        setting_up[node.ray_node_type_name] = setting_up.get(node.ray_node_type_name, 0) + 1
    failures: dict[str, tuple[float, str]] = {}  # type -> its latest failure: when, why
    for request in status.failed_launches:
        at = float(request.failed_ts_s or request.request_ts_s or 0)
        name = request.ray_node_type_name
        if now - at <= FAILURE_KEPT_S and at >= failures.get(name, (-1.0, ""))[0]:
            failures[name] = (at, _first_line(request.details) or "launch failed")
    return _by_type(launching, setting_up, {k: why for k, (_, why) in failures.items()})


def from_v1(status: dict[str, Any]) -> dict[str, Pending]:
    """`Pending` per node type from the v1 monitor's status (the JSON of `STATUS_KEY`)."""
    report = status.get("autoscaler_report") or {}
    launching = {str(k): int(v) for k, v in (report.get("pending_launches") or {}).items()}
    setting_up: dict[str, int] = {}
    for _ip, name, _status in report.get("pending_nodes") or ():
        setting_up[str(name)] = setting_up.get(str(name), 0) + 1
    availability = (report.get("node_availability_summary") or {}).get("node_availabilities")
    failures = {}
    for name, record in (availability or {}).items():
        if record and not record.get("is_available", True):
            info = record.get("unavailable_node_information") or {}
            why = ": ".join(filter(None, (info.get("category"),
                                          _first_line(info.get("description")))))  # fmt: skip
            failures[str(name)] = why or "launch failed"
    return _by_type(launching, setting_up, failures)


def _by_type(
    launching: dict[str, int], setting_up: dict[str, int], failures: dict[str, str]
) -> dict[str, Pending]:
    names = launching.keys() | setting_up.keys() | failures.keys()
    return {
        name: Pending(launching.get(name, 0), setting_up.get(name, 0), failures.get(name, ""))
        for name in names
    }


def _first_line(text: str | None) -> str:
    """A failure's first line, cut to 200 characters (a cloud's error can run to pages)."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[0][:200] if lines else ""
