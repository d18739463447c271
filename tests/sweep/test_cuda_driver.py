"""A node whose NVIDIA driver is older than torch's CUDA needs: one line, before the engine."""

import pytest

from sweep.worker.cuda_driver import driver_problem


@pytest.mark.parametrize(
    ("cuda", "driver", "too_old"),
    [
        ("13.0", "580.65.06", False),
        ("13.0", "575.51.03", True),  # a CUDA 12.9 driver: vLLM 0.32's torch cannot run
        ("13.0", "550.54.14", True),  # GCP's common-cu124 image
        ("12.8", "525.60.13", False),  # minor-version compatibility: any 12.x on a 12.0 driver
        ("12.8", "520.61.05", True),
        ("12.4", "560.35.03", False),
        (None, "550.54.14", False),  # a CPU torch: nothing to check
        ("13.0", None, False),  # NVML did not say
    ],
)
def test_the_driver_is_judged_by_cudas_major_version(cuda, driver, too_old):
    problem = driver_problem(cuda, driver)
    assert (problem is not None) == too_old
    if too_old:
        assert problem.startswith(f"the NVIDIA driver here is {driver}, older than ")
        assert f"torch's CUDA {cuda}" in problem and "\n" not in problem
