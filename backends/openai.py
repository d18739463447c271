"""The openai backend: attach to an OpenAI-compatible endpoint that is already running.

Nothing is launched or stopped. `start` checks, with a short timeout, that `/v1/models` (or
`/health`) answers, so an unreachable endpoint becomes one clear failed trial instead of a trial
of timed-out requests; it also takes the served model's name from `/v1/models` when
`backend.model` is not set. With `backend.api_key_env`, the value of that environment variable
is sent as a Bearer token; it is read when needed and never stored in config, results or logs.

Bodies hold standard OpenAI fields only (a strict endpoint answers 400 to any other) unless
`backend.extensions` says the endpoint takes vLLM's (`ignore_eos`, per-chunk usage); chat caps
output with `backend.max_tokens_field`. `backend.headers` and `backend.extra_body` are sent with
every request; a value `{env: NAME}` is read from that environment variable when the trial
starts, as a `Secret`, so config, results and logs hold only the name. An unset one fails the
trial with one line naming it.

`backend.send_token_ids=true` sends each completions prompt as the local tokenizer's ids (as
vLLM's benchmark client does with pre-tokenized traces), so the server does not tokenize it.

`backend.tokenizer=none` loads no local tokenizer: prompts come from a bundled text
(`sweep.datasets.corpus`) and every token count from the server's `usage`. `backend.server_kind`
names the server behind the endpoint (`vllm`, `tgi`, `sim`, `sglang`, `llamacpp`), so its
`/metrics` are read through that server's map (`server_series`) and its load gauges sampled
during each trial (`telemetry_sources`) as for a launched one, and
llama-cpp-python's chunks count one token each; `none` keeps the capture unmapped. With
`quality=on` it also says how the endpoint scores a text: vLLM, SGLang and TGI through their
prompt log-probabilities (`backends.prompt_scoring`); any other endpoint is "not available" with
the reason (`NOT_SCORED`), and its trials run all the same.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from backends.base import COUNT_CHUNKS, COUNT_USAGE, Secret, ServerBackend
from backends.config import (
    SERVER_APIS,
    BackendConfig,
    check_url,
)
from backends.process.launcher import probe
from backends.process.prometheus import MetricMap, PrometheusSource
from backends.sglang_server import SGLANG_METRICS, SGLANG_SERVER_SERIES
from backends.sim import SIM_METRICS, SIM_SERVER_SERIES, SimBackend
from backends.tgi import TGI_METRICS, TGI_SERVER_SERIES
from backends.vllm_server import VLLM_METRICS, VLLM_SERVER_SERIES
from sweep.core import records as R
from sweep.core.errors import BackendError, ConfigError, check_choice, check_positive
from sweep.core.missing import MISSING

log = logging.getLogger(__name__)

MODELS_PATH = "/v1/models"
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
TOKENIZERS = ("local", "none")
# The server behind an attached endpoint -> the map of its /metrics families (`server_series`).
SERVER_KINDS: dict[str, Mapping[str, str]] = {
    "vllm": VLLM_SERVER_SERIES,
    "tgi": TGI_SERVER_SERIES,
    "sim": SIM_SERVER_SERIES,
    "sglang": SGLANG_SERVER_SERIES,
    "llamacpp": {},  # llama-cpp-python's server: no /metrics, one token per streamed chunk
    "none": {},
}
# ... and the map of its load gauges (running and waiting requests, KV cache), sampled during each
# trial as a launched server's are: what the cancellation's slot release is read from.
LOAD_GAUGES: dict[str, MetricMap] = {
    "vllm": VLLM_METRICS,
    "tgi": TGI_METRICS,
    "sim": SIM_METRICS,
    "sglang": SGLANG_METRICS,
}
# What `quality=on` scores through, by server: a prompt log-probability dialect
# (`backends.prompt_scoring`), or why there is none.
PROMPT_LOGPROBS = {"vllm": "vllm", "sglang": "sglang", "tgi": "tgi"}
NOT_SCORED = {
    "none": "an OpenAI endpoint's echo + logprobs names tokens by their text, not their ids, "
    "and lists at most 5 alternatives (OpenAI's own API returns no prompt log-probabilities), "
    "so a text's tokens cannot be matched exactly: set backend.server_kind=vllm, sglang or tgi "
    "where the server is one of those",
    "sim": SimBackend.scoring_unavailable,
    "llamacpp": "llama-cpp-python's server echoes log-probabilities by token text, not id: "
    "score with backend=llamacpp (the same model in process)",
}
# Servers whose streams are counted other than by their usage (`ServerBackend.token_counts`).
TOKEN_COUNTS = {"llamacpp": COUNT_CHUNKS}  # llama-cpp-python's: one token a chunk, no usage
ENV_NAME = re.compile(r"[A-Za-z_]\w*")
# Body fields the load generator sets from the workload; extra_body may not override them.
LOADGEN_FIELDS = (
    "model", "prompt", "messages", "stream", "stream_options", "temperature", "ignore_eos",
    *MAX_TOKENS_FIELDS,
)  # fmt: skip
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
LOADGEN_HEADERS = ("content-type", "content-length", "host", "x-request-id")
# Headers that carry credentials: their value must come from the environment, never config.
CREDENTIAL_HEADER = re.compile(
    r"(^|[-_])(authorization|cookie|key|token|secret|password)($|[-_])", re.I
)


@dataclass
class OpenAIBackendConfig(BackendConfig):
    """An existing OpenAI-compatible endpoint: nothing is launched, only attached to."""

    name: str = "openai"
    url: str = MISSING
    api: str = "completions"
    model: str | None = None
    api_key_env: str | None = None
    connect_timeout_s: float = 10.0
    extensions: bool = False  # the endpoint takes vLLM's ignore_eos and per-chunk usage
    max_tokens_field: str = "max_tokens"  # chat only: or max_completion_tokens
    headers: dict[str, Any] = field(default_factory=dict)  # a value may be {env: NAME}
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every body
    tokenizer: str = "local"  # none: no local tokenizer, every token count is the server's
    send_token_ids: bool = False  # completions: the prompt as the local tokenizer's ids
    server_kind: str = "none"  # the server behind the endpoint, whose /metrics map applies

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "api", self.api, SERVER_APIS)
        check_choice("backend", "max_tokens_field", self.max_tokens_field, MAX_TOKENS_FIELDS)
        check_choice("backend", "tokenizer", self.tokenizer, TOKENIZERS)
        check_choice("backend", "server_kind", self.server_kind, tuple(SERVER_KINDS))
        check_positive("backend", connect_timeout_s=self.connect_timeout_s)
        check_url("url", self.url)
        if self.api_key_env is not None and not ENV_NAME.fullmatch(self.api_key_env):
            raise ConfigError(
                "backend.api_key_env must name an environment variable (the key itself is "
                "never put in config)"
            )
        if self.max_tokens_field != "max_tokens" and self.api != "chat":
            raise ConfigError(
                f"backend.max_tokens_field={self.max_tokens_field} applies to api=chat only "
                "(completions take max_tokens)"
            )
        if self.send_token_ids and (self.api != "completions" or self.tokenizer != "local"):
            raise ConfigError(
                "backend.send_token_ids=true needs api=completions and tokenizer=local (the "
                "ids are the local tokenizer's; chat sends messages)"
            )
        self._check_headers()
        self._check_extra_body()

    def _check_headers(self) -> None:
        for key, value in self.headers.items():
            where = f"backend.headers.{key}"
            if not HEADER_NAME.fullmatch(str(key)) or key.lower() in LOADGEN_HEADERS:
                raise ConfigError(f"{where}: not a header name the load generator lets you set")
            if key.lower() == "authorization" and self.api_key_env:
                raise ConfigError(f"{where} and backend.api_key_env both set Authorization")
            if env_name(value) is not None:
                _check_env_refs(where, value)
            elif isinstance(value, dict | list) or value is None:
                raise ConfigError(f"{where} must be a string or {{env: NAME}}")
            elif CREDENTIAL_HEADER.search(key):
                raise ConfigError(
                    f"{where} looks like a credential: write {{env: NAME}} to read it from an "
                    "environment variable (a secret is never put in config)"
                )
            elif re.search(r"[\r\n\0]", str(value)):
                raise ConfigError(f"{where} holds a newline or NUL")

    def _check_extra_body(self) -> None:
        for key, value in self.extra_body.items():
            where = f"backend.extra_body.{key}"
            if key == "ignore_eos":
                raise ConfigError(f"{where}: set backend.extensions=true to send vLLM's fields")
            if key in LOADGEN_FIELDS:
                raise ConfigError(f"{where} is set by the load generator from the workload")
            _check_env_refs(where, value)


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

    @property
    def vllm_extensions(self) -> bool:  # a setting here: an attached endpoint may be anything
        """`backend.extensions`: whether the endpoint takes vLLM's body extensions."""
        return self.config.extensions

    @property
    def max_tokens_field(self) -> str:
        """`backend.max_tokens_field`."""
        return self.config.max_tokens_field

    @property
    def send_token_ids(self) -> bool:
        """`backend.send_token_ids`: prompts go as token ids, not text."""
        return self.config.send_token_ids

    @property
    def local_tokenizer(self) -> bool:
        """`backend.tokenizer=local`; with none, token counts are the server's own."""
        return self.config.tokenizer == "local"

    @property
    def token_counts(self) -> str:
        """By chunk where `backend.server_kind` names llama-cpp-python's server, else by usage."""
        return TOKEN_COUNTS.get(self.config.server_kind, COUNT_USAGE)

    @property
    def prompt_logprobs(self) -> str | None:  # type: ignore[override]  # a setting here
        """The scoring dialect of the server `backend.server_kind` names (None: not known)."""
        return PROMPT_LOGPROBS.get(self.config.server_kind)

    @property
    def scoring_unavailable(self) -> str | None:  # type: ignore[override]  # a setting here
        """None where the named server scores prompts, else why not."""
        return None if self.prompt_logprobs else NOT_SCORED[self.config.server_kind]

    @property
    def server_series(self) -> Mapping[str, str]:  # a setting here: the server may be anything
        """The /metrics map of the server `backend.server_kind` names (none: no map)."""
        return SERVER_KINDS[self.config.server_kind]

    def telemetry_sources(self) -> list[Any]:
        """The load gauges of the server `backend.server_kind` names; none for an unknown one."""
        gauges = LOAD_GAUGES.get(self.config.server_kind)
        return [PrometheusSource(f"{self.base_url}/metrics", gauges)] if gauges else []

    def request_headers(self) -> dict[str, str]:
        """`backend.headers` and the Bearer key of `api_key_env`, read now, never stored.

        Raises:
            BackendError: a header names an environment variable that is not set.
        """
        headers = {k: from_env(v, f"backend.headers.{k}") for k, v in self.config.headers.items()}
        headers = {k: v if isinstance(v, Secret) else str(v) for k, v in headers.items()}
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        if key:
            headers["Authorization"] = Secret(f"Bearer {key}")
        return headers

    def request_body(self) -> dict[str, Any]:
        """`backend.extra_body`, its `{env: NAME}` values read now.

        Raises:
            BackendError: a value names an environment variable that is not set.
        """
        return from_env(self.config.extra_body, "backend.extra_body")

    def startup(self) -> dict[str, Any]:
        """Nothing: the endpoint was up before the deployment; its start is not measured here."""
        return {R.SERVER_START_S: None}

    def start(self) -> None:
        """Check that the endpoint answers; raise BackendError (backend_start_failed) if not."""
        try:
            headers = self.request_headers()
            self.request_body()  # an unset variable fails the deployment before any request
        except BackendError as exc:
            raise BackendError(str(exc), kind=R.ERROR_BACKEND_START) from None
        response = probe(
            self.base_url, (MODELS_PATH, "/health"), self.config.connect_timeout_s, headers or None
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


def env_name(value: Any) -> str | None:
    """NAME when `value` is the reference `{env: NAME}`, else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("env"), str):
        return value["env"]
    return None


def from_env(value: Any, where: str) -> Any:
    """`value` with each `{env: NAME}` in it replaced by that variable's value, as a `Secret`.

    Raises:
        BackendError: a named variable is not set; the message names it and `where`.
    """
    name = env_name(value)
    if name is not None:
        if name not in os.environ:
            raise BackendError(f"{where} names the environment variable {name}, which is not set")
        return Secret(os.environ[name])
    if isinstance(value, dict):
        return {k: from_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [from_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _check_env_refs(where: str, value: Any) -> None:
    """Every `{env: NAME}` inside `value` names a variable by a valid name."""
    name = env_name(value)
    if name is not None and not ENV_NAME.fullmatch(name):
        raise ConfigError(f"{where}: {{env: {name}}} must name an environment variable")
    if isinstance(value, dict) and name is None:
        for k, v in value.items():
            _check_env_refs(f"{where}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_env_refs(f"{where}[{i}]", v)
