"""Starting proxies in front of a deployment's server, and the plan-time check.

`Proxies` holds a deployment's proxies: `front(config)` hands a trial what its load generator
talks to, the server backend itself for `proxy=none`, else the `ProxyBackend` of that config,
started on first use on a free 127.0.0.1 port (after the server, pointing at it) and emptied
before each later trial; `stop` stops them all with the deployment. A `ProxyBackend` is a
launched server (`backends.launched`: its own process group, killed with its worker) that
phrases requests as the server behind it does (model, API, headers, vLLM's extensions) and
serves its own `/metrics`. Where the worker keeps cores for its load generator
(`sweep.worker.isolation`), the proxy is moved off them, onto the server's. `check_plan` refuses a
proxy in front of an in-process engine or TGI's native API: the proxy speaks the OpenAI API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Collection
from typing import Any, ClassVar

import httpx
import psutil

from backends import backend_class
from backends.base import Backend, ServerBackend
from backends.launched import LaunchedServerBackend
from backends.process.prometheus import Scrape
from sweep.core import records as R
from sweep.core.errors import BackendError, ConfigError
from sweep.core.proxy_configs import ClipProxyConfig

HOST = "127.0.0.1"
ERROR_PREFIX = "proxy error: "  # the one line `backends.proxy.server` prints before it exits


def check_plan(config: Any) -> None:
    """Refuse a proxy in front of a backend that is not an OpenAI-compatible server.

    Raises:
        ConfigError: one line naming the backend and what to use instead.
    """
    if config.proxy.name == "none":
        return
    interface = backend_class(config.backend.name).interface
    if interface == "openai":
        return
    what = "an in-process engine" if interface == "engine" else "TGI's native API"
    raise ConfigError(
        f"proxy={config.proxy.name} sits in front of an OpenAI-compatible server, but "
        f"backend={config.backend.name} is {what}: use proxy=none, or a server backend"
    )


class ProxyBackend(LaunchedServerBackend):
    """The proxy process in front of `upstream`, a started server backend."""

    config_class: ClassVar[type] = ClipProxyConfig
    launcher_name: ClassVar[str] = "proxy"

    def __init__(
        self, config: ClipProxyConfig, upstream: ServerBackend, cpus: Collection[int] | None = None
    ) -> None:
        super().__init__(config, upstream.model_path)
        self.upstream = upstream
        self.cpus = cpus  # where it may run (None: where the worker runs)
        # Requests reach the server as the load generator phrased them: its extensions too.
        self.vllm_extensions = upstream.vllm_extensions
        self.local_tokenizer = upstream.local_tokenizer

    def start(self) -> None:
        """Launch the proxy and wait for `/health`; a bad setting is one line (BackendError)."""
        try:
            self._server.launch(self._argv, HOST, self.config.startup_timeout_s)
            if self.cpus:
                _pin(self.pid, self.cpus)
        except BackendError as exc:
            reason = next(
                (ln for ln in self.log_tail().splitlines() if ln.startswith(ERROR_PREFIX)), None
            )
            if reason is None:
                raise
            raise BackendError(reason, kind=R.ERROR_BACKEND_START) from exc

    def _argv(self, port: int) -> list[str]:
        argv = [
            sys.executable, "-m", "backends.proxy.server",
            "--host", HOST, "--port", str(port),
            "--upstream", self.upstream.base_url,
            "--config", json.dumps(dataclasses.asdict(self.config)),
        ]  # fmt: skip
        # Token ids to decode, or prompts to cut by tokens: the model's tokenizer, when local.
        wants = self.config.max_input_tokens is not None or self.upstream.send_token_ids
        if wants and self.upstream.local_tokenizer:
            argv += ["--tokenizer", self.model_path]
        return argv

    def reset(self) -> None:
        """Empty the proxy's cache (between trials)."""
        try:
            httpx.post(f"{self.base_url}/proxy/reset", timeout=5.0, trust_env=False)
        except httpx.HTTPError as exc:
            raise BackendError(f"the proxy did not reset its cache: {exc}") from None

    def metrics_scrape(self) -> Scrape | None:
        """The proxy's own `/metrics` (hits, misses, lookup latency)."""
        return Scrape(f"{self.base_url}/metrics")

    @property
    def api(self) -> str:
        """The server's API: the proxy forwards it."""
        return self.upstream.api

    @property
    def served_model(self) -> str:
        """The server's model name."""
        return self.upstream.served_model

    @property
    def send_token_ids(self) -> bool:
        """As the server takes prompts."""
        return self.upstream.send_token_ids

    @property
    def max_tokens_field(self) -> str:
        """The server's output-cap field."""
        return self.upstream.max_tokens_field

    def request_headers(self) -> dict[str, str]:
        """The server's headers (an API key): the proxy passes them on."""
        return self.upstream.request_headers()

    def request_body(self) -> dict[str, Any]:
        """The server's own body fields."""
        return self.upstream.request_body()


def _pin(pid: int, cpus: Collection[int]) -> None:
    """Run every thread of process `pid` on `cpus` (threads it starts later inherit it)."""
    with contextlib.suppress(psutil.Error):
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.sched_setaffinity(thread.id, cpus)


class Proxies:
    """The proxies of one deployment, one per proxy config, stopped with the deployment.

    `cpus`: the cores they run on (the server's, where the load generator keeps its own).
    """

    def __init__(self, backend: Backend, cpus: Collection[int] | None = None) -> None:
        self.backend = backend
        self.cpus = cpus
        self._started: dict[str, ProxyBackend] = {}

    def front(self, config: Any) -> Backend:
        """What a trial with proxy `config` talks to: the server, or a proxy in front of it.

        Raises:
            BackendError: the proxy did not start (its one line), or did not empty its cache.
        """
        if config.name == "none":
            return self.backend
        key = json.dumps(dataclasses.asdict(config), sort_keys=True)
        proxy = self._started.get(key)
        if proxy is not None:
            proxy.reset()  # every trial starts with an empty cache
            return proxy
        proxy = ProxyBackend(config, self.backend, self.cpus)
        try:
            proxy.start()
        except BaseException:
            proxy.stop()
            raise
        self._started[key] = proxy
        return proxy

    def stop(self) -> None:
        """Stop every proxy started; safe to call twice."""
        for proxy in self._started.values():
            proxy.stop()
        self._started.clear()
