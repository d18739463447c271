"""What changes when the driver runs as a submitted Ray job (`scripts/submit_sweep.sh`).

`ray job submit --working-dir .` unpacks the code into a fresh folder under Ray's temporary
directory on the head node and runs the driver there. A relative `output.dir` would put the
results inside that folder: `ray rsync-down ... results/` would find nothing, and the next
submission (a new folder for any code change) would not see them, so resume would rerun
everything. Under a job, the results folder must therefore be absolute (or `~/...`, or a URI).

Secrets (`cluster.forward_env`, default `HF_TOKEN`) reach the workers through the job's runtime
environment whichever way the driver joined the cluster: a submitted job already carries those
the submitter forwarded, and the driver adds the rest when it connects.
"""

from __future__ import annotations

import json
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


def forwarded_env(names: list[str]) -> tuple[dict[str, str], list[str]]:
    """The variables of `names` to hand to the cluster's workers, and those not set here.

    Under a submitted job, variables its runtime environment already carries are left out:
    Ray refuses a driver's runtime environment that sets one of the job's again.
    """
    already: set[str] = set()
    if in_ray_job():
        try:
            job = json.loads(os.environ[JOB_ENV_VAR])
            already = set((job.get("runtime_env") or {}).get("env_vars") or {})
        except (ValueError, AttributeError):  # not the JSON Ray writes: forward as if none
            already = set()
    values = {n: os.environ[n] for n in names if n in os.environ and n not in already}
    return values, [n for n in names if n not in os.environ]
