"""The shipped `ray up` configs: valid for Ray, the node image on every node, niceness 0.

Nothing here launches a cloud node: the configs are filled out with the provider's defaults and
validated against Ray's own schema, as `ray up` does before it creates anything.
"""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import fillout_defaults, validate_config

from sweep.driver.driver import NO_PRESTART

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "scripts" / "cluster").glob("l4-*.yaml"))  # `ray up`; KubeRay apart


def node_image_of_kuberay() -> str:
    spec = yaml.safe_load((REPO / "scripts" / "cluster" / "kuberay-l4.yaml").read_text())["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    (image,) = {g["template"]["spec"]["containers"][0]["image"] for g in groups}
    return image


@pytest.fixture(params=CONFIGS, ids=lambda p: p.name)
def config(request):
    return yaml.safe_load(request.param.read_text())


def test_both_clouds_are_shipped():
    assert {p.name for p in CONFIGS} == {"l4-aws.yaml", "l4-gcp.yaml"}


def test_ray_accepts_the_config(config):
    validate_config(fillout_defaults(config))


def test_every_node_runs_the_node_image_and_installs_nothing_at_boot(config):
    image = config["docker"]["image"]
    assert image.rsplit(":", 1)[0].endswith("/llm-sweep-node"), image  # build_image.sh's name
    assert image == node_image_of_kuberay()  # one image for every cluster file (--use keeps it)
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert config[key] == [], key  # the image holds the engines: a node boots into Ray


def test_gpu_workers_get_the_hosts_gpus(config):
    assert "--gpus all" in config["docker"]["worker_run_options"]
    assert not any("--gpus" in o for o in config["docker"]["run_options"])  # the head has none


def test_workers_start_at_niceness_0_and_none_ahead_of_tasks(config):
    settings = ["RAY_worker_niceness=0", *(f"RAY_{name}=0" for name in NO_PRESTART)]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        for command in starts:
            assert all(f"{s} " in command.split("ray start")[0] for s in settings), command


def test_the_code_is_synced_without_the_venv_or_results(config):
    assert {".venv", "results", ".git"} <= set(config["rsync_exclude"])


def test_gpu_node_types_start_from_zero_and_declare_l4(config):
    gpu_types = {
        name: spec
        for name, spec in config["available_node_types"].items()
        if spec["resources"].get("GPU")
    }
    assert gpu_types
    for spec in gpu_types.values():
        assert spec["min_workers"] == 0  # the autoscaler adds them: the driver must wait
        assert spec["resources"]["accelerator_type:L4"] >= 1


def test_gcp_gpu_nodes_install_the_nvidia_driver():
    config = yaml.safe_load((REPO / "scripts" / "cluster" / "l4-gcp.yaml").read_text())
    for spec in config["available_node_types"].values():
        if not spec["resources"].get("GPU"):
            continue
        items = spec["node_config"]["metadata"]["items"]
        assert {"key": "install-nvidia-driver", "value": "True"} in items
