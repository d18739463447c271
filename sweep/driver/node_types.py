"""The nodes a cluster can still launch: the autoscaler's node types, read on the driver.

Right after `ray up` only the head is alive (every GPU type of the shipped YAMLs has
`min_workers: 0`); a deployment that no alive node fits is then waiting for the autoscaler, not
unplaceable. `launchable_node_types` says what the autoscaler may add, so that placement fails a
deployment only when no node it can ever launch fits it:
- autoscaler v2 publishes its node groups (resources, max count) in the GCS;
- autoscaler v1 (`ray up` on VMs, Ray's fake multi-node provider) publishes none: its config is
  the file the monitor was started with (`--autoscaling-config`, found on the command line of the
  monitor process of this node: the driver runs on the head under `ray job submit`; `~`
  expanded), or else `~/ray_bootstrap_config.yaml`, where `ray up` puts it on the head.
`None` means no autoscaler was found: the alive nodes are all there will be.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the config on the head
MONITOR_SCRIPT = "autoscaler/_private/monitor.py"
CONFIG_FLAG = "--autoscaling-config="
STATUS_KEY = "__autoscaling_status"  # the v1 monitor's report in the GCS key-value store
NO_REPORT = "no report on "  # how `autoscaler_last_word` begins when it has nothing to say


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler may launch."""

    name: str
    resources: dict[str, float] | None = None  # None: not known, so assumed to fit anything
    max_workers: int = 0

    def fits(self, needed: dict[str, float]) -> bool:
        """Whether one node of this type can hold a task needing `needed`."""
        return self.resources is None or resources_fit(needed, self.resources)


def launchable_node_types() -> list[NodeType] | None:
    """The node types the running cluster's autoscaler may launch; None without an autoscaler.

    When an autoscaler runs but its node types cannot be read, the list holds one type of unknown
    resources: placement then waits rather than fail what a node it cannot see might host.
    """
    types = _from_gcs()
    if types is not None:
        return types
    for config in (monitor_config_path(gcs_address()), bootstrap_config()):
        if config is not None:
            types = node_types_of(config)
            if types is not None:
                return types
    if _autoscaler_reports():
        log.warning("an autoscaler runs but its node types are unknown: deployments will wait")
        return [NodeType("unknown", None, -1)]
    return None


def node_types_of(path: Path) -> list[NodeType] | None:
    """The worker node types of an autoscaling config file (the head type is not launched).

    Reads `ray up`'s cluster config and a KubeRay `RayCluster` manifest (its worker groups).
    """
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read the autoscaling config %s: %s", path, exc)
        return None
    if config.get("kind") == "RayCluster":
        return worker_groups(config)
    if config.get("max_workers", -1) == 0:
        log.warning("the autoscaling config %s allows no worker node (max_workers: 0)", path)
        return []
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head or not isinstance(spec, dict):
            continue
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        max_workers = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if max_workers != 0:
            types.append(NodeType(str(name), resources, max_workers))
    return types


