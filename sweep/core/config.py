"""The config dataclasses of every group but `backend` (each backend owns its own).

The datasets' are in `sweep.core.dataset_configs`, the proxies' in `sweep.core.proxy_configs` and
the quality set's in `sweep.core.quality_config`; they are re-exported here, so `Config` and its
groups read from one place.

YAML under `conf/` holds the data; these dataclasses hold the types, defaults and validation
(`__post_init__`). `sweep.plan.schema` registers them in Hydra's ConfigStore; `OmegaConf.to_object`
turns a composed config into these plain dataclasses, and only those cross into Ray, so the
worker, the load generator and analysis read the same definitions (the stream rule among them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from sweep.core.dataset_configs import (
    GROUP_DISTRIBUTIONS,
    OVERFLOW_MODES,
    THINK_TIME_DISTS,
    DatasetConfig,
    HFDatasetConfig,
    ImagesDatasetConfig,
    MultiTurnDatasetConfig,
    PromptsDatasetConfig,
    RandomDatasetConfig,
    SharedPrefixDatasetConfig,
    TraceDatasetConfig,
    check_paraphrase_rate,
)
from sweep.core.errors import check_choice, check_positive, raise_config
from sweep.core.missing import MISSING
from sweep.core.proxy_configs import (
    PROXY_TRUNCATION_SIDES,
    ClipProxyConfig,
    ProxyConfig,
    SemanticCacheProxyConfig,
)
from sweep.core.quality_config import QUALITY_TOO_LONG, QualityConfig
from sweep.core.structured import load_constraint
from sweep.core.tune_config import TuneConfig

# The config groups: an option of each is chosen per trial (`conf/<group>/<option>.yaml`).
GROUPS = (
    "model", "backend", "workload", "dataset", "hardware", "cluster", "output", "tracking",
    "search", "proxy", "quality",
)  # fmt: skip
# How trials become W&B runs (`TrackingConfig.runs`); `auto` picks one of the other two.
TRACKING_RUNS = ("auto", "per_trial", "per_deployment")
WORKLOAD_MODES = ("latency_bound", "throughput_bound", "offline_batch", "closed_loop", "open_loop")
HTTP_CLIENTS = ("asyncio", "aiohttp")  # `sweep.loadgen.http.CLIENTS`' keys


def streams_of(mode: str, concurrency: int | None, batch_size: int | None) -> int | None:
    """Requests a workload keeps in flight: the one rule (`WorkloadConfig.streams`).

    One at a time for `latency_bound`; the concurrency cap for `open_loop` (None: no cap);
    otherwise the concurrency, else the batch size. Analysis applies it to summary columns.
    """
    if mode == "latency_bound":
        return 1
    if mode == "open_loop":
        return concurrency
    return concurrency or batch_size


# Fields added after trial ids were first recorded, with the default each was added with
# (`group.key`). A trial whose field holds that default hashes as if the field did not exist
# (`sweep.spec.hash_tree`), so adding an option moves no existing id. Append here whenever a
# field is added to a group that trial ids hash (model, backend, workload, dataset, hardware).
ADDED_LATER: dict[str, Any] = {
    "backend.jitter": 0.0,
    "workload.duration_s": None,
    "workload.ramp": "none",
    "workload.ramp_s": None,
    "workload.ramp_start_rate": None,
    "workload.stages": [],
    "workload.slice_s": None,
    "dataset.allow_repeats": False,
    "backend.api": None,  # the in-process engines' chat switch (servers' default is completions)
    "dataset.paraphrase_rate": 0.0,
    "backend.send_token_ids": False,  # the openai backend's: prompts as token ids
    "workload.repeat_to_minimum": False,
    "backend.reasoning_tokens": 0,  # the sim's reasoning phase
    "backend.reasoning_field": "reasoning",
    "backend.repack": True,  # llama.cpp's weight repacking (`--no-repack` when False)
    "backend.lora_adapters": {},  # LoRA adapters served (`backends.lora`)
    "backend.lora_count": None,
    "backend.max_loras": None,
    "backend.max_loras_per_batch": None,
    "backend.max_lora_rank": None,
    "backend.ms_per_image": 0.0,  # the sim's vision encoder
    "backend.tokens_per_image": 0,
    "backend.prompt_usage_skew": 0,  # the sim's planted prompt miscount
    "workload.lora_assignment": "uniform",  # which adapter each request asks for
    "workload.lora_skew": 1.0,
    "dataset.start_s": 0.0,  # a trace's window and its rows too long for the context
    "dataset.duration_s": None,
    "dataset.too_long": "refuse",
    "dataset.lora_column": None,  # a trace's adapter column
    "workload.http_client": "asyncio",  # the load generator's own client; aiohttp's by choice
    "workload.cancel_rate": 0.0,  # request cancellation (`sweep.loadgen.cancel`)
    "workload.cancel_after": "delay",
    "workload.cancel_delay_s": 0.0,
    "workload.cancel_after_tokens": None,
    "workload.structured": "none",  # structured outputs (`sweep.core.structured`)
    "workload.structured_spec": None,
    "workload.structured_enforce": True,
    "dataset.tools": None,  # tool-calling sessions (`sweep.core.tools`)
    "backend.tool_call_rate": 0.0,  # the sim's tool calls under tool_choice=auto
    "dataset.tool_choice": "auto",
    "dataset.tool_latency_s": 0.0,
    "dataset.tool_latency_dist": "fixed",
    "backend.landscape": "none",  # the sim's known capacity landscape (tuning's truth)
    "backend.max_num_batched_tokens": 0,
    "backend.chunked_prefill": False,
    # A whole group added later: its section hashes away while it equals this default.
    "proxy": {"name": "none"},
}


@dataclass
class ModelConfig:
    """What to load: a hub id or local directory, or a model the project generates.

    A generated model has `path: generated` and a `generator`. A `path` set to anything else
    is what loads, also on top of a generated model (the default `tiny_llama`): the generator is
    then dropped, and a name that was the generator's becomes the path's last part. Parameters
    and context are read from the model's own files unless set (`num_params_b`, `max_model_len`).
    """

    name: str = MISSING
    path: str = MISSING
    generator: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    num_params_b: float | None = None
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        check_positive("model", num_params_b=self.num_params_b, max_model_len=self.max_model_len)
        if self.generator is not None and self.path != GENERATED_MODEL_PATH:
            if self.name == self.generator:  # the generated model's name would mislabel it
                self.name = model_name_of(self.path)
            self.generator = None


GENERATED_MODEL_PATH = "generated"  # `model.path` of a model the project makes (`generator`)


def model_name_of(path: str) -> str:
    """A model's name from its path: a directory's or hub id's last part."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] or str(path)


