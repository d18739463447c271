"""The openai backend: attach to an OpenAI-compatible endpoint that is already running.

Nothing is launched or stopped. `start` checks, with a short timeout, that `/v1/models` (or
`/health`) answers, so an unreachable endpoint becomes one clear failed trial instead of a trial
of timed-out requests; it also takes the served model's name from `/v1/models` when
`backend.model` is not set. With `backend.api_key_env`, the value of that environment variable
is sent as a Bearer token; it is read when needed and never stored in config, results or logs.
"""

from __future__ import annotations

import logging

from backends.base import ServerBackend
from backends.server_process import probe
from sweep.loadgen.http import auth_headers

log = logging.getLogger(__name__)

MODELS_PATH = "/v1/models"


class OpenAIBackend(ServerBackend):
    """An existing endpoint described by `OpenAIBackendConfig`."""

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

    @property
    def api_key_env(self) -> str | None:
        """The environment variable holding the API key (the load generator reads it)."""
        return self.config.api_key_env

    def start(self) -> None:
        """Check that the endpoint answers; raise BackendError (backend_start_failed) if not."""
        response = probe(
            self.base_url,
            (MODELS_PATH, "/health"),
            self.config.connect_timeout_s,
            auth_headers(self.config.api_key_env),
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
