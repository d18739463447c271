"""The backend contract: what every engine or server must offer the trial runner.

A backend is started once per deployment and stopped at the end, on error and on interruption
(use it as a context manager). In-process engines implement `EngineBackend.generate` and report
each token through a callback; they never read a clock for metrics, because
`sweep.loadgen.recorder` owns every timestamp so that all engines are measured the same way.
Everything the trial and the load generator ask of a backend is declared here, with its default:
they never probe a backend for optional attributes. Server backends also declare how requests
are phrased: the endpoint, whether vLLM's body extensions may be sent, chat's output-cap field,
and headers and body fields of their own (a value read from the environment is a `Secret`).
Each backend also states the facts analysis needs (`Backend.facts`: baseline or not, whether
`ignore_eos` reaches its engine, how its config names what it stores); the worker writes them into
every summary row. A backend that can score a text teacher-forced (`score`, for `quality=on`)
says so by leaving `scoring_unavailable` None; the others keep its reason. A server scores
through its prompt log-probabilities, in the dialect it names (`ServerBackend.prompt_logprobs`,
`backends.prompt_scoring`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from backends.process.prometheus import Scrape
from backends.prompt_scoring import score_on_server
from backends.scoring import TokenScores
from sweep.core import records as rec
from sweep.core.errors import BackendError

# (request idx, number of new tokens in this step). Called as soon as the tokens exist on the host.
TokenCallback = Callable[[int, int], None]

# A telemetry source returns (source, metric, value) samples when polled.
TelemetrySource = Callable[[], list[tuple[str, str, float]]]

# How a server's stream says how many tokens it sent (`ServerBackend.token_counts`): its `usage`,
# one token per chunk, or the per-token logprobs its requests ask for.
COUNT_USAGE, COUNT_CHUNKS, COUNT_LOGPROBS = "usage", "chunks", "logprobs"


@dataclass(frozen=True)
class GenRequest:
    """One request as a backend sees it."""

    idx: int
    prompt: str
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    ignore_eos: bool = True
    temperature: float = 0.0
    # A chat request's conversation as (role, content) pairs, or (role, content, fields) where a
    # message has more (a tool call, a tool result); empty: one user message, `prompt`.
    messages: tuple[tuple, ...] = ()
    # An open loop sends it this many seconds after its trace's first row (a trace's schedule,
    # `sweep.loadgen.arrivals.trace_offsets`); None: the workload's arrival process decides.
    arrival_s: float | None = None
    # The LoRA adapter it asks for, by name (`backends.lora`); None: the base model.
    adapter: str | None = None
    # Images sent with a chat request's user message, as data URIs (`sweep.datasets.images`).
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenResult:
    """What the engine itself reports about a finished request (server-side counts)."""

    idx: int
    output_tokens: int


class Backend(abc.ABC):
    """A started-once, stopped-always inference backend.

    `interface` tells the trial runner how to drive it: `engine` (in-process `generate`),
    `openai` (an OpenAI-compatible streaming HTTP server) or `tgi` (TGI's native stream).
    `config_class` is the backend's config dataclass, defined beside it in its module.
    """

    interface: ClassVar[str] = "engine"
    config_class: ClassVar[type]
    # The server's own view: role (`records.SERVER_LATENCIES`, `PREFIX_CACHE_HITS`, ...) ->
    # the Prometheus family its server exports it under; the summary maps only these.
    server_series: ClassVar[Mapping[str, str]] = {}
    # Whether the model's own tokenizer makes the prompts and splits streamed text into tokens;
    # False (an attached endpoint's `tokenizer: none`): every token count is the server's `usage`.
    local_tokenizer: ClassVar[bool] = True
    # Facts that analysis reads from the results folder (`facts`), never from a backend's name:
    # whether this is the baseline engine the others are compared against,
    baseline: ClassVar[bool] = False
    # how its config names what it stores (`records.WEIGHT_FORMATS`), and which of its config
    # fields name it (dtype, quantization, KV-cache type, a GGUF file, a speculative config).
    weight_format: ClassVar[str] = rec.WEIGHTS_DECLARED
    roofline_fields: ClassVar[tuple[str, ...]] = ()
    # Why `score` cannot score a text teacher-forced with this backend; None: it can.
    scoring_unavailable: ClassVar[str | None] = "this backend does not score texts yet"

    def __init__(self, config: Any, model_path: str) -> None:
        self.config = config
        self.model_path = model_path

    @property
    def honours_ignore_eos(self) -> bool:
        """Whether a request's `ignore_eos` reaches the engine (an engine's own loop: yes)."""
        return True

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """Optional set-up pieces a GPU node needs to run `config` (`scripts/cluster/piece.sh`).

        A cluster's node types declare the pieces they install as resources
        (`sweep.core.pieces`); a GPU deployment asks for the ones it needs, so it
        lands only where they are, and is refused at once where no node type has them.
        """
        return ()

    def facts(self) -> dict[str, Any]:
        """What the summary rows record about this backend (`records.BACKEND_FACTS`)."""
        columns = [f"backend{rec.CONFIG_SEPARATOR}{name}" for name in self.roofline_fields]
        return {
            rec.BACKEND_BASELINE: self.baseline,
            rec.BACKEND_IGNORE_EOS: self.honours_ignore_eos,
            rec.BACKEND_WEIGHT_FORMAT: self.weight_format,
            rec.BACKEND_ROOFLINE_COLUMNS: json.dumps(columns),
        }

    def startup(self) -> dict[str, Any]:
        """What the last `start` took, by phase (`records.SERVER_START_S`, `START_PHASES`).

        Empty here: the worker times `start` whole. A backend that launches a server times its
        launch to the first healthy answer and splits it at its log's lines
        (`backends.process.startup`).
        """
        return {}

    @abc.abstractmethod
    def start(self) -> None:
        """Load the model or launch the server; raise BackendError on failure."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release everything `start` acquired; must be safe to call twice."""

    def telemetry_sources(self) -> list[TelemetrySource]:
        """Extra samplers (e.g. a server's /metrics) polled during each trial."""
        return []

    def metrics_scrape(self) -> Scrape | None:
        """Reads the server's whole /metrics, at each trial's start and end; None: no server."""
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the backend's own log, for failure reports."""
        return ""

    def log_text(self) -> str | None:
        """The backend's whole log so far, kept as backend.log beside the results (if any)."""
        return None

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """Score one text teacher-forced on the started backend (`backends.scoring`).

        Args:
            ids: the text's token ids under the model's tokenizer, its leading token first.
            top_k: how many of the most likely next tokens to keep at each position.

        Raises:
            BackendError: the backend cannot score (`scoring_unavailable`), or this text.
        """
        raise BackendError(f"scoring is not available: {self.scoring_unavailable}")

    def reset_between_trials(self) -> None:
        """Bring the backend to a clean state between trials (drain, reset caches); default none."""
        return None

    @property
    def adapters(self) -> tuple[str, ...]:
        """The names of the LoRA adapters it serves (`backends.lora`); none by default.

        The load generator gives each request one of them (`sweep.loadgen.adapters`).
        """
        return ()

    @property
    def api(self) -> str:
        """How prompts go out: `completions`, `chat` or `tgi` (TGI's native stream).

        `chat` sends each prompt as one user message with the model's chat template around it;
        its ids and input lengths include the template (`sweep.datasets.chat`).
        """
        return "completions"

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EngineBackend(Backend):
    """An in-process engine that takes a batch of requests and streams tokens via a callback."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Generate all `requests` (submitted together) and return the engine's own counts."""

    @property
    def api(self) -> str:
        """`chat` when the config asks for it (`EngineConfig.api`): the requests' ids carry it."""
        return self.config.api or "completions"