def worker_groups(raycluster: dict[str, Any]) -> list[NodeType]:
    """The node types of a KubeRay `RayCluster`: one per worker group that may scale up.

    A group's resources are what KubeRay hands `ray start`: the group's top-level `resources`
    when it has them (the way the manifests here declare them), else `num-cpus` / `num-gpus` from
    `rayStartParams` or the Ray container's limits (`cpu`, `nvidia.com/gpu`), plus the custom
    `resources` of `rayStartParams` (a JSON object written as a quoted string).
    """
    types = []
    for group in (raycluster.get("spec") or {}).get("workerGroupSpecs") or []:
        params = dict(group.get("rayStartParams") or {})
        containers = (((group.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
        limits = (containers[0].get("resources") or {}).get("limits") or {}
        resources = json.loads(str(params.get("resources", "{}")).strip().strip('"').replace(
            '\\"', '"'))  # fmt: skip
        for name, value in (group.get("resources") or {}).items():
            key = {"cpu": "num-cpus", "memory": None}.get(name.lower(), name)
            if name.lower().endswith("gpu"):
                params["num-gpus"] = value
            elif key == "num-cpus":
                params[key] = value
            elif key:
                resources[key] = _quantity(value)
        cpus = params.get("num-cpus", limits.get("cpu", 0))
        resources["CPU"] = _quantity(cpus)
        resources["GPU"] = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        maximum = int(group.get("maxReplicas", 0) or 0)
        if maximum:
            types.append(NodeType(str(group.get("groupName")), resources, maximum))
    return types


def _quantity(value: Any) -> float:
    """A Kubernetes quantity of CPUs or devices as a number ('500m' is 0.5)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _from_gcs() -> list[NodeType] | None:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # a private API: absent or changed, fall back to the config file
        return None
    if config is None or not config.node_group_configs:
        return None
    return [
        NodeType(group.name, dict(group.resources), int(group.max_count))
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def monitor_config_path(gcs: str | None) -> Path | None:
    """The config file of the autoscaler monitor of the cluster at `gcs` on this node, if any.

    Every head runs a monitor; only one started with `--autoscaling-config` can launch nodes.
    Its `--gcs-address` must be this driver's cluster: tests (and users) may run several. The
    flag is on the command line as written (`ray up`'s is `~/ray_bootstrap_config.yaml`): `~`
    is expanded here.
    """
    try:
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if not any(MONITOR_SCRIPT in part for part in cmdline):
                continue
            if gcs and f"--gcs-address={gcs}" not in cmdline:
                continue
            for part in cmdline:
                if part.startswith(CONFIG_FLAG):
                    return Path(part[len(CONFIG_FLAG) :]).expanduser()
    except Exception as exc:  # process listing can be denied; the bootstrap file may still do
        log.debug("cannot list processes: %s", exc)
    return None


def bootstrap_config() -> Path | None:
    """`ray up`'s copy of the cluster config on the head, read when the GCS and monitor tell none.

    Ray's v1 autoscaler, which `ray up` runs, never publishes its node types to the GCS.
    """
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    return path if path.is_file() else None


def gcs_address() -> str | None:
    """The GCS address of the connected cluster; None when not connected (it never connects)."""
    try:
        import ray

        # Ray's runtime context would start a local Ray when none is connected: ask first.
        return ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    except Exception:  # not connected: any monitor's file is as good a guess as none
        return None


def v1_status() -> dict[str, Any]:
    """The v1 monitor's last status in the GCS key-value store (`STATUS_KEY`); {} when none.

    Raises what Ray raises when not connected; callers treat that as no report.
    """
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(STATUS_KEY) or b"{}")


def _autoscaler_reports() -> bool:
    """Whether this cluster's autoscaler reports node types it may launch.

    A head without an autoscaling config still runs a monitor, whose report then lists no
    launchable type (`node_availabilities` is empty): its alive nodes are all there will be.
    """
    try:
        report = v1_status().get("autoscaler_report") or {}
        summary = report.get("node_availability_summary") or {}
        return bool(summary.get("node_availabilities"))
    except Exception:
        return False


def resources_fit(needed: dict[str, float], offered: dict[str, Any]) -> bool:
    """Whether a node offering `offered` resources can hold a task needing `needed`."""
    return all(float(offered.get(key, 0.0)) >= amount for key, amount in needed.items())


def autoscaler_last_word(types: list[str]) -> str:
    """What the cluster's autoscaler last reported about launching nodes of `types`.

    Read from the v1 monitor's report in the GCS (a failed launch's category and description,
    launches still pending, nodes that failed to start); "no report" when there is none.
    """
    try:
        report = v1_status().get("autoscaler_report") or {}
    except Exception:  # not connected, or the report's format changed
        report = {}
    words = []
    availabilities = (report.get("node_availability_summary") or {}).get("node_availabilities")
    for name in types:
        record = (availabilities or {}).get(name) or {}
        info = record.get("unavailable_node_information") or {}
        if not record.get("is_available", True) and info:
            description = str(info.get("description", "")).strip().splitlines()
            words.append(f"{name}: {info.get('category', 'unavailable')}"
                         + (f" ({description[0][:200]})" if description else ""))  # fmt: skip
        pending = (report.get("pending_launches") or {}).get(name)
        if pending:
            words.append(f"{name}: {pending} launch(es) pending")
        failed = sum(1 for entry in report.get("failed_nodes") or () if entry[-1:] == [name])
        if failed:
            words.append(f"{name}: {failed} node(s) failed to start")
    if not words:
        return NO_REPORT + (", ".join(types) if types else "any node type")
    return "; ".join(words)
