"""Whether a node's NVIDIA driver can run the CUDA that the installed torch was built with.

A torch wheel carries its CUDA runtime, and a CUDA runtime needs a driver at least as new as
its major version's first release (NVIDIA's minor-version compatibility: any 12.x runs on a
12.0 driver, 13.x on a 13.0 one). With an older driver the engine fails at its first CUDA call,
after the model download, with a message about "the CUDA driver version is insufficient": a
GPU deployment checks first and fails in one line that names both versions. vLLM 0.32 pins
torch 2.13.0, built for CUDA 13.0 (docs/gpu-checklist.md).
"""

from __future__ import annotations

from sweep.core import records as R
from sweep.core.errors import BackendError
from sweep.measure.telemetry import nvml_module, nvml_text

# The oldest Linux driver of each CUDA major version (NVIDIA's CUDA toolkit release notes, table
# "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility").
MINIMUM_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# The CUDA major of torch's wheels on PyPI (the default index), for the torch that
# scripts/cluster/constraints.txt pins: its `cuda-toolkit==13.0.*` requirement.
TORCH_CUDA_MAJOR = {"2.13.0": 13}
# The host images the shipped cluster files boot (scripts/cluster/l4-*.yaml), and the oldest NVIDIA
# driver each brings. A node runs the node image in docker on this host: the host's driver is the
# one the container's CUDA meets. AWS: the Deep Learning Base AMI with Single CUDA (Ubuntu 24.04),
# resolved by EC2 from its public SSM parameter at launch (its release notes: driver 595.x, CUDA
# 13.2); GCP: a Deep Learning VM family whose name carries its driver branch (R580 begins at
# 580.65.06). Find the current ones with the commands in docs/gpu-checklist.md.
HOST_IMAGE_DRIVER = {
    "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-with-single-cuda-ubuntu-24.04/latest/ami-id":
        "595.58.03",
    "projects/deeplearning-platform-release/global/images/family/common-cu129-ubuntu-2204-nvidia-580":
        "580.65.06",
    # What the shipped files named before: CUDA 12.4's family (R550, from 550.54.15), too old.
    "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204":
        "550.54.15",
}  # fmt: skip


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def driver_problem(cuda: str | None, driver: str | None) -> str | None:
    """Why a driver cannot run a CUDA runtime; None when it can or either is unknown."""
    if not cuda or not driver:
        return None
    needed = MINIMUM_DRIVER.get(_version(cuda)[0])
    if needed is None or _version(driver) >= _version(needed):
        return None
    return (
        f"the NVIDIA driver here is {driver}, older than {needed}, which torch's CUDA {cuda} "
        f"needs: update the node image's driver (docs/gpu-checklist.md)"
    )


def host_image_problem(image: str, torch_version: str) -> str | None:
    """Why a host image cannot run the pinned torch's CUDA; None when it can."""
    major = TORCH_CUDA_MAJOR.get(torch_version)
    if major is None:
        return f"torch {torch_version} is not in TORCH_CUDA_MAJOR: add its CUDA major"
    driver = HOST_IMAGE_DRIVER.get(image)
    if driver is None:
        return f"{image!r} is not in HOST_IMAGE_DRIVER: its driver is unknown"
    needed = MINIMUM_DRIVER[major]
    if _version(driver) >= _version(needed):
        return None
    return (
        f"{image} brings NVIDIA driver {driver}, older than {needed}, which torch "
        f"{torch_version}'s CUDA {major} needs: pick a newer host image (docs/gpu-checklist.md)"
    )


def check_cuda_driver() -> None:
    """Fail a GPU deployment in one line when this node's driver is too old for torch's CUDA.

    Quiet where NVML or torch cannot tell (a CPU machine, a driver NVML cannot read).
    """
    nvml = nvml_module()
    if nvml is None:
        return
    try:
        import torch

        problem = driver_problem(torch.version.cuda, nvml_text(nvml.nvmlSystemGetDriverVersion()))
    except Exception:  # a guard, not a requirement
        return
    if problem:
        raise BackendError(problem, R.ERROR_BACKEND_START)
