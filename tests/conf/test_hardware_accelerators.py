"""Every hardware option pins deployments to an accelerator type Ray sets on its own (issue 18).

Ray labels a node `accelerator_type:<X>` from the GPU name NVML reports, through
`NvidiaGPUAcceleratorManager`; a label it never sets (`A100-80G`) leaves a deployment with
nowhere to go. The card names below are what NVML reports for each card the options describe.
"""

from pathlib import Path

import pytest
import ray.util.accelerators.accelerators as ray_accelerators  # every constant Ray names
import yaml
from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

REPO = Path(__file__).resolve().parents[2]
HARDWARE = {
    p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "conf" / "hardware").glob("*.yaml")
}

# NVML's device names of the cards each option describes (nvidia-smi --query-gpu=name).
NVML_NAMES = {
    "l4": ["NVIDIA L4"],
    "t4": ["Tesla T4"],
    "a100_80g": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"],
    "h100": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"],
    "h200": ["NVIDIA H200", "NVIDIA H200 NVL"],
}
# Ray's own note: these two "are not auto-added to nodes, you'll have to add them manually".
NOT_DETECTED = {ray_accelerators.NVIDIA_A100_40G, ray_accelerators.NVIDIA_A100_80G}
RAY_TYPES = {
    value
    for name, value in vars(ray_accelerators).items()
    if name.isupper() and isinstance(value, str)
} - NOT_DETECTED


def test_every_gpu_option_is_named_here():
    gpus = {name for name, option in HARDWARE.items() if option.get("accelerator_type")}
    assert gpus == set(NVML_NAMES)
    assert HARDWARE["cpu"].get("accelerator_type") is None


@pytest.mark.parametrize("name", sorted(NVML_NAMES))
def test_accelerator_type_is_one_ray_detects(name):
    wanted = HARDWARE[name]["accelerator_type"]
    assert wanted in RAY_TYPES, f"{name}: Ray never labels a node {wanted!r}"
    for card in NVML_NAMES[name]:
        detected = NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(card)
        assert detected == wanted, f"{card}: Ray labels it {detected!r}, {name} asks {wanted!r}"


def test_a100_80g_is_told_apart_by_its_memory():
    # Ray labels 40 GB and 80 GB A100s alike; the option's memory is what separates them
    # (sweep.measure.telemetry.check_gpu_memory compares it with the card's).
    assert HARDWARE["a100_80g"]["accelerator_type"] == ray_accelerators.NVIDIA_A100
    assert HARDWARE["a100_80g"]["memory_gb"] == 80
