"""A node's start command as its platform builds and runs it, for the tests.

- `ray up` (Ray 2.60's launcher, the code called here): a head's `head_start_ray_commands` get
  autoscaler v2's exports (`commands.get_or_create_head_node`, `with_envs`), a worker's
  `worker_start_ray_commands` get `RAY_HEAD_IP` (`with_head_node_ip`); each runs with the node
  type's resources exported as RAY_OVERRIDE_RESOURCES (`updater.py`,
  `command_runner._with_environment_variables`) under `bash -c` in the container.
- KubeRay v1.7.0 (`ray-operator/controllers/ray/common/pod.go`, rewritten here as it reads):
  `updateRayStartParamsResources` folds a group's top-level `resources` into `rayStartParams`,
  `setMissingRayStartParams` adds the address, `block` and ports, `generateRayStartCommand` adds
  `num-cpus`, `memory` and `num-gpus` from the container's limits and writes
  `ray start --key=value ...` (`convertParamMap`: keys sorted, a value as the manifest gives it);
  `BuildPod` runs `ulimit -n ...; <that>` as `/bin/bash -c -- ...` unless the RayCluster's
  `ray.io/overwrite-container-cmd` annotation is "true" or the container's own command already
  says `ray start`; the generated command is in the env as KUBERAY_GEN_RAY_START_CMD.

`run` executes a command with stand-ins first on PATH: `ray` is Ray's own option parser
(tests/cluster/ray_cli.py, which logs what `ray start` would start with), and the set-up
programs (`pip`, `uv`, `bash .../piece.sh`) do nothing: set-up is skipped, the start is not.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OVERWRITE = "ray.io/overwrite-container-cmd"
HEAD_PORT = "6379"
METRICS_PORT = "8080"  # utils.DefaultMetricsPort
AGENT_PORT = "52365"  # utils.DefaultDashboardAgentListenPort
ULIMIT = "ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}"
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def quantity(text: Any) -> float:
    """A Kubernetes quantity as a number ("500m" is 0.5, "16Gi" is 17179869184)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _go_number(value: float) -> str:
    """A float64 as Go's encoding/json writes it (1 as 1, 0.5 as 0.5)."""
    return str(int(value)) if value == int(value) else repr(value)


@dataclass
class Command:
    """What a node runs: its argv, the environment the platform gives it, what it declares."""

    argv: list[str]
    env: dict[str, str]
    declared: dict[str, float]  # the resources its node type (or group) tells the autoscaler


# --- KubeRay ---------------------------------------------------------------------------------


def _fold_group_resources(params: dict[str, str], group_resources: dict[str, str]) -> None:
    """pod.go `updateRayStartParamsResources`."""
    custom = {}
    for name, value in (group_resources or {}).items():
        lowered = name.lower()
        if lowered == "cpu":
            params["num-cpus"] = str(math.ceil(quantity(value)))
        elif lowered == "memory":
            params["memory"] = str(math.ceil(quantity(value)))
        elif lowered.endswith("gpu"):
            params["num-gpus"] = str(math.ceil(quantity(value)))
        else:
            custom[name] = quantity(value)
    if custom:
        body = ",".join(f"{json.dumps(k)}:{_go_number(v)}" for k, v in sorted(custom.items()))
        params["resources"] = "'{" + body + "}'"


def _fill_missing(params: dict[str, str], head: bool, address: str) -> None:
    """pod.go `setMissingRayStartParams`."""
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
    else:
        params.setdefault("address", address)
    params.setdefault("metrics-export-port", METRICS_PORT)
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", AGENT_PORT)


def _from_limits(params: dict[str, str], limits: dict[str, Any], requests: dict[str, Any]):
    """pod.go `generateRayStartCommand`: CPUs, memory and GPUs from the container's resources."""
    if "num-cpus" not in params:
        cpu = limits.get("cpu", requests.get("cpu"))
        if cpu is not None and quantity(cpu):
            params["num-cpus"] = str(math.ceil(quantity(cpu)))
    if "memory" not in params and limits.get("memory") is not None:
        params["memory"] = str(math.ceil(quantity(limits["memory"])))
    for key in sorted(limits):
        if "num-gpus" not in params and key.endswith("gpu") and quantity(limits[key]):
            params["num-gpus"] = str(math.ceil(quantity(limits[key])))


def convert_param_map(params: dict[str, str]) -> str:
    """pod.go `convertParamMap`."""
    special = ("log-color", "include-dashboard", "include-log-monitor")
    flags = ""
    for option in sorted(params):
        argument = params[option]
        if argument.lower() in ("true", "false") and option not in special:
            if argument.lower() == "true":
                flags += f" --{option} "
        else:
            flags += f" --{option}={argument} "
    return flags