RAMPS = ("none", "linear", "exponential")
# When a request chosen for cancellation is closed (`WorkloadConfig.cancel_after`).
CANCEL_AFTER = ("delay", "first_token", "tokens")
LORA_ASSIGNMENTS = ("uniform", "zipf", "dataset", "base")


@dataclass
class StageConfig:
    """One stage of `workload.stages`, checked by `WorkloadConfig`.

    An open loop at `request_rate` or a closed loop of `concurrency` streams, for `duration_s`.
    """

    request_rate: float | None = None
    concurrency: int | None = None
    duration_s: float | None = None

    @property
    def mode(self) -> str:
        """The workload mode this stage runs: `open_loop` or `closed_loop`."""
        return "open_loop" if self.request_rate is not None else "closed_loop"


@dataclass
class WorkloadConfig:
    """How load is offered: mode, request count, batch size or concurrency, output lengths."""

    name: str = MISSING
    num_requests: int = 16
    batch_size: int = 1
    concurrency: int | None = None
    request_rate: float | None = None
    burstiness: float = 1.0
    output_len: int = 32
    output_range_ratio: float = 0.0
    ignore_eos: bool = True
    temperature: float = 0.0
    warmup_requests: int = 1
    discard_first_batch: bool = False
    timeout_s: float = 600.0
    trial_timeout_s: float = 3600.0
    seed: int = 0
    # Load-generator processes (shards of the schedule) for loads one event loop cannot offer.
    client_processes: int = 1
    # Measure only while the offered load is at its target (sweep.core.trust); trim is the
    # fraction of the open-loop schedule dropped at each end.
    steady_state: bool = False
    steady_state_trim: float = 0.1
    # A trial shorter than this, or with fewer completed requests, is marked too short to trust.
    min_duration_s: float = 0.0
    min_requests: int = 0
    # An in-process engine's trial sends its request set again, whole, until it is no longer
    # too short by those two minimums (`sweep.loadgen.engine`): long enough on any machine.
    repeat_to_minimum: bool = False
    # The load's shape over time (`sweep.loadgen.stages`): stop sending new requests duration_s
    # after the start (num_requests stays an upper bound; requests in flight finish); an open
    # loop's ramp from ramp_start_rate to request_rate over ramp_s (its requests are outside the
    # steady-state window); stages run back to back in one trial.
    duration_s: float | None = None
    ramp: str = "none"
    ramp_s: float | None = None
    ramp_start_rate: float | None = None
    stages: list[StageConfig] = field(default_factory=list)
    # Window of timeslices.parquet (`sweep.core.timeslices`); None: a twentieth of the trial.
    slice_s: float | None = None
    # Which LoRA adapter each request asks for, where the backend serves some
    # (`sweep.loadgen.adapters`): `uniform`, `zipf` (adapter k of n by 1 / k^lora_skew) or
    # `dataset` (each prompt's own, e.g. a trace's column), or `base` (none: the base model, the
    # adapters loaded); drawn from `seed`.
    lora_assignment: str = "uniform"
    lora_skew: float = 1.0
    # The load generator's HTTP client (`sweep.loadgen.http.CLIENTS`): its own asyncio one, or
    # aiohttp's, for what only aiohttp does.
    http_client: str = "asyncio"
    # Request cancellation (`sweep.loadgen.cancel`, as AIPerf's): the client closes the
    # connection of `cancel_rate` of the measured requests, chosen from `seed`: `delay`:
    # `cancel_delay_s` after the request was fully sent; `first_token`: at its first output
    # token; `tokens`: once `cancel_after_tokens` output tokens arrived (prefill or decode).
    cancel_rate: float = 0.0
    cancel_after: str = "delay"
    cancel_delay_s: float = 0.0
    cancel_after_tokens: int | None = None
    # Structured outputs (`sweep.core.structured`): each request asks for an answer that keeps to
    # a constraint, `json_schema`, `regex`, `choice` or `grammar`, named by `structured_spec` (a
    # shipped one, e.g. `person`, or a file; None: the kind's default); every answer is checked.
    # `structured_enforce`: the server is asked to keep to it (false: the same requests without).
    structured: str = "none"
    structured_spec: str | None = None
    structured_enforce: bool = True

    def __post_init__(self) -> None:
        check_choice("workload", "name", self.name, WORKLOAD_MODES)
        check_choice("workload", "lora_assignment", self.lora_assignment, LORA_ASSIGNMENTS)
        check_positive("workload", lora_skew=self.lora_skew)
        check_choice("workload", "http_client", self.http_client, HTTP_CLIENTS)
        self._check_trust_settings()
        self._check_shape()
        self._check_cancel()
        load_constraint(self.structured, self.structured_spec)  # one line: a bad kind or spec
        check_positive(
            "workload",
            num_requests=self.num_requests,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            request_rate=self.request_rate,
            burstiness=self.burstiness,
            output_len=self.output_len,
            timeout_s=self.timeout_s,
            trial_timeout_s=self.trial_timeout_s,
        )
        if self.discard_first_batch and self.num_requests <= self.batch_size:
            raise_config(
                f"workload.num_requests={self.num_requests} leaves nothing to measure after "
                f"discarding the first batch of {self.batch_size}"
            )
        if self.warmup_requests < 0:
            raise_config(f"workload.warmup_requests must be >= 0, got {self.warmup_requests}")
        if not 0.0 <= self.output_range_ratio < 1.0:
            raise_config(
                f"workload.output_range_ratio must be in [0, 1), got {self.output_range_ratio}"
            )

    @property
    def streams(self) -> int | None:
        """Requests kept in flight (the cap for open loop; None = no cap): `streams_of`."""
        return streams_of(self.name, self.concurrency, self.batch_size)

    def stage_workload(self, index: int) -> WorkloadConfig:
        """Stage `index` of `stages` as a workload of its own (its steady-state window)."""
        stage = self.stages[index]
        return dataclasses.replace(
            self,
            name=stage.mode,
            request_rate=stage.request_rate,
            concurrency=stage.concurrency,
            duration_s=stage.duration_s,
            stages=[],
            client_processes=1,
        )

    def _check_shape(self) -> None:
        """Duration, ramp and stages: one line naming the key, before any request is sent."""
        check_positive("workload", duration_s=self.duration_s, slice_s=self.slice_s)
        check_choice("workload", "ramp", self.ramp, RAMPS)
        if self.ramp != "none":
            rate = self.request_rate
            if self.name != "open_loop" or rate is None or math.isinf(rate) or self.stages:
                raise_config(
                    f"workload.ramp={self.ramp} raises an open loop's rate: it needs "
                    "workload=open_loop with a finite workload.request_rate and no stages"
                )
            if self.ramp_s is None or self.ramp_s <= 0:
                raise_config(f"workload.ramp={self.ramp} needs workload.ramp_s > 0 (seconds)")
            start = self.ramp_start_rate
            if start is not None and not (0 <= start < rate and (start or self.ramp == "linear")):
                raise_config(
                    f"workload.ramp_start_rate={start} must be below the target request_rate "
                    f"{rate} (and > 0 for an exponential ramp)"
                )
        self.stages = [_stage(i, s) for i, s in enumerate(self.stages)]
        if not self.stages:
            return
        if self.name not in ("open_loop", "closed_loop"):
            raise_config(f"workload.stages need workload=open_loop or closed_loop, not {self.name}")
        if self.duration_s is not None or self.client_processes > 1:
            raise_config(
                "workload.stages: each stage has its own duration_s and they run from one "
                "process; unset workload.duration_s and workload.client_processes"
            )

    def _check_cancel(self) -> None:
        """Request cancellation's settings: one line naming the key, before any request is sent."""
        check_choice("workload", "cancel_after", self.cancel_after, CANCEL_AFTER)
        rate, delay, tokens = self.cancel_rate, self.cancel_delay_s, self.cancel_after_tokens
        if not 0.0 <= rate <= 1.0:
            raise_config(f"workload.cancel_rate must be in [0, 1] (a fraction), got {rate}")
        if not delay >= 0.0:
            raise_config(f"workload.cancel_delay_s must be >= 0 seconds, got {delay}")
        if tokens is not None and tokens < 1:
            raise_config(f"workload.cancel_after_tokens must be >= 1, got {tokens}")
        if self.cancel_after == "tokens" and tokens is None:
            raise_config("workload.cancel_after=tokens needs workload.cancel_after_tokens >= 1")
        if tokens is not None and self.cancel_after != "tokens":
            raise_config(
                f"workload.cancel_after_tokens={tokens} counts for cancel_after=tokens only, "
                f"not cancel_after={self.cancel_after}"
            )
        if delay and self.cancel_after != "delay":
            raise_config(
                f"workload.cancel_delay_s={delay} times cancel_after=delay only, "
                f"not cancel_after={self.cancel_after}"
            )

    def _check_trust_settings(self) -> None:
        """Sharding, steady-state window and minimum-size settings."""
        check_positive("workload", client_processes=self.client_processes)
        if not 0.0 <= self.steady_state_trim < 0.5:
            raise_config(
                f"workload.steady_state_trim must be in [0, 0.5), got {self.steady_state_trim}"
            )
        if self.min_duration_s < 0 or self.min_requests < 0:
            raise_config("workload.min_duration_s and workload.min_requests must be >= 0")
        if self.repeat_to_minimum and not (self.min_duration_s or self.min_requests):
            raise_config(
                "workload.repeat_to_minimum repeats the requests until the trial reaches "
                "workload.min_duration_s and workload.min_requests: set one of them above 0"
            )
        if self.repeat_to_minimum and self.duration_s is not None:
            raise_config(
                "workload.repeat_to_minimum and workload.duration_s bound a trial from below "
                "and from above: set one of them"
            )
        if self.client_processes == 1:
            return
        if self.name in ("latency_bound", "offline_batch"):
            raise_config(f"workload.client_processes > 1 cannot shard a {self.name} workload")
        streams = self.streams
        if streams is not None and streams < self.client_processes:
            raise_config(
                f"workload.client_processes={self.client_processes} exceeds the concurrency "
                f"{streams}: every process needs at least one stream"
            )


