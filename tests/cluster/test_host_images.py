"""Every host image the shipped cluster files boot has a driver for the pinned torch's CUDA.

The pinned torch comes from scripts/cluster/constraints.txt; which CUDA major it needs, which
driver that takes and which driver each host image brings are the tables of
sweep/worker/cuda_driver.py.
"""

import re
from pathlib import Path

import pytest
import yaml

from sweep.worker.cuda_driver import HOST_IMAGE_DRIVER, host_image_problem

CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "cluster"


def pinned_torch() -> str:
    text = (CLUSTER / "constraints.txt").read_text()
    return re.search(r"^torch==([\d.]+)$", text, re.MULTILINE).group(1)


def host_images(config: dict) -> list[str]:
    """The boot image of each node type: AWS's ImageId, GCP's boot disk's sourceImage."""
    found = []
    for spec in config["available_node_types"].values():
        node = spec["node_config"]
        if "ImageId" in node:
            found.append(node["ImageId"])
        for disk in node.get("disks", []):
            if disk.get("boot"):
                found.append(disk["initializeParams"]["sourceImage"])
    return found


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("l4-*.yaml")), ids=lambda p: p.name)
def test_every_shipped_host_image_runs_the_pinned_torch(path):
    config = yaml.safe_load(path.read_text())
    images = host_images(config)
    assert len(images) == len(config["available_node_types"])  # each type names its image
    problems = {image: host_image_problem(image, pinned_torch()) for image in images}
    assert {image: p for image, p in problems.items() if p} == {}


def test_the_check_refuses_an_old_or_unknown_image():
    old = "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204"
    assert "older than 580.65.06" in host_image_problem(old, pinned_torch())
    assert "driver is unknown" in host_image_problem("latest_dlami", pinned_torch())
    assert "not in TORCH_CUDA_MAJOR" in host_image_problem(old, "9.9.9")


def test_gcp_families_name_the_driver_branch_the_table_gives():
    for image, driver in HOST_IMAGE_DRIVER.items():
        branch = re.search(r"-nvidia-(\d+)$", image)
        if branch:
            assert driver.split(".")[0] == branch.group(1)
