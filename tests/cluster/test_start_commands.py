"""Every node's start command, run as its platform runs it, against Ray's own option parser.

The shipped `ray up` YAMLs and the KubeRay manifest are turned into the command lines and
environments that Ray's launcher and KubeRay v1.7.0 give a node (tests/cluster/start_commands.py),
run under `bash -c` with set-up skipped and `ray` replaced by Ray's own `ray start` parser, and
what the node would start with is checked against what its node type tells the autoscaler.
"""

import copy
from pathlib import Path

import pytest
import yaml

from tests.cluster.start_commands import kuberay_command, ray_up_commands, run

CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "cluster"
KUBERAY = CLUSTER / "kuberay-l4.yaml"
HEAD_IP = "10.0.0.1"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kuberay_groups() -> list:
    return [None] + [g["groupName"] for g in load(KUBERAY)["spec"]["workerGroupSpecs"]]


def ray_up_types() -> list:
    return [
        (path.name, name)
        for path in sorted(CLUSTER.glob("l4-*.yaml"))
        for name in load(path)["available_node_types"]
    ]


@pytest.mark.parametrize("group", kuberay_groups(), ids=lambda g: g or "head")
def test_every_kuberay_pod_starts_ray_with_what_its_group_declares(group, tmp_path):
    manifest = load(KUBERAY)
    command = kuberay_command(manifest, group)
    ran = run(command, tmp_path)
    assert ran.returncode == 0, ran.output
    assert len(ran.starts) == 1, ran.output
    start = ran.starts[0]
    assert start["block"]  # KubeRay's pods live as long as `ray start` does
    assert start["head"] == (group is None)
    if group is not None:
        assert start["address"] == command.env["FQ_RAY_IP"] + ":6379"
    assert start["resources"] == {"GPU": 0.0, **command.declared}


@pytest.mark.parametrize("name,node_type", ray_up_types())
def test_every_ray_up_node_starts_ray_with_what_its_type_declares(name, node_type, tmp_path):
    config = load(CLUSTER / name)
    starts = []
    for command in ray_up_commands(config, node_type, HEAD_IP):
        ran = run(command, tmp_path)
        assert ran.returncode == 0, ran.output
        starts += ran.starts
    assert len(starts) == 1
    start = starts[0]
    assert start["head"] == (node_type == config["head_node_type"])
    if not start["head"]:
        assert start["address"] == f"{HEAD_IP}:6379"
    assert start["resources"] == {"GPU": 0.0, **command.declared}


def test_a_refused_start_fails_the_check(tmp_path):
    """The worker as shipped before: custom resources in rayStartParams, KubeRay's command run
    through an unquoted `$KUBERAY_GEN_RAY_START_CMD` after set-up. Bash splits the JSON at its
    spaces and keeps its quotes; Ray's parser refuses the pieces."""
    manifest = copy.deepcopy(load(KUBERAY))
    manifest["metadata"]["annotations"] = {"ray.io/overwrite-container-cmd": "true"}
    group = manifest["spec"]["workerGroupSpecs"][0]
    custom = ", ".join(f'\\"{k}\\": {int(float(v))}' for k, v in group.pop("resources").items())
    group["rayStartParams"] = {"resources": f'"{{{custom}}}"'}
    container = group["template"]["spec"]["containers"][0]
    container["command"] = ["/bin/bash", "-c", "--"]
    container["args"] = ["pip install -q -e /home/ray/llm-sweep && "
                         "{ ulimit -n 65536; $KUBERAY_GEN_RAY_START_CMD; }"]  # fmt: skip
    ran = run(kuberay_command(manifest, group["groupName"]), tmp_path)
    assert ran.returncode == 2
    assert "Got unexpected extra arguments (1," in ran.output
    assert ran.starts == []


def test_the_operator_refuses_resources_declared_twice():
    manifest = copy.deepcopy(load(KUBERAY))
    group = manifest["spec"]["workerGroupSpecs"][0]
    group["rayStartParams"] = {"num-gpus": "1"}
    with pytest.raises(ValueError, match="resources in both"):
        kuberay_command(manifest, group["groupName"])