@dataclass
class HardwareConfig:
    """One accelerator (or a CPU instance): price and the limits used for cost and roofline."""

    name: str = MISSING
    accelerator_type: str | None = None
    price_per_hour: float = MISSING
    memory_gb: float = MISSING
    memory_bandwidth_gb_s: float = MISSING
    peak_fp16_tflops: float = MISSING
    peak_bf16_tflops: float | None = None

    def __post_init__(self) -> None:
        check_positive(
            "hardware",
            price_per_hour=self.price_per_hour,
            memory_gb=self.memory_gb,
            memory_bandwidth_gb_s=self.memory_bandwidth_gb_s,
            peak_fp16_tflops=self.peak_fp16_tflops,
        )


@dataclass
class ClusterConfig:
    """Where Ray runs: a local instance started in-process, or an existing cluster."""

    name: str = "local"
    address: str | None = None
    node_ip_address: str = "127.0.0.1"
    num_cpus: int | None = None
    num_gpus: int | None = None
    include_dashboard: bool = False
    max_retries: int = 2
    start_timeout_s: float = 1800.0
    # How long a deployment that no alive node fits may wait while no node that fits is on its
    # way either; then its trials are recorded failed (`no_node`) and the rest of the sweep goes on.
    node_wait_s: float = 1200.0
    # How long it may wait while a node that fits is launching or being set up (a first boot
    # pulls the node image, ~15 GB): the autoscaler is making one, it is not a node that never
    # comes (`sweep.driver.node_wait`).
    node_setup_wait_s: float = 3600.0
    # Environment variables handed to the workers of a cluster the driver joins (never written
    # to results or logs): gated models need HF_TOKEN on every node.
    forward_env: list[str] = field(default_factory=lambda: ["HF_TOKEN"])
    # When resources idle and a deployment has trials not begun, a second task takes half.
    share_idle_gpus: bool = True
    # Keep the load generator on cores of its own, away from Ray's daemons and the launched
    # server (`sweep.worker.isolation`): auto where a node has 4 or more cores, on, off.
    isolate_client: str = "auto"
    # Where the node is too small to split, run a deployment with no GPU on as many cores as it
    # asked Ray for, the quietest ones no other deployment holds
    # (`sweep.worker.isolation.pin_quietest`). Off by default: an engine whose thread pool is larger
    # than `backend.num_cpus` (llama.cpp's and CTranslate2's defaults) runs several times slower on
    # fewer cores than threads.
    pin_cpu_deployments: bool = False

    def __post_init__(self) -> None:
        check_positive("cluster", start_timeout_s=self.start_timeout_s,
                       node_wait_s=self.node_wait_s,
                       node_setup_wait_s=self.node_setup_wait_s)  # fmt: skip
        check_choice("cluster", "isolate_client", self.isolate_client, ("auto", "on", "off"))
        for name in self.forward_env:
            if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
                raise_config(f"cluster.forward_env: {name!r} is not an environment variable name")
        if self.max_retries < 0:
            raise_config(f"cluster.max_retries must be >= 0, got {self.max_retries}")


