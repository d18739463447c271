"""A small sweep with W&B tracking on, run as the user runs it, for the tracking tests.

`python -m sweep` (its own process, so its wandb service must end with it) joins the session's
Ray cluster and runs the simulated server on the CPU: what is logged does not depend on the
engine, and a transformers deployment cost its worker 11.7-17.6 CPU-s in a whole run, against
0.9-1.8 for the sim's (2026-11-28).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

NAME = "tracked"


def tracked_sweep(folder: Path, cluster: str, *overrides: str) -> subprocess.CompletedProcess:
    """The sweep `NAME` (results under `folder / "results"`), one deployment per `ttft_ms`."""
    command = [
        sys.executable, "-m", "sweep", "+experiment=sim_cluster", "hardware=cpu",
        "backend.num_gpus=0", f"sweep.name={NAME}", "sweep.repeats=1",
        "workload.num_requests=8", "workload.output_len=4", "tracking=wandb",
        f"output.dir={folder / 'results'}", f"cluster.address={cluster}", *overrides,
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
