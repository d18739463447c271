"""A sweep submitted to the namespace cluster with `scripts/submit_sweep.sh`, followed from outside.

`scripts.bench.chaos` and the multi-host tests submit sweeps this way and stop or kill their
drivers to inject faults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweep.tools import REPO
from sweep.tools.netns_cluster import NetnsCluster
from sweep.tools.netns_hosts import ClusterError, cmdline, run


class SweepJob:
    """One `scripts/submit_sweep.sh` run, from this machine (outside every namespace).

    The script's `ray job submit` follows the job's log until it ends; `log` keeps all of it.
    """

    def __init__(
        self,
        cluster: NetnsCluster,
        overrides: list[str],
        log: Path,
        output_dir: str = "",
        source: Path = REPO,
    ) -> None:
        self.cluster, self.log = cluster, log
        env = {
            **os.environ,
            "RAY_ADDRESS": cluster.dashboard,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        env.pop("OUTPUT_DIR", None)
        if output_dir:
            env["OUTPUT_DIR"] = output_dir
        self.started = time.monotonic()
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(source / "scripts" / "submit_sweep.sh"), *overrides],
                cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def text(self) -> str:
        """The submission's output so far."""
        return self.log.read_text(errors="replace")

    @property
    def job_id(self) -> str | None:
        """The job's Ray id, once the submission has printed it."""
        for line in self.text().splitlines():
            if "submitted successfully" in line and "'raysubmit_" in line:
                return line.split("'")[1]
        return None

    def wait(self, timeout_s: float = 300) -> int:
        """The script's exit status (the job's: 0 when the sweep succeeded)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = self.text()[-2000:]
            raise ClusterError(f"the job did not end in {timeout_s:.0f} s: {tail}") from None

    def kill(self) -> None:
        """Stop following the job (the client only; the job goes on)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """`ray job stop`: the job's driver gets SIGTERM, then SIGKILL (Ray's way)."""
        job = self.job_id
        if job is None:
            raise ClusterError("no job id in the submission's output yet")
        run(str(Path(sys.executable).with_name("ray")), "job", "stop", "--address",
            self.cluster.dashboard, job, timeout=60)  # fmt: skip

    def driver_pid(self) -> int | None:
        """The job's driver (`python -m sweep`) on the head, None when it runs nowhere."""
        found = self.cluster.find(self.cluster.head, "-m sweep ")
        found = [p for p in found if not cmdline(p).startswith(("/bin/sh", "sh "))]
        return found[0] if found else None