@dataclass
class OutputConfig:
    """Where results go: a local directory or a `pyarrow.fs` URI."""

    dir: str = "results"


@dataclass
class TrackingConfig:
    """Experiment tracking (W&B); `none` turns it off.

    `runs` is how trials become W&B runs: `per_trial` (one run each), `per_deployment` (one run
    per deployment, its trials as steps and table rows), or `auto`: per deployment when the sweep
    has more than `group_above` trials, one run per trial otherwise.
    """

    name: str = "none"
    project: str | None = None
    entity: str | None = None
    mode: str | None = None
    runs: str = "auto"
    group_above: int = 200

    def __post_init__(self) -> None:
        check_choice("tracking", "runs", self.runs, TRACKING_RUNS)
        check_positive("tracking", group_above=self.group_above)


@dataclass
class SLOConfig:
    """Service-level objectives: per-request bounds (goodput) and per-trial limits (search).

    `ttft_ms`, `tpot_ms`, `e2e_ms` and `answer_ms` (the time to a reasoning model's first answer
    token; TTFT for a model that does not reason) bound each request; a request meeting all of
    them counts toward goodput (DistServe's definition), and `goodput_fraction` asks that share of
    a trial's requests to meet them. The `<metric>_ms_<stat>` fields bound the trial's summary
    statistic (`ttft_ms_p99: 500`, `answer_ms_p99: 5000`), and `limits` bounds any other numeric
    summary column by name
    (`server_queue_ms_p99: 100`). A trial meets the SLO when every bound set holds
    (`sweep.core.slo`); None means no bound.
    """

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    answer_ms: float | None = None
    goodput_fraction: float | None = None
    ttft_ms_mean: float | None = None
    ttft_ms_median: float | None = None
    ttft_ms_p90: float | None = None
    ttft_ms_p99: float | None = None
    tpot_ms_mean: float | None = None
    tpot_ms_median: float | None = None
    tpot_ms_p90: float | None = None
    tpot_ms_p99: float | None = None
    itl_ms_mean: float | None = None
    itl_ms_median: float | None = None
    itl_ms_p90: float | None = None
    itl_ms_p99: float | None = None
    e2e_ms_mean: float | None = None
    e2e_ms_median: float | None = None
    e2e_ms_p90: float | None = None
    e2e_ms_p99: float | None = None
    answer_ms_mean: float | None = None
    answer_ms_median: float | None = None
    answer_ms_p90: float | None = None
    answer_ms_p99: float | None = None
    limits: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive("slo", **self.request_bounds())
        check_positive("slo", **self.trial_limits())
        fraction = self.goodput_fraction
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise_config(f"slo.goodput_fraction must be in (0, 1], got {fraction}")
        if fraction is not None and self.request_bounds() == {}:
            raise_config(
                "slo.goodput_fraction needs a per-request bound: set slo.ttft_ms, slo.tpot_ms, "
                "slo.e2e_ms or slo.answer_ms"
            )

    def request_bounds(self) -> dict[str, float]:
        """The per-request bounds that are set (`ttft_ms`, `tpot_ms`, `e2e_ms`, `answer_ms`)."""
        bounds = {
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "e2e_ms": self.e2e_ms,
            "answer_ms": self.answer_ms,
        }
        return {key: value for key, value in bounds.items() if value is not None}

    def trial_limits(self) -> dict[str, float]:
        """Summary column -> upper bound, for every trial-level limit that is set."""
        named = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if "_ms_" in f.name and getattr(self, f.name) is not None
        }
        return {**named, **{key: float(value) for key, value in self.limits.items()}}

    @property
    def is_set(self) -> bool:
        """Whether a search has anything to meet."""
        return bool(self.trial_limits()) or self.goodput_fraction is not None