class ServerBackend(Backend):
    """A backend reached over HTTP; the load generator streams requests to `base_url`."""

    interface: ClassVar[str] = "openai"
    # Whether request bodies may carry vLLM's extensions (`ignore_eos`, which forces output
    # lengths, and `stream_options.continuous_usage_stats`). A strict OpenAI endpoint answers 400
    # to a field it does not know, so only servers known to accept them declare them.
    vllm_extensions: ClassVar[bool] = False
    # The body field that names a request's LoRA adapter: vLLM serves each as a `model` of its
    # own; SGLang takes `lora_path` beside the base model's name.
    adapter_field: ClassVar[str] = "model"
    # How the server returns prompt log-probabilities (a key of `backends.prompt_scoring.DIALECTS`:
    # `vllm`, `sglang`, `tgi`); None: it does not, and `score` says `scoring_unavailable`.
    prompt_logprobs: ClassVar[str | None] = None

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """One request per text for its prompt log-probabilities (`prompt_logprobs`'s dialect)."""
        if self.prompt_logprobs is None:
            return super().score(ids, top_k)
        return score_on_server(self, self.prompt_logprobs, ids, top_k)

    @property
    def honours_ignore_eos(self) -> bool:
        """Only a server that takes vLLM's extensions is sent `ignore_eos` at all."""
        return self.vllm_extensions

    @property
    @abc.abstractmethod
    def base_url(self) -> str:
        """Root URL of the running server, e.g. `http://127.0.0.1:8000`."""

    @property
    def served_model(self) -> str:
        """The `model` field of requests: the name the server serves the model under."""
        return self.model_path

    @property
    def send_token_ids(self) -> bool:
        """Whether completions requests carry the prompt as token ids instead of text."""
        return False

    @property
    def max_tokens_field(self) -> str:
        """Chat's output-cap field: `max_tokens`, or `max_completion_tokens` for newer models."""
        return "max_tokens"

    @property
    def token_counts(self) -> str:
        """How the load generator counts the tokens of this server's streams.

        `COUNT_USAGE`: the server's `usage` (final, or with each chunk where it takes vLLM's
        extensions); a stream without one is counted from its re-tokenized text, and its
        requests' counts are marked estimated (`records.OUTPUT_TOKENS_ESTIMATED`).
        `COUNT_CHUNKS`: one token per chunk, empty text included (llama-cpp-python's server,
        which sends no usage); a chunk with a character outside ASCII may carry the several
        tokens of a character split between them, and marks its request's count estimated.
        `COUNT_LOGPROBS`: requests ask for per-token logprobs, and each entry is a token: exact,
        at the server's cost of computing them.
        """
        return COUNT_USAGE

    def metrics_scrape(self) -> Scrape | None:
        """`/metrics` beside the API, asked with the request headers (an API key)."""
        return Scrape(f"{self.base_url}/metrics", self.request_headers)

    def request_headers(self) -> dict[str, str]:
        """Headers every request carries, read now (secrets from the environment as `Secret`)."""
        return {}

    def request_body(self) -> dict[str, Any]:
        """Fields merged into every request body, read now (e.g. a gateway's own options)."""
        return {}


class Secret(str):
    """A value read from the environment: sent as is, never shown (its repr is `***`).

    The load generator redacts every `Secret` it sends from the error messages it records.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"
