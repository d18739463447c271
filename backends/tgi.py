"""The tgi backend: Hugging Face Text Generation Inference in docker, or one already running.

Launched, it runs (an argv list through `ServerLauncher`, never a shell)::

    docker run --rm --name llm-sweep-tgi-<id> --label llm-sweep.deployment=<deployment>
        --label llm-sweep.owner=<host>:<pid>:<start> --gpus '"device=<CUDA_VISIBLE_DEVICES>"'
        -p 127.0.0.1:<port>:80 -v <volume>:/data --shm-size 1g [-e HF_TOKEN]
        ghcr.io/huggingface/text-generation-inference:<tag> --model-id <id>
        --max-concurrent-requests N [--max-batch-total-tokens N] [<extra args>]

The docker client's output, the container's log, is the backend log. A local model directory
is mounted read-only as /model. HF_TOKEN goes by name only: docker copies the value from its
own environment, so it is in no argv and no log. Free-form `extra_args` come after the image,
so they reach TGI's launcher, never docker. `stop` stops the client and removes the container
(`docker rm -f`). A worker killed with SIGKILL runs no `stop`: its client dies with it, but the
container runs on (`--rm` removes only a container that exits), holding its GPU. So each
container is labelled with its deployment (`$LLM_SWEEP_DEPLOYMENT_ID`, else a hash of the
backend config and model) and its owner, the worker process (host, pid and the process's start
time, so a reused pid is not mistaken for it). Before launching, the backend lists its
deployment's containers (`docker ps -a --filter label=...`) and removes (`docker rm -f`) those
whose owner is gone from this host, with one warning; a live owner's container (another task of
the deployment, a helper beside it) is left alone. Attached (`backend.url`), nothing is
launched. Either way `/info` is read and logged at start. Requests go to TGI's native
`/generate_stream` (interface `tgi`); telemetry is TGI's batch size and queue length from
`/metrics` (TGI pre-allocates its KV cache and exports no usage; NVML gives memory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from backends.base import TelemetrySource
from backends.config import (
    DEPLOYMENT_ENV,
    LaunchedServerConfig,
    check_url,
    typed_names,
)
from backends.launched import LaunchedServerBackend
from backends.process.argv import check_extra_args, check_values, flag_args
from backends.process.launcher import probe
from backends.process.prometheus import MetricMap, PrometheusSource
from backends.process.startup import StartupLines
from sweep.core import records as R
from sweep.core.errors import BackendError, check_positive

log = logging.getLogger(__name__)

TGI_METRICS: MetricMap = {
    "tgi_batch_current_size": (R.RUNNING_REQUESTS, 1.0),
    "tgi_queue_size": (R.WAITING_REQUESTS, 1.0),
}
# The summary's server-side columns from the trial's /metrics deltas. TGI has no first-token
# histogram, and its prefill timings are per batch (`tgi_batch_inference_duration{method=
# "prefill"}`), not per request, so neither is mapped.
TGI_SERVER_SERIES = {
    R.SERVER_QUEUE: "tgi_request_queue_duration",
    R.SERVER_TPOT: "tgi_request_mean_time_per_token_duration",
}
CONTAINER_PORT = 80
MODEL_MOUNT = "/model"
SECRET_ENV = ("HF_TOKEN",)  # passed to the container by name, never by value
REMOVE_TIMEOUT_S = 60.0
LIST_TIMEOUT_S = 30.0
# Container labels: which deployment a container serves, and which worker process launched it.
DEPLOYMENT_LABEL = "llm-sweep.deployment"
OWNER_LABEL = "llm-sweep.owner"
DOCKER_INSTALL = (
    "install Docker Engine (and the NVIDIA Container Toolkit for GPUs), or set backend.url to "
    "attach to a running TGI"
)
# Flags the backend sets itself (model, address, GPUs): not allowed in extra_args.
TGI_RESERVED_FLAGS = ("model-id", "hostname", "port", "num-shard")


@dataclass
class TGIBackendConfig(LaunchedServerConfig):
    """Text Generation Inference in docker (launched per deployment), or attached at `url`."""

    name: str = "tgi"
    url: str | None = None
    image: str = "ghcr.io/huggingface/text-generation-inference"
    tag: str = "3.3.5"
    docker: str = "docker"
    volume: str = "~/.cache/huggingface/hub"
    shm_size: str = "1g"
    max_concurrent_requests: int = 128
    max_batch_total_tokens: int | None = None
    startup_timeout_s: float = 1800.0
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            "backend",
            max_concurrent_requests=self.max_concurrent_requests,
            max_batch_total_tokens=self.max_batch_total_tokens,
        )
        check_url("url", self.url)
        check_values(
            "backend",
            image=self.image,
            tag=self.tag,
            docker=self.docker,
            volume=self.volume,
            shm_size=self.shm_size,
        )
        check_extra_args(
            "backend.extra_args", self.extra_args, typed_names(self), TGI_RESERVED_FLAGS
        )


# What TGI's launcher and router log as they start: the weights' download (or "already present")
# before the shard starts; the shard loading them until it is ready (its own time reported); the
# router then warms the model up and connects. The container's pull and start are in the first
# phase.
TGI_STARTUP = StartupLines(
    ends={
        R.START_PROCESS_S: r"Starting shard",
        R.START_LOAD_S: r"Shard ready in",
        R.START_ENGINE_S: r"text_generation_router.*Connected|\bConnected$",
    },
    reported={R.START_WEIGHTS_S: r"Shard ready in ([\d.]+)s"},
)


class TGIBackend(LaunchedServerBackend):
    """A TGI container (or an attached TGI server) configured from `TGIBackendConfig`."""

    config_class: ClassVar[type] = TGIBackendConfig
    prompt_logprobs: ClassVar[str | None] = "tgi"  # quality: `backends.prompt_scoring`
    scoring_unavailable: ClassVar[str | None] = None

    interface: ClassVar[str] = "tgi"
    launcher_name: ClassVar[str] = "tgi"

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """Launching needs a docker engine on the node, which Ray's own containers do not have.

        A node type that runs TGI declares the `docker` piece; attached (`backend.url`), none.
        """
        return ("docker",) if config.url is None else ()

    server_series: ClassVar[Mapping[str, str]] = TGI_SERVER_SERIES
    startup_lines: ClassVar[StartupLines | None] = TGI_STARTUP

    def __init__(self, config: TGIBackendConfig, model_path: str) -> None:
        super().__init__(config, model_path)
        self._url: str | None = None
        self.container = f"llm-sweep-tgi-{uuid.uuid4().hex[:12]}"
        self.deployment = os.environ.get(DEPLOYMENT_ENV) or _config_hash(config, model_path)
        self._container_launched = False
        self.info: dict = {}

    @property
    def api(self) -> str:
        """TGI's native `/generate_stream`."""
        return "tgi"

    @property
    def base_url(self) -> str:
        """Root URL of the running (or attached) server."""
        if self._url is None:
            raise BackendError("the tgi backend is not started")
        return self._url

    def start(self) -> None:
        """Launch the container (or check the attached server) and read `/info`."""
        c = self.config
        if c.url:
            url = c.url.rstrip("/")
            probe(url, ("/health",), timeout_s=10.0)
        else:
            if shutil.which(c.docker) is None:
                raise BackendError(
                    f"{c.docker!r} is not installed: it launches TGI ({DOCKER_INSTALL})",
                    kind=R.ERROR_BACKEND_START,
                )
            self.remove_orphans()
            self._container_launched = True
            url = self._server.launch(self.argv, c.host, c.startup_timeout_s)
        self._url = url
        self.info = self._read_info()
        log.info("TGI at %s: %s", url, self.info)

    def argv(self, port: int) -> list[str]:
        """The `docker run` command line for host port `port`."""
        c = self.config
        docker = [
            c.docker, "run", "--rm", "--name", self.container,
            "--label", f"{DEPLOYMENT_LABEL}={self.deployment}",
            "--label", f"{OWNER_LABEL}={_owner()}",
            *self.gpu_args(),
            "-p", f"{c.host}:{port}:{CONTAINER_PORT}",
            "-v", f"{Path(c.volume).expanduser()}:/data",
            "--shm-size", c.shm_size,
        ]  # fmt: skip
        for name in SECRET_ENV:
            if name in os.environ:
                docker += ["-e", name]
        model_id = self.model_path
        if Path(self.model_path).is_dir():
            docker += ["-v", f"{Path(self.model_path).resolve()}:{MODEL_MOUNT}:ro"]
            model_id = MODEL_MOUNT
        launcher = {
            "model-id": model_id,
            "num-shard": c.num_gpus if c.num_gpus > 1 else None,
            "max-concurrent-requests": c.max_concurrent_requests,
            "max-batch-total-tokens": c.max_batch_total_tokens,
        }
        return [
            *docker,
            f"{c.image}:{c.tag}",
            *flag_args(launcher, "backend"),
            *flag_args(c.extra_args, "backend.extra_args", TGI_RESERVED_FLAGS),
        ]

    def remove_orphans(self) -> None:
        """Remove this deployment's containers whose worker is gone (killed before its `stop`).

        Raises:
            BackendError: kind `backend_start_failed`, one line, when docker cannot list them.
        """
        listing = self._docker(
            "ps", "-a",
            "--filter", f"label={DEPLOYMENT_LABEL}={self.deployment}",
            "--format", f'{{{{.ID}}}} {{{{.Label "{OWNER_LABEL}"}}}}',
            timeout_s=LIST_TIMEOUT_S,
        )  # fmt: skip
        rows = (line.split(" ", 1) for line in listing.splitlines() if line.strip())
        orphans = [row[0] for row in rows if len(row) == 2 and _owner_is_gone(row[1].strip())]
        if not orphans:
            return
        try:
            self._docker("rm", "-f", *orphans, timeout_s=REMOVE_TIMEOUT_S)
        except BackendError as exc:  # another task of the deployment may have removed them
            log.warning("could not remove TGI containers left by a killed worker: %s", exc)
            return
        log.warning(
            "removed %d TGI container(s) of deployment %s left running by a killed worker: %s",
            len(orphans), self.deployment, " ".join(orphans),
        )  # fmt: skip

    def _docker(self, *args: str, timeout_s: float) -> str:
        """Run `docker <args>` (an argv list) and return its stdout; failures are one line."""
        command = [self.config.docker, *args]
        what = f"{self.config.docker} {args[0]}"
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            reason = f"{what} did not answer within {timeout_s:g} s"
        except OSError as exc:
            reason = f"{what} could not run ({exc.strerror or exc}): {DOCKER_INSTALL}"
        else:
            if done.returncode == 0:
                return done.stdout
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            reason = f"{what} failed (exit code {done.returncode}): {last}"
        raise BackendError(reason, kind=R.ERROR_BACKEND_START)

    def gpu_args(self) -> list[str]:
        """`--gpus` for the GPUs Ray gave this task (its CUDA_VISIBLE_DEVICES), none on CPU."""
        if self.config.num_gpus == 0:
            return []
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        # The quotes belong to docker's own syntax: without them the comma splits the value.
        return ["--gpus", f'"device={visible}"'] if visible else ["--gpus", "all"]

    def _read_info(self) -> dict:
        try:
            response = httpx.get(f"{self.base_url}/info", timeout=10.0, trust_env=False)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("TGI at %s gave no /info: %s", self.base_url, exc)
            return {}

    def stop(self) -> None:
        """Stop the docker client, then remove the container; safe to call twice."""
        super().stop()
        self._url = None
        if self._container_launched:
            self._container_launched = False
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [self.config.docker, "rm", "-f", self.container],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=REMOVE_TIMEOUT_S,
                    check=False,
                )

    def telemetry_sources(self) -> list[TelemetrySource]:
        """Batch size (running) and queue length (waiting) from TGI's `/metrics`."""
        return [PrometheusSource(f"{self.base_url}/metrics", TGI_METRICS)]


def _config_hash(config: TGIBackendConfig, model_path: str) -> str:
    """What is launched (backend config and model), hashed: the deployment label's fallback."""
    text = json.dumps([dataclasses.asdict(config), model_path], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _owner() -> str:
    """This worker process as `<host>:<pid>:<start>`, a name no later process takes."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '-'}"


def _owner_is_gone(owner: str) -> bool:
    """Whether the process an owner label names has ended; False when that cannot be told.

    Only a process of this host is judged (a docker daemon reached over the network serves
    other hosts too), and only where /proc gives start times, so a reused pid is not taken
    for the owner. A zombie has ended.
    """
    host, _, rest = owner.partition(":")  # a host name holds no ':'
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or start in ("", "-"):
        return False
    return _start_time(int(pid)) != start


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, from /proc), or None if it has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]