SEARCH_MODES = ("none", "capacity", "profile", "tune")
SEARCH_SPACINGS = ("linear", "geometric")


@dataclass
class SearchConfig:
    """How a search replaces the load axis of a grid (`search=none`: the grid as written).

    `capacity`: per deployment and grid point, the highest offered load (`workload.request_rate`
    for open loops, `workload.concurrency` for closed loops) whose trial meets the SLO; bracketed
    from `start` by `growth` (down to `min_load` when `start` fails), then narrowed until passing
    and failing loads are within `tolerance` of each other, in at most `max_probes` trials,
    `parallel` probes at a time. `profile`: GuideLLM's sweep, a synchronous probe and a
    maximum-throughput probe, then `points` request rates between them. `target_rate` (req/s)
    turns each capacity into replicas and dollars per hour. A probe whose achieved request rate
    falls below `saturation_ratio` of the offered rate is over-saturated and fails. `tune`:
    configurations chosen by an optimiser over `tune.space` (`sweep.core.tune_config`), each
    measured by a capacity search with these settings. `stop_below` is set by the tuner on each
    configuration's search: the best capacity found so far, below which a failing probe ends the
    search (the configuration is proven worse).
    """

    mode: str = "none"
    start: float | None = None
    min_load: float | None = None
    max_load: float | None = None
    growth: float = 2.0
    tolerance: float = 0.05
    max_probes: int = 10
    parallel: int = 1
    points: int = 6
    spacing: str = "linear"
    target_rate: float | None = None
    saturation_ratio: float = 0.9
    tune: TuneConfig = field(default_factory=TuneConfig)
    stop_below: float | None = None

    def __post_init__(self) -> None:
        check_choice("search", "mode", self.mode, SEARCH_MODES)
        check_choice("search", "spacing", self.spacing, SEARCH_SPACINGS)
        check_positive(
            "search",
            start=self.start,
            min_load=self.min_load,
            max_load=self.max_load,
            max_probes=self.max_probes,
            parallel=self.parallel,
            points=self.points,
            target_rate=self.target_rate,
        )
        if not 0.0 < self.tolerance < 1.0:
            raise_config(f"search.tolerance must be in (0, 1), got {self.tolerance}")
        if self.growth <= 1.0:
            raise_config(f"search.growth must be > 1, got {self.growth}")
        if not 0.0 < self.saturation_ratio <= 1.0:
            raise_config(f"search.saturation_ratio must be in (0, 1], got {self.saturation_ratio}")
        if self.start and self.max_load and self.start > self.max_load:
            raise_config(f"search.start={self.start} is above search.max_load={self.max_load}")
        if self.start and self.min_load and self.min_load > self.start:
            raise_config(f"search.min_load={self.min_load} is above search.start={self.start}")


