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
from sweep.telemetry import nvml_module, nvml_text

# The oldest Linux driver of each CUDA major version (NVIDIA's CUDA toolkit release notes, table
# "CUDA Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility").
MINIMUM_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


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
