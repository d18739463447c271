"""What changes when the driver runs as a submitted Ray job (`scripts/submit_sweep.sh`).

`ray job submit --working-dir .` unpacks the code into a fresh folder under Ray's temporary
directory on the head node and runs the driver there. A relative `output.dir` would put the
results inside that folder: `ray rsync-down ... results/` would find nothing, and the next
submission (a new folder for any code change) would not see them, so resume would rerun
everything. Under a job, the results folder must therefore be absolute (or `~/...`, or a URI).
"""

from __future__ import annotations

import os

from sweep.core.errors import ConfigError

# Set by Ray's job supervisor for the entrypoint of every submitted job.
JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a submitted Ray job."""
    return JOB_ENV_VAR in os.environ


def check_output_dir(output_dir: str) -> None:
    """Refuse a results folder that a submitted job would lose with its working directory."""
    if "://" in output_dir or os.path.isabs(os.path.expanduser(output_dir)):
        return
    if in_ray_job():
        raise ConfigError(
            f"output.dir={output_dir!r} is relative, and this sweep runs as a Ray job in a "
            f"temporary copy of the code ({os.getcwd()}): its results would be lost with it. "
            "Pass an absolute path, ~/..., or an s3:// or gs:// URI (scripts/submit_sweep.sh "
            "defaults to ~/llm-sweep-results)"
        )