@dataclass
class SweepMeta:
    """The sweep itself: name, grid axes, repeats and run switches."""

    name: str = "adhoc"
    description: str = ""
    grid: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1
    dry_run: bool = False
    list_trials: bool = False  # the dry run lists every trial, not only the plan's summary
    overwrite: bool = False
    retry_failed: bool = False
    # The report at the end (summary.csv, plots, report.md and .html); without it a sweep writes
    # its trials only, and `python -m analysis RESULTS` writes the same report later.
    report: bool = True

    def __post_init__(self) -> None:
        check_positive("sweep", repeats=self.repeats)
        self.grid = _dotted_axes(self.grid)
        for axis, values in self.grid.items():
            if not isinstance(values, list | tuple) or not values:
                raise_config(f"sweep.grid.{axis} must be a non-empty list, got {values!r}")


def _dotted_axes(grid: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys are dotted axes: `{workload: {batch_size: [..]}}` -> `workload.batch_size`.

    `+sweep.grid.workload.batch_size=[..]` on the command line makes the nested form.
    """
    axes: dict[str, Any] = {}
    for key, values in grid.items():
        if isinstance(values, dict):
            axes.update(_dotted_axes(values, f"{prefix}{key}."))
        else:
            axes[f"{prefix}{key}"] = values
    return axes


@dataclass
class Config:
    """The whole composed config of one grid point."""

    model: ModelConfig = MISSING
    backend: Any = MISSING
    workload: WorkloadConfig = MISSING
    dataset: Any = MISSING
    hardware: HardwareConfig = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    proxy: Any = field(default_factory=ProxyConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    sweep: SweepMeta = field(default_factory=SweepMeta)
    reference: Any = None
    seed: int = 0


def _stage(index: int, stage: Any) -> StageConfig:
    """A checked `StageConfig` from a stage as written (a dict where built by hand)."""
    where = f"workload.stages[{index}]"
    if not isinstance(stage, StageConfig):
        if not isinstance(stage, dict):
            raise_config(f"{where} must be a mapping of request_rate or concurrency and duration_s")
        unknown = sorted(set(stage) - {f.name for f in dataclasses.fields(StageConfig)})
        if unknown:
            raise_config(
                f"{where} has unknown keys {unknown}: use request_rate or concurrency, "
                "and duration_s"
            )
        stage = StageConfig(**stage)
    if stage.duration_s is None:
        raise_config(f"{where} has no duration_s: every stage runs for a set time")
    if (stage.request_rate is None) == (stage.concurrency is None):
        raise_config(
            f"{where} must set exactly one of request_rate (an open-loop stage) or "
            "concurrency (a closed-loop stage)"
        )
    check_positive(where, **dataclasses.asdict(stage))
    if stage.request_rate is not None and math.isinf(stage.request_rate):
        raise_config(f"{where}.request_rate must be finite: a stage sends for duration_s")
    return stage


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested dicts; lists and dicts below a leaf become JSON strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            if name.count(".") < 1:
                flat.update(flatten(value, f"{name}."))
                continue
        if isinstance(value, dict | list | tuple):
            value = json.dumps(value, sort_keys=True, default=str)
        flat[name] = value
    return flat


__all__ = [  # the group configs defined beside this module, read from here
    "GROUP_DISTRIBUTIONS", "OVERFLOW_MODES", "PROXY_TRUNCATION_SIDES", "QUALITY_TOO_LONG",
    "THINK_TIME_DISTS", "ClipProxyConfig", "DatasetConfig", "HFDatasetConfig",
    "ImagesDatasetConfig",
    "MultiTurnDatasetConfig", "PromptsDatasetConfig", "ProxyConfig", "QualityConfig",
    "RandomDatasetConfig", "SemanticCacheProxyConfig", "TuneConfig",
    "SharedPrefixDatasetConfig", "TraceDatasetConfig", "check_paraphrase_rate",
]  # fmt: skip
