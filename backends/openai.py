"""The openai backend: attach to an OpenAI-compatible endpoint that is already running.

Nothing is launched or stopped. `start` checks, with a short timeout, that `/v1/models` (or
`/health`) answers, so an unreachable endpoint becomes one clear failed trial instead of a trial
of timed-out requests; it also takes the served model's name from `/v1/models` when
`backend.model` is not set. With `backend.api_key_env`, the value of that environment variable
is sent as a Bearer token; it is read when needed and never stored in config, results or logs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING

from backends.base import ServerBackend
from backends.config import (
    SERVER_APIS,
    BackendConfig,
    check_url,
)
from backends.server_process import probe
from sweep.core.errors import ConfigError, check_choice, check_positive

log = logging.getLogger(__name__)

MODELS_PATH = "/v1/models"


@dataclass
class OpenAIBackendConfig(BackendConfig):
    """An existing OpenAI-compatible endpoint: nothing is launched, only attached to."""

    name: str = "openai"
    url: str = MISSING
    api: str = "completions"
    model: str | None = None
    api_key_env: str | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "api", self.api, SERVER_APIS)
        check_positive("backend", connect_timeout_s=self.connect_timeout_s)
        check_url("url", self.url)
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_]\w*", self.api_key_env):
            raise ConfigError(
                "backend.api_key_env must name an environment variable (the key itself is "
                "never put in config)"
            )


class OpenAIBackend(ServerBackend):
    """An existing endpoint described by `OpenAIBackendConfig`."""

    config_class: ClassVar[type] = OpenAIBackendConfig

    def __init__(self, config: object, model_path: str) -> None:
        super().__init__(config, model_path)
        self._listed_model: str | None = None

    @property
    def base_url(self) -> str:
        """The endpoint's root URL (a trailing `/v1` is dropped: the API paths add it)."""
        url = self.config.url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    @property
    def served_model(self) -> str:
        """`backend.model`, else the first model the endpoint lists, else the model path."""
        return self.config.model or self._listed_model or self.model_path

    @property
    def api(self) -> str:
        """`completions` or `chat`."""
        return self.config.api

    def request_headers(self) -> dict[str, str]:
        """The Bearer header from the variable `api_key_env` names, read now, never stored."""
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def start(self) -> None:
        """Check that the endpoint answers; raise BackendError (backend_start_failed) if not."""
        response = probe(
            self.base_url,
            (MODELS_PATH, "/health"),
            self.config.connect_timeout_s,
            self.request_headers() or None,
        )
        if response.url.path.endswith(MODELS_PATH):
            try:
                ids = [m["id"] for m in response.json().get("data", [])]
            except (ValueError, TypeError, KeyError, AttributeError):
                ids = []
            self._listed_model = ids[0] if ids else None
            if self.config.model and ids and self.config.model not in ids:
                log.warning("model %r is not among those %s lists: %s", self.config.model,
                            self.base_url, ", ".join(ids))  # fmt: skip
        log.info("attached to %s (model %s)", self.base_url, self.served_model)

    def stop(self) -> None:
        """Nothing to release: the endpoint is not ours."""