def kuberay_command(
    raycluster: dict[str, Any], group: str | None, head_host: str | None = None
) -> Command:
    """The Ray container's command and environment for the head (`group` None) or a worker group.

    `head_host` stands for the head Service's name (what the cluster's DNS resolves), if given.
    """
    spec = raycluster["spec"]
    head_params = {k: str(v) for k, v in spec["headGroupSpec"].get("rayStartParams", {}).items()}
    port = head_params.get("port", HEAD_PORT)
    name = raycluster["metadata"]["name"]
    fqdn = head_host or f"{name}-head-svc.default.svc.cluster.local"
    if group is None:
        group_spec = spec["headGroupSpec"]
    else:
        group_spec = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == group)
    params = {k: str(v) for k, v in group_spec.get("rayStartParams", {}).items()}
    if group_spec.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & set(
        params
    ):
        # utils/validation.go `validateRayGroupResources`: the operator refuses the RayCluster
        raise ValueError(f"{group or 'head'}: resources in both rayStartParams and `resources`")
    _fold_group_resources(params, group_spec.get("resources") or {})
    _fill_missing(params, head=group is None, address=f"{fqdn}:{port}")
    container = copy.deepcopy(group_spec["template"]["spec"]["containers"][0])
    resources = container.get("resources") or {}
    _from_limits(params, resources.get("limits") or {}, resources.get("requests") or {})
    kind = "ray start --head" if group is None else "ray start"
    start = f"{kind} {convert_param_map(params)}"
    given = "".join(
        f" {word} " for word in container.get("command", []) + container.get("args", [])
    )
    annotations = raycluster["metadata"].get("annotations") or {}
    if annotations.get(OVERWRITE, "").lower() != "true" and "ray start" not in given:
        generated = f"{ULIMIT}; {start}"
        argv = ["/bin/bash", "-c", "--", f"{given} && {generated}" if given else generated]
    else:
        argv = container.get("command", []) + container.get("args", [])
    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    env.update(FQ_RAY_IP=fqdn, RAY_IP=f"{name}-head-svc", RAY_CLUSTER_NAME=name,
               KUBERAY_GEN_RAY_START_CMD=start, RAY_PORT=port)  # fmt: skip
    return Command(argv, env, kuberay_declared(raycluster, group))


def kuberay_declared(raycluster: dict[str, Any], group: str | None) -> dict[str, float]:
    """A group's resources as Ray's own KubeRay autoscaler reads them from the RayCluster."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    cr = copy.deepcopy(raycluster)
    cr["metadata"].setdefault("namespace", "default")
    types = _derive_autoscaling_config_from_ray_cr(cr)["available_node_types"]
    declared = types["headgroup" if group is None else group]["resources"]
    return {k: float(v) for k, v in declared.items() if k != "memory"}


# --- ray up ----------------------------------------------------------------------------------


def ray_up_commands(config: dict[str, Any], node_type: str, head_ip: str) -> list[Command]:
    """Each start command of a `ray up` node type, as Ray's launcher runs it in the container."""
    from ray.autoscaler._private.command_runner import _with_environment_variables
    from ray.autoscaler._private.util import with_envs, with_head_node_ip

    resources = config["available_node_types"][node_type]["resources"]
    if node_type == config["head_node_type"]:
        env = {"RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": "i-head",
               "RAY_NODE_TYPE_NAME": node_type}  # fmt: skip
        commands = with_envs(config["head_start_ray_commands"], env)
    else:
        commands = with_head_node_ip(config["worker_start_ray_commands"], head_ip)
    override = {"RAY_OVERRIDE_RESOURCES": resources}
    declared = {k: float(v) for k, v in resources.items()}
    return [
        Command(["/bin/bash", "-c", _with_environment_variables(c, override)], {}, declared)
        for c in commands
    ]


# --- running ---------------------------------------------------------------------------------


def stand_ins(folder: Path) -> Path:
    """A folder of stand-ins to put first on PATH (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {
        "ray": f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "ray_cli.py"}" "$@"\n',
        "pip": "#!/bin/sh\nexit 0\n",
        "pip3": "#!/bin/sh\nexit 0\n",
        "uv": "#!/bin/sh\nexit 0\n",
        "bash": '#!/bin/sh\ncase "$1" in */piece.sh) exit 0 ;; esac\nexec /bin/bash "$@"\n',
    }
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


@dataclass
class Ran:
    returncode: int
    output: str
    starts: list[dict[str, Any]]  # what each `ray start` would start with (ray_cli.py's log)


def run(command: Command, folder: Path, timeout: float = 60) -> Ran:
    """Run `command` as its platform does, with the stand-ins of `folder` first on PATH."""
    log = folder / "ray-starts.jsonl"
    log.unlink(missing_ok=True)
    home = folder / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": f"{stand_ins(folder / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "RAY_STAND_IN_LOG": str(log),
        **command.env,
    }
    done = subprocess.run(command.argv, env=env, capture_output=True, text=True, timeout=timeout)
    starts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return Ran(done.returncode, done.stdout + done.stderr, starts)
