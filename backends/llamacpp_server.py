"""The llamacpp_server backend: llama-cpp-python's OpenAI server, launched once per deployment.

It runs llama-cpp-python's server (`python -m llama_cpp.server`) with `--model <gguf> --host
127.0.0.1 --port N` and the settings of `LlamaCppServerConfig`, each value its own argv element.
The server's flags are its pydantic settings' field names (`--n_ctx`, `--interrupt_requests
false`: `backends.process.argv.SNAKE`).
The GGUF comes as the `llamacpp` engine gets it (`backends.llamacpp.gguf_path`): `gguf_file`, a
file of `gguf_repo`, or the model directory converted once by our converter and cached.

What the server is (llama-cpp-python 0.3.36, read from `llama_cpp/server/app.py`): one `Llama`
object behind an async lock, so it serves one request at a time whatever the concurrency (the
others wait their turn); there is no parallel-slots setting (llama.cpp's own `llama-server` has
`--parallel`; this one does not). Its `interrupt_requests` (on by default) ends a streaming
request as soon as another one waits; a benchmark would measure cut-short replies, so the
backend turns it off unless `backend.interrupt_requests=true`. The `Llama` object keeps its last
context and reuses the longest prefix the next prompt shares with it, across trials as within.
Streamed chunks carry no `usage` (whatever `stream_options` asks) and the server takes no
`ignore_eos`: a reply can end at EOS before `max_tokens`, or run past it while its last tokens
end inside a UTF-8 character (`Llama._create_completion` skips its length check until the
character is whole: 32 tokens for a `max_tokens` of 16, seen on the tiny model). How its tokens
are counted is `backend.token_counts` (the backend's `token_counts`, never re-tokenized text):
- `chunks` (the default): one token per chunk. It holds for every chunk whose text is ASCII or
  empty; a token that does not decode alone waits and goes out in one chunk with the tokens that
  finish its character, so a chunk with a character outside ASCII may carry several, and its
  request's count is marked estimated (`records.OUTPUT_TOKENS_ESTIMATED`; 1 of 64 requests on
  the tiny model, whose random weights emit stray bytes; text of real models rarely splits so).
- `logprobs`: requests ask for per-token logprobs (`logprobs: 0`; chat: `logprobs: true,
  top_logprobs: 0`), which the server then sends one token a chunk, each with its entry: exact.
  The cost is the server's: for every token it sorts the whole vocabulary's logprobs in Python
  (0.14 ms at the tiny model's 512 tokens, 25 ms at 32k, 100 ms at 128k on a 2-core host),
  which shows in its measured TPOT; the server's default `logits_all` keeps them available.

No `/metrics`: the server has no Prometheus route, so `metrics_scrape` is None, `server_series`
is empty, and the summary's server-side columns stay null for this backend. Its health check is
`/v1/models` (there is no `/health`). A start that fails (a GGUF that will not load) is one line
with the reason from the server's log; the whole log is kept as backend.log.
Its request-id middleware (starlette-context's `RequestIdPlugin`) answers 400, with no body, to
any `X-Request-Id` that is not a UUID: the load generator's ids are UUIDs for that reason
(`sweep.loadgen.request_ids`), so `backend=openai` attached to this server works as well.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from backends.base import COUNT_CHUNKS, COUNT_LOGPROBS
from backends.config import OpenAIServerConfig, typed_names
from backends.launched import LaunchedServerBackend
from backends.llamacpp import (
    check_gguf_config,
    gguf_path,
    import_llama_cpp,
    llama_pieces,
    require_gpu_offload,
)
from backends.process.argv import SNAKE, check_extra_args, check_values, field_flags, module_argv
from backends.process.prometheus import Scrape
from backends.process.startup import StartupLines
from sweep.core import records as R
from sweep.core.errors import check_choice, check_positive

log = logging.getLogger(__name__)

SERVER_MODULE = "llama_cpp.server"
HEALTH_PATH = "/v1/models"
# What `python -m llama_cpp.server` imports (llama-cpp-python's `server` extra) -> pip package.
SERVER_PACKAGES = {
    "llama_cpp": "llama-cpp-python",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}
# The server reads these from its environment over its flags (uvicorn's HOST and PORT; a
# CONFIG_FILE replaces every setting), so its child environment goes without them.
OVERRIDING_ENV = ("HOST", "PORT", "CONFIG_FILE")
# llama.cpp's own loader complaint, printed before the Python traceback that reports it.
LOAD_ERROR = r"^(gguf_\w+|llama_model_load): "
# Config fields that are not a server flag under their own name: how the server is launched and
# reached, and where the GGUF comes from (the backend passes `--model` itself).
NOT_SERVER_FLAGS = (
    "name", "num_gpus", "num_cpus", "api", "startup_timeout_s", "gguf_file", "gguf_repo",
    "convert_outtype", "token_counts", "extra_args",
)  # fmt: skip
# Flags the backend sets itself (model, port) or that would replace every setting.
LLAMACPP_RESERVED_FLAGS = ("model", "port", "config_file")
TOKEN_COUNTS = (COUNT_CHUNKS, COUNT_LOGPROBS)  # the server streams no usage to count by


@dataclass
class LlamaCppServerConfig(OpenAIServerConfig):
    """llama-cpp-python's server on a GGUF (given, or converted); None = the server's default."""

    name: str = "llamacpp_server"
    startup_timeout_s: float = 300.0
    gguf_file: str | None = None
    gguf_repo: str | None = None
    convert_outtype: str = "f16"
    model_alias: str | None = None
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int | None = None
    n_threads: int | None = None
    n_threads_batch: int | None = None
    interrupt_requests: bool = False
    token_counts: str = COUNT_CHUNKS  # or logprobs: exact, at a cost in the server's time
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "token_counts", self.token_counts, TOKEN_COUNTS)
        check_gguf_config(self)
        check_positive(
            "backend",
            n_ubatch=self.n_ubatch,
            n_threads_batch=self.n_threads_batch,
        )
        check_values(
            "backend",
            gguf_file=self.gguf_file,
            gguf_repo=self.gguf_repo,
            model_alias=self.model_alias,
        )
        check_extra_args(
            "backend.extra_args",
            self.extra_args,
            typed_names(self),
            LLAMACPP_RESERVED_FLAGS,
            SNAKE,
        )


# What llama-cpp-python's server logs as it starts (llama.cpp's loader and context on stderr,
# then uvicorn's): the loader opening the GGUF ends the process's start, the context's
# construction the weights' load, uvicorn's server process the engine's set-up (KV cache, graph
# reservation). It reports no durations of its own and has no compile cache.
LLAMACPP_STARTUP = StartupLines(
    ends={
        R.START_PROCESS_S: r"^llama_model_loader: loaded meta data",
        R.START_LOAD_S: r"^llama_context: constructing llama_context",
        R.START_ENGINE_S: r"Started server process",
    },
)


class LlamaCppServerBackend(LaunchedServerBackend):
    """A `llama_cpp.server` child process configured from `LlamaCppServerConfig`."""

    config_class: ClassVar[type] = LlamaCppServerConfig
    weight_format: ClassVar[str] = R.WEIGHTS_GGUF
    roofline_fields: ClassVar[tuple[str, ...]] = ("gguf_file", "convert_outtype")

    launcher_name: ClassVar[str] = "llamacpp_server"
    server_packages: ClassVar[Mapping[str, str]] = SERVER_PACKAGES
    server_extra: ClassVar[str] = "llamacpp"
    one_line_failures: ClassVar[bool] = True
    startup_lines: ClassVar[StartupLines | None] = LLAMACPP_STARTUP

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """A GPU deployment needs the CUDA build of the binding."""
        return llama_pieces(config)

    failure_detail: ClassVar[str | None] = LOAD_ERROR

    def __init__(self, config: LlamaCppServerConfig, model_path: str) -> None:
        super().__init__(config, model_path)
        self.gguf: Path | None = None

    @property
    def served_model(self) -> str:
        """The name the server lists: `model_alias`, else the GGUF's path."""
        return self.config.model_alias or str(self.gguf or self.model_path)

    @property
    def api(self) -> str:
        """`completions` or `chat`: which endpoint the load generator streams from."""
        return self.config.api

    def start(self) -> None:
        """Find or make the GGUF, launch the server on it and wait until it lists the model."""
        self.require_packages()
        if self.config.n_gpu_layers != 0:
            require_gpu_offload(import_llama_cpp(), self.config.n_gpu_layers)
        self.gguf = gguf_path(self.config, self.model_path)
        log.info("llamacpp_server on %s (n_ctx=%d)", self.gguf, self.config.n_ctx)
        self.launch(HEALTH_PATH, env=self.child_env())

    def argv(self, port: int) -> list[str]:
        """The server's command line for `port` (after `start` found the GGUF)."""
        c = self.config
        typed = {
            "model": str(self.gguf or self.model_path),
            "port": port,
            **field_flags(c, NOT_SERVER_FLAGS, SNAKE),
        }
        return module_argv(SERVER_MODULE, typed, c.extra_args, LLAMACPP_RESERVED_FLAGS, style=SNAKE)

    def child_env(self) -> dict[str, str]:
        """This process's environment without the variables the server prefers to its flags."""
        return {k: v for k, v in os.environ.items() if k.upper() not in OVERRIDING_ENV}

    @property
    def token_counts(self) -> str:
        """`backend.token_counts`: by chunk, or by the logprobs entries requests ask for."""
        return self.config.token_counts

    def metrics_scrape(self) -> Scrape | None:
        """None: llama-cpp-python's server exports no `/metrics`."""
        return None
