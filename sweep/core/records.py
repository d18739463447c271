"""Column names and Arrow schemas of every result table, defined once.

The trial writes these tables, `sweep.core.results` stores them and `analysis` reads them; all three
import the names from here so that a column is never spelled twice. Units are in the names:
`_s` seconds, `_ms` milliseconds, `_tok_s` tokens per second, `_mb` mebibytes.
"""

from __future__ import annotations

import pyarrow as pa

# --- requests.parquet: one row per measured request (warm-up requests are not recorded) ---
TRIAL_ID = "trial_id"
REQUEST_IDX = "request_idx"
BATCH_IDX = "batch_idx"
SCHEDULED_S = "scheduled_s"
SENT_S = "sent_s"
FIRST_TOKEN_S = "first_token_s"
END_S = "end_s"
TTFT_S = "ttft_s"
E2E_S = "e2e_s"
TPOT_S = "tpot_s"
ITL_S = "itl_s"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
REQUESTED_OUTPUT_TOKENS = "requested_output_tokens"
SERVER_OUTPUT_TOKENS = "server_output_tokens"
STATUS = "status"
ERROR = "error"
# False for requests outside the steady-state window (`sweep.core.trust`); summaries skip them.
IN_WINDOW = "in_window"
# Multi-turn conversations (`sweep.loadgen.sessions`), null in other trials: the request's
# session (0, 1, ...), its turn in the session (1 = the first user message), and how many earlier
# turns were left out of its history to fit the context (`dataset.on_overflow=truncate`).
SESSION = "session"
TURN = "turn"
DROPPED_TURNS = "dropped_turns"
# The part of the load that sent the request (`sweep.loadgen.stages`): PHASE_RAMP while an open
# loop's rate still rises to its target (`workload.ramp`; never in the window), else
# PHASE_TARGET; STAGE is the index of its `workload.stages` entry (null without stages).
PHASE = "phase"
PHASE_RAMP = "ramp"
PHASE_TARGET = "target"
STAGE = "stage"
# Whether a semantic-cache proxy answered the request from its cache (`backends.proxy`): true for
# a hit, false for a miss, null without such a proxy. The proxy says so in the CACHE_HEADER of
# each response (`hit` or `miss`).
CACHE_HIT = "cache_hit"
CACHE_HEADER = "X-Cache"
# The LoRA adapter the request asked for (`backends.lora`; null: the base model), the images
# its chat message carried (`sweep.datasets.images`; 0 without), and its prompt tokens as the
# server counted them (`usage.prompt_tokens`: image tokens included; null where not reported).
ADAPTER = "adapter"
IMAGES = "images"
SERVER_INPUT_TOKENS = "server_input_tokens"
# Reasoning models (`sweep.core.stream_chunks`): of OUTPUT_TOKENS, those of the model's thinking
# (the server's count where its usage says, else the reasoning deltas') and the answer's, which
# add up to it; ANSWER_S is the time from sending to the first answer token (TTFT for a model that
# does not reason; null when no answer token came: the output cap ended the thinking).
REASONING_TOKENS = "reasoning_tokens"
ANSWER_TOKENS = "answer_tokens"
ANSWER_S = "answer_s"
# Exact output counts (`sweep.loadgen.attribution.estimated`): OUTPUT_TOKENS_ESTIMATED is true
# where the server's stream did not count a request's output tokens (no `usage`, running count or
# logprobs entry covers its last chunks, so their text was re-tokenized, or a chunk of a
# one-token-per-chunk server may have carried more than one); the summary's
# ESTIMATED_OUTPUT_REQUESTS counts such completed requests in the window (SHORT_OUTPUT_REQUESTS
# leaves them out), and the report's request checks name the trials that have any.
OUTPUT_TOKENS_ESTIMATED = "output_tokens_estimated"
ESTIMATED_OUTPUT_REQUESTS = "estimated_output_requests"
# Requests that ended early (`sweep.loadgen.cancel`): TIMED_OUT is true where the client gave up
# after `workload.timeout_s` (a failed request, its error line `timeout: ...`, its output tokens
# so far kept); CANCELLED where the client closed it on purpose (`workload.cancel_rate`): its
# STATUS is STATUS_CANCELLED, neither ok nor failed, and CANCEL_S is the time from sending it to
# closing it (null otherwise). The summary counts them in TIMED_OUT_REQUESTS (of the failed
# ones) and CANCELLED_REQUESTS (not in FAILED_REQUESTS); both are null for records without them.
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
CANCEL_S = "cancel_s"
TIMED_OUT_REQUESTS = "timed_out_requests"
CANCELLED_REQUESTS = "cancelled_requests"
# How soon the server let go of the requests the client hung up on (cancelled or timed out;
# `sweep.core.cancel_release`, absent from trials without any): the mean time it held one, from
# its sampled running and waiting requests beside the client's in flight (Little's law), the
# most it held at one sample, and the samples averaged (null: the server's count not sampled).
CANCEL_RELEASE_MS_MEAN = "cancel_release_ms_mean"
CANCEL_HELD_MAX = "cancel_held_requests_max"
CANCEL_RELEASE_SAMPLES = "cancel_release_samples"

# A structured-output trial's requests (`sweep.core.structured`): whether a completed answer kept
# to the trial's constraint (null: not checked) and, where not, why in one line. The summary's
# STRUCTURED_CHECKED counts the checked answers and STRUCTURED_VALID_FRACTION the share valid.
STRUCTURED_VALID = "structured_valid"
STRUCTURED_ERROR = "structured_error"
STRUCTURED_CHECKED = "structured_checked_requests"
STRUCTURED_VALID_FRACTION = "structured_valid_fraction"

# Tool-calling sessions (`sweep.loadgen.sessions` with `dataset.tools`), null in other trials:
# the calls the reply made, the first one's function, whether every call named a function of the
# set with arguments valid against its schema (`sweep.core.tools`) and if not why, when the
# calls' arguments were complete (from sent: what an agent waits before it can run the tool),
# whether the turn sent tool results rather than a user message, and the tool latency waited
# before it. CACHED_INPUT_TOKENS (any chat or completions request): the prompt's tokens the
# server's prefix cache held, where its usage says (vLLM: `--enable-prompt-tokens-details`).
TOOL_CALLS = "tool_calls"
TOOL_NAME = "tool_name"
TOOL_ARGS_VALID = "tool_args_valid"
TOOL_ARGS_ERROR = "tool_args_error"
TOOL_CALL_S = "tool_call_s"
TOOL_RESULT = "tool_result"
TOOL_WAIT_S = "tool_wait_s"
CACHED_INPUT_TOKENS = "cached_input_tokens"

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"

REQUESTS_SCHEMA = pa.schema(
    [
        pa.field(TRIAL_ID, pa.string()),
        pa.field(REQUEST_IDX, pa.int64()),
        pa.field(BATCH_IDX, pa.int64()),
        pa.field(SCHEDULED_S, pa.float64()),
        pa.field(SENT_S, pa.float64()),
        pa.field(FIRST_TOKEN_S, pa.float64()),
        pa.field(END_S, pa.float64()),
        pa.field(TTFT_S, pa.float64()),
        pa.field(E2E_S, pa.float64()),
        pa.field(TPOT_S, pa.float64()),
        pa.field(ITL_S, pa.list_(pa.float64())),
        pa.field(INPUT_TOKENS, pa.int64()),
        pa.field(OUTPUT_TOKENS, pa.int64()),
        pa.field(REQUESTED_OUTPUT_TOKENS, pa.int64()),
        pa.field(SERVER_OUTPUT_TOKENS, pa.int64()),
        pa.field(STATUS, pa.string()),
        pa.field(ERROR, pa.string()),
        pa.field(IN_WINDOW, pa.bool_()),
        pa.field(SESSION, pa.int64()),
        pa.field(TURN, pa.int64()),
        pa.field(DROPPED_TURNS, pa.int64()),
        pa.field(PHASE, pa.string()),
        pa.field(STAGE, pa.int64()),
        pa.field(CACHE_HIT, pa.bool_()),
        # reasoning models
        pa.field(REASONING_TOKENS, pa.int64()),
        pa.field(ANSWER_TOKENS, pa.int64()),
        pa.field(ANSWER_S, pa.float64()),
        pa.field(OUTPUT_TOKENS_ESTIMATED, pa.bool_()),
        pa.field(ADAPTER, pa.string()),
        pa.field(IMAGES, pa.int64()),
        pa.field(SERVER_INPUT_TOKENS, pa.int64()),
        pa.field(TIMED_OUT, pa.bool_()),
        pa.field(CANCELLED, pa.bool_()),
        pa.field(CANCEL_S, pa.float64()),
        pa.field(STRUCTURED_VALID, pa.bool_()),
        pa.field(STRUCTURED_ERROR, pa.string()),
        pa.field(TOOL_CALLS, pa.int64()),
        pa.field(TOOL_NAME, pa.string()),
        pa.field(TOOL_ARGS_VALID, pa.bool_()),
        pa.field(TOOL_ARGS_ERROR, pa.string()),
        pa.field(TOOL_CALL_S, pa.float64()),
        pa.field(TOOL_RESULT, pa.bool_()),
        pa.field(TOOL_WAIT_S, pa.float64()),
        pa.field(CACHED_INPUT_TOKENS, pa.int64()),
    ]
)

# --- timeseries.parquet: long format, one row per sample ---
T_S = "t_s"
SOURCE = "source"
METRIC = "metric"
VALUE = "value"

TIMESERIES_SCHEMA = pa.schema(
    [
        pa.field(TRIAL_ID, pa.string()),
        pa.field(T_S, pa.float64()),
        pa.field(SOURCE, pa.string()),
        pa.field(METRIC, pa.string()),
        pa.field(VALUE, pa.float64()),
    ]
)

# Timeseries metric names (source, metric).
PROCESS_RSS_MB = "rss_mb"
PROCESS_CPU_PERCENT = "cpu_percent"
GPU_MEMORY_USED_MB = "gpu_memory_used_mb"
GPU_UTILIZATION_PERCENT = "gpu_utilization_percent"
GPU_POWER_W = "gpu_power_w"
KV_CACHE_USAGE_PERCENT = "kv_cache_usage_percent"
RUNNING_REQUESTS = "running_requests"
WAITING_REQUESTS = "waiting_requests"
# Speculative decoding (vLLM): cumulative counters, and accepted / drafted within the trial.
SPEC_DRAFT_TOKENS = "spec_draft_tokens"
SPEC_ACCEPTED_TOKENS = "spec_accepted_tokens"
SPEC_ACCEPTANCE_PERCENT = "spec_acceptance_percent"

# --- timeslices.parquet: one row per window of `workload.slice_s` (`sweep.core.timeslices`) ---
# Windows run from the first send to the last end, on the trial's clock (as `t_s`). Requests
# count where they started (`sent_s`) or ended (`end_s`; finished = ok, else failed), in flight
# at the window's end; output tokens where they arrived; TTFT of the ok requests sent in the
# window and ITL of the gaps ending in it; the server's KV-cache use and waiting requests are the
# means of its telemetry samples in the window (null where it has none).
SLICE_IDX = "slice_idx"
SLICE_START_S = "slice_start_s"
SLICE_END_S = "slice_end_s"
REQUESTS_STARTED = "requests_started"
REQUESTS_FINISHED = "requests_finished"
REQUESTS_FAILED = "requests_failed"
REQUESTS_IN_FLIGHT = "requests_in_flight"
SLICE_OUTPUT_TOKENS = "output_tokens"
SLICE_OUTPUT_THROUGHPUT = "output_throughput_tok_s"
SLICE_LATENCY_METRICS = ("ttft", "itl")
SLICE_LATENCY_STATS = ("median", "p90", "p99")
SLICE_KV_CACHE_USAGE = "kv_cache_usage_percent"
SLICE_WAITING_REQUESTS = "waiting_requests"

TIMESLICES_SCHEMA = pa.schema(
    [
        pa.field(TRIAL_ID, pa.string()),
        pa.field(SLICE_IDX, pa.int64()),
        pa.field(SLICE_START_S, pa.float64()),
        pa.field(SLICE_END_S, pa.float64()),
        pa.field(REQUESTS_STARTED, pa.int64()),
        pa.field(REQUESTS_FINISHED, pa.int64()),
        pa.field(REQUESTS_FAILED, pa.int64()),
        pa.field(REQUESTS_IN_FLIGHT, pa.int64()),
        pa.field(SLICE_OUTPUT_TOKENS, pa.int64()),
        pa.field(SLICE_OUTPUT_THROUGHPUT, pa.float64()),
        *(
            pa.field(f"{metric}_ms_{stat}", pa.float64())
            for metric in SLICE_LATENCY_METRICS
            for stat in SLICE_LATENCY_STATS
        ),
        pa.field(SLICE_KV_CACHE_USAGE, pa.float64()),
        pa.field(SLICE_WAITING_REQUESTS, pa.float64()),
    ]
)

# --- stages.parquet: one row per stage of a trial with `workload.stages` ---
# The stage's index (STAGE) and what it asked for, the rate at which it sent (requests sent /
# its duration), then the summary metric columns of `sweep.core.summary.summarize` over the
# stage's requests (`sweep.core.stage_summary`).
STAGE_REQUEST_RATE = "stage_request_rate"
STAGE_CONCURRENCY = "stage_concurrency"
STAGE_DURATION_S = "stage_duration_s"
SEND_RATE = "send_rate_req_s"

# --- adapters.parquet: one row per LoRA adapter of a trial that sent requests to adapters ---
# The adapter (ADAPTER), the requests it was sent (ADAPTER_REQUESTS) and its share of the
# trial's (ADAPTER_SHARE), then the summary metric columns of `sweep.core.summary.summarize` over
# its requests alone (`sweep.core.adapter_summary`): TTFT, TPOT, throughput per adapter.
ADAPTER_REQUESTS = "adapter_requests"
ADAPTER_SHARE = "adapter_share"

# --- server_metrics.parquet: every numeric series of the server's /metrics, long format ---
# Scraped whole at the trial's start and end (`sweep.measure.telemetry.ServerCapture`); a proxy's
# own /metrics (`backends.proxy`) under source PROXY_SOURCE beside the server's. Counters and the
# buckets, `_sum` and `_count` of histograms and summaries carry their `delta` over the trial (a
# series born during the trial, or a counter reset, counts from 0); gauges carry only `start`
# and `end`. `labels` is a JSON object (sorted keys) without a bucket's `le`, which is its own
# column (+inf for the last bucket). The two scrape times are on the trial's clock.
FAMILY = "family"
KIND = "kind"  # Prometheus type: counter, gauge, histogram, summary, untyped, ...
SAMPLE = "sample"
LABELS = "labels"
LE = "le"
START = "start"
END = "end"
DELTA = "delta"
PROXY_SOURCE = "proxy"
START_T_S = "start_t_s"
END_T_S = "end_t_s"

SERVER_METRICS_SCHEMA = pa.schema(
    [
        pa.field(TRIAL_ID, pa.string()),
        pa.field(SOURCE, pa.string()),
        pa.field(FAMILY, pa.string()),
        pa.field(KIND, pa.string()),
        pa.field(SAMPLE, pa.string()),
        pa.field(LABELS, pa.string()),
        pa.field(LE, pa.float64()),
        pa.field(START, pa.float64()),
        pa.field(END, pa.float64()),
        pa.field(DELTA, pa.float64()),
        pa.field(START_T_S, pa.float64()),
        pa.field(END_T_S, pa.float64()),
    ]
)

# What a server backend maps to its own Prometheus families (`Backend.server_series`: role ->
# family name). Latency roles are histograms in seconds, and also the stem of their summary
# columns (`latency_column(SERVER_TTFT, "p99")` is `server_ttft_ms_p99`); the others are counters.
SERVER_QUEUE = "server_queue"  # arrival to first scheduled
SERVER_PREFILL = "server_prefill"  # first scheduled to first token
SERVER_TTFT = "server_ttft"
SERVER_ITL = "server_itl"  # each gap between two output tokens
SERVER_TPOT = "server_tpot"  # per request: (end - first token) / (output tokens - 1)
SERVER_LATENCIES = (SERVER_QUEUE, SERVER_PREFILL, SERVER_TTFT, SERVER_ITL, SERVER_TPOT)
SERVER_LATENCY_STATS = ("mean", "median", "p99")
PREFIX_CACHE_HITS = "prefix_cache_hits"  # tokens
PREFIX_CACHE_QUERIES = "prefix_cache_queries"  # tokens
PREEMPTIONS = "preemptions"
# SPEC_DRAFT_TOKENS and SPEC_ACCEPTED_TOKENS (above) are roles too.

# --- summary.parquet: one row per trial ---
# Identity and outcome columns; the flattened config (`backend.name`, `workload.batch_size`, ...)
# and the metric columns produced by `sweep.core.summary.summarize` complete the row.
SWEEP_NAME = "sweep_name"
DEPLOYMENT_ID = "deployment_id"
# The config groups a deployment is made of (what `deployment_id` hashes): their columns are
# the same for every trial of a deployment.
DEPLOYMENT_GROUPS = ("model", "backend", "hardware")
REPEAT = "repeat"
LABEL = "label"
# JSON {group: option}: the option of each config group the trial was composed with.
GROUP_CHOICES = "group_choices"
TRIAL_STATUS = "trial_status"
ERROR_KIND = "error_kind"
ERROR_MESSAGE = "error_message"
STARTED_UNIX_S = "started_unix_s"
WALL_S = "wall_s"
# The deployment's start-up, in each of its trials' rows (`backends.process.startup`):
# SERVER_START_S from launching its server to its health check's first 200 (an in-process
# engine's: its model load), split into consecutive phases on the same clock at the lines its log
# prints as it goes: PROCESS until it begins to load the model (process start, imports), LOAD
# until the model is loaded, ENGINE until the engine is ready (profiling, KV cache, compilation,
# warm-up, graphs), API until it answers. A phase whose line the log did not print is null and
# its time goes to the next, so the phases given add up to SERVER_START_S. Beside them, what the
# server reports itself (null where it does not): its weights' load, its engine's set-up,
# torch.compile's time and CUDA graphs' capture, and whether its compile cache was cold (it
# compiled), warm (it loaded what an earlier start compiled) or stale (it found an earlier start's
# compiled model, could not load it, and compiled again).
SERVER_START_S = "server_start_s"
START_PROCESS_S = "server_start_process_s"
START_LOAD_S = "server_start_load_s"
START_ENGINE_S = "server_start_engine_s"
START_API_S = "server_start_api_s"
START_PHASES = (START_PROCESS_S, START_LOAD_S, START_ENGINE_S, START_API_S)
START_WEIGHTS_S = "server_start_weights_s"
START_ENGINE_REPORTED_S = "server_start_engine_reported_s"
START_COMPILE_S = "server_start_compile_s"
START_GRAPHS_S = "server_start_graphs_s"
START_REPORTED = (START_WEIGHTS_S, START_ENGINE_REPORTED_S, START_COMPILE_S, START_GRAPHS_S)
START_CACHE = "server_start_cache"
CACHE_COLD, CACHE_WARM, CACHE_STALE = "cold", "warm", "stale"

ERROR_OUT_OF_MEMORY = "out_of_memory"
ERROR_TIMEOUT = "timeout"
ERROR_BACKEND = "backend_error"
ERROR_BACKEND_START = "backend_start_failed"
ERROR_DATASET = "dataset_error"
ERROR_WORKER_DIED = "worker_died"
# No node for the deployment came within `cluster.node_wait_s` (none on its way) or
# `cluster.node_setup_wait_s` (one launching or being set up); the message names which.
ERROR_NO_NODE = "no_node"
# The results folder refused the trial's files (a full disk): resume runs it again.
ERROR_NOT_SAVED = "results_not_saved"

ENV_PREFIX = "env."
ENV_WORKER_PID = "env.worker_pid"  # the Ray worker process that ran the trial
ENV_WORKER_NICE = "env.worker_nice"  # its niceness: > 0 means it yielded to other processes
ENV_CLIENT_CPUS = "env.client_cpus"  # cores kept for the load generator (`sweep.worker.isolation`)
ENV_GIT_SHA = "env.git_sha"  # the checkout the driver ran (`sweep.worker.environment.git_sha`)

# What a backend says about itself (`backends.base.Backend.facts`), written by the worker into
# every summary row, so that analysis learns it from the results folder and never from a list of
# backend names. A folder written before these columns has none of them (they read as unknown).
BACKEND_BASELINE = "backend_baseline"  # bool: the engine the others are compared against (hf)
BACKEND_IGNORE_EOS = "backend_ignore_eos"  # bool: a request's `ignore_eos` reaches the engine
BACKEND_WEIGHT_FORMAT = "backend_weight_format"  # how its config names what it stores (below)
# JSON list of the config columns that name what it stores (`backend.dtype`, ...): the roofline
# reads only these of each trial.
BACKEND_ROOFLINE_COLUMNS = "backend_roofline_columns"
BACKEND_FACTS = (
    BACKEND_BASELINE,
    BACKEND_IGNORE_EOS,
    BACKEND_WEIGHT_FORMAT,
    BACKEND_ROOFLINE_COLUMNS,
)
# Weight formats: torch-style dtype and quantization names (and a KV-cache dtype), CTranslate2's
# compute type, a GGUF file's type, ExLlamaV2's EXL2 bits and cache type.
WEIGHTS_DECLARED = "declared"
WEIGHTS_CTRANSLATE2 = "ctranslate2"
WEIGHTS_GGUF = "gguf"
WEIGHTS_EXL2 = "exl2"
WEIGHT_FORMATS = (WEIGHTS_DECLARED, WEIGHTS_CTRANSLATE2, WEIGHTS_GGUF, WEIGHTS_EXL2)

SUMMARY_FILE = "summary.parquet"
TUNE_TABLE = "tune.parquet"  # a tuning sweep's configurations (`sweep.tune.table`)
REQUESTS_FILE = "requests.parquet"
TIMESERIES_FILE = "timeseries.parquet"
SERVER_METRICS_FILE = "server_metrics.parquet"
TIMESLICES_FILE = "timeslices.parquet"
STAGES_FILE = "stages.parquet"
ADAPTERS_FILE = "adapters.parquet"
TRIAL_YAML = "trial.yaml"
SWEEP_YAML = "sweep.yaml"
BACKEND_LOG = "backend.log"  # the server log of the deployment's first task in a run
HELPER_TASK = "helper"  # a task sharing a live task's trials (idle GPUs, a search replica)
LATER_TASK = "retry"  # a task taking over what another left (a lost worker, a hung trial)


def task_log_name(kind: str, n: int) -> str:
    """The server log of a deployment's `n`-th task of `kind` in a run (1, 2...).

    Each task starts a server of its own; its log is its own file beside backend.log, so a
    helper's or a retry's log never replaces the one a lost or helped task left.
    """
    return f"backend.{kind}-{n}.log"


# --- quality.parquet: a deployment's scores on the quality text set (`quality=on`) ---
# Written once per deployment, beside its trials (`<deployment_id>/quality.parquet`): each text
# of the set goes through the deployment's own backend teacher-forced (`backends.scoring`). Row
# (TEXT_IDX, POSITION) is the text's token at POSITION (1 = the first after the tokenizer's
# leading token; ids are the model tokenizer's, the same for every backend): TOKEN_LOGPROB is the
# natural-log probability the backend gave it after the tokens before it, TOP_IDS and
# TOP_LOGPROBS the backend's `quality.top_k` most likely tokens there, most likely first. The
# set's identity repeats on each row: its name, the sha256 of its texts (JSON list, UTF-8) and
# its number of tokens under the model's tokenizer (after truncation). QUALITY_STATUS, in every
# summary row of a deployment that ran with `quality=on`, says what became of its scoring:
# QUALITY_SCORED, or "not available: <reason>" / "failed: <reason>" (its trials ran anyway).
QUALITY_FILE = "quality.parquet"
TEXT_IDX = "text_idx"
POSITION = "position"
TOKEN_ID = "token_id"
TOKEN_LOGPROB = "token_logprob"
TOP_IDS = "top_ids"
TOP_LOGPROBS = "top_logprobs"
QUALITY_SET_NAME = "quality_set_name"
QUALITY_SET_SHA256 = "quality_set_sha256"
QUALITY_SET_TOKENS = "quality_set_tokens"
QUALITY_STATUS = "quality_status"
QUALITY_SCORED = "scored"

QUALITY_SCHEMA = pa.schema(
    [
        pa.field(DEPLOYMENT_ID, pa.string()),
        pa.field(TEXT_IDX, pa.int64()),
        pa.field(POSITION, pa.int64()),
        pa.field(TOKEN_ID, pa.int64()),
        pa.field(TOKEN_LOGPROB, pa.float64()),
        pa.field(TOP_IDS, pa.list_(pa.int64())),
        pa.field(TOP_LOGPROBS, pa.list_(pa.float64())),
        pa.field(QUALITY_SET_NAME, pa.string()),
        pa.field(QUALITY_SET_SHA256, pa.string()),
        pa.field(QUALITY_SET_TOKENS, pa.int64()),
    ]
)

# Summary metric columns (written by `sweep.core.summary.summarize`).
NUM_REQUESTS = "num_requests"
COMPLETED_REQUESTS = "completed_requests"
FAILED_REQUESTS = "failed_requests"
DURATION_S = "duration_s"
REQUEST_THROUGHPUT = "request_throughput_req_s"
OUTPUT_THROUGHPUT = "output_throughput_tok_s"
TOTAL_THROUGHPUT = "total_throughput_tok_s"
PEAK_OUTPUT_THROUGHPUT = "peak_output_throughput_tok_s"
INPUT_TOKENS_TOTAL = "input_tokens_total"
OUTPUT_TOKENS_TOTAL = "output_tokens_total"
COST_PER_1M_OUTPUT = "cost_per_1m_output_tokens_usd"
GOODPUT = "goodput_req_s"
CLIENT_LAG_MS_MEAN = "client_lag_ms_mean"
CLIENT_LAG_MS_MAX = "client_lag_ms_max"
BATCH_LATENCY_S_MEAN = "batch_latency_s_mean"
TOKEN_MISMATCH_REQUESTS = "token_mismatch_requests"
SHORT_OUTPUT_REQUESTS = "short_output_requests"
# Completed requests whose whole stream the client read at one instant although the server sent
# it in several token-bearing chunks (every gap between them 0: one network read): their TTFT is
# really their end-to-end time, so the client, not the server, set their latencies.
ONE_READ_REQUESTS = "one_read_requests"
# MLPerf's TEST09 rule where lengths are not forced: the completed requests' mean output length
# against the mean the dataset asked for, as a signed percentage (None: nothing asked a length).
OUTPUT_LENGTH_OFF_PERCENT = "output_length_off_percent"
# Prompts: completed requests whose server counted another input length than the client
# (`usage.prompt_tokens` against `input_tokens`; image requests left out, their image tokens
# are the server's alone), the mean of server minus client over those, and the requests to a
# server that reported no prompt count (their input length is unverified; None: no server).
INPUT_MISMATCH_REQUESTS = "input_mismatch_requests"
INPUT_MISMATCH_TOKENS_MEAN = "input_mismatch_tokens_mean"
INPUT_UNVERIFIED_REQUESTS = "input_unverified_requests"
PEAK_RSS_MB = "peak_rss_mb"
PEAK_GPU_MEMORY_MB = "peak_gpu_memory_mb"
MEAN_KV_CACHE_USAGE = "mean_kv_cache_usage_percent"
PEAK_KV_CACHE_USAGE = "peak_kv_cache_usage_percent"
# Multi-turn trials only (absent elsewhere): sessions run, and requests whose history was cut
# to fit the context (`dataset.on_overflow=truncate`).
SESSIONS = "sessions"
TRUNCATED_REQUESTS = "truncated_requests"
# The median session's time, its first request sent to its last token, over sessions whose turns
# all completed. Tool-calling sessions (`dataset.tools`) only: the calls the replies made, the
# share of completed replies with calls whose every call was valid, the median time to a call's
# complete arguments (`TOOL_CALL_S`).
SESSION_S_P50 = "session_s_p50"
TOOL_CALLS_TOTAL = "tool_calls_total"
TOOL_ARGS_VALID_FRACTION = "tool_args_valid_fraction"
TOOL_CALL_MS_P50 = "tool_call_ms_p50"
# Any trial whose server reports cached prompt tokens (`CACHED_INPUT_TOKENS`): their share of the
# completed requests' input tokens, in percent (None: it reports none).
CACHED_INPUT_PERCENT = "cached_input_percent"
# The server's own view, from the deltas of server_metrics.parquet: None where the server does
# not export (or its backend does not map) the series. Latencies: `latency_column(role, stat)`
# for each of SERVER_LATENCIES and SERVER_LATENCY_STATS. The server counts every request of the
# trial, warm-up and out-of-window ones included: SERVER_REQUESTS says how many it saw.
SERVER_REQUESTS = "server_requests"
SERVER_PREFIX_CACHE_HIT_PERCENT = "server_prefix_cache_hit_percent"
SERVER_PREEMPTIONS = "server_preemptions"
SERVER_SPEC_DRAFT_TOKENS = "server_spec_draft_tokens"
SERVER_SPEC_ACCEPTED_TOKENS = "server_spec_accepted_tokens"
# SPEC_ACCEPTANCE_PERCENT (above) is also the summary column: accepted / drafted in the trial.
# What the trial's prompts offer a cache (`sweep.datasets.reuse`), over every prompt it sent,
# warm-up included, in order: the share of input tokens a perfect prefix cache could reuse (each
# prompt's longest token prefix shared with an earlier one; None without token ids), to read
# beside SERVER_PREFIX_CACHE_HIT_PERCENT, and the share of prompts repeating an earlier one.
PROMPT_REUSABLE_PREFIX_PERCENT = "prompt_reusable_prefix_percent"
PROMPT_REPEAT_PERCENT = "prompt_repeat_percent"
# The share of prompts made as near-duplicates of an earlier one (`dataset.paraphrase_rate`), and
# the share of in-window requests a semantic-cache proxy answered from its cache (None without
# one: no request carries CACHE_HIT).
PROMPT_NEAR_DUPLICATE_PERCENT = "prompt_near_duplicate_percent"
CACHE_HIT_PERCENT = "cache_hit_percent"
# Trace trials only (`dataset=trace`, `sweep.datasets.trace`; absent elsewhere): the sha256 of
# the trace file's bytes, and its rows the trial sent (warm-up included), left out because they
# did not fit the context (`dataset.too_long=skip`), and sent cut to fit (`truncate`). The
# trace's name or path is the config column `dataset.path`.
TRACE_SHA256 = "trace_sha256"
TRACE_ROWS_USED = "trace_rows_used"
TRACE_ROWS_SKIPPED = "trace_rows_skipped"
TRACE_ROWS_TRUNCATED = "trace_rows_truncated"
# Reasoning models: the completed requests' REASONING_TOKENS and ANSWER_TOKENS, summed (they add
# up to OUTPUT_TOKENS_TOTAL); the time to the answer's first token has latency columns of its own
# (`latency_column(ANSWER, "p99")` is `answer_ms_p99`), limited as `slo.answer_ms_p99`.
REASONING_TOKENS_TOTAL = "reasoning_tokens_total"
ANSWER_TOKENS_TOTAL = "answer_tokens_total"
ANSWER = "answer"

# --- energy (`sweep.core.energy`; issue 33): one block, timeseries metric and summary columns ---
# ENERGY_COUNTER_J is a timeseries metric: a device's cumulative energy counter in joules (any
# origin: only differences count), NVML's total-energy counter for `gpuN` (Volta and later) and
# RAPL's `energy_uj`, unwrapped, for `rapl:<zone>` (`sweep.measure.powercap`, CPU trials only).
ENERGY_COUNTER_J = "energy_counter_j"
# Summary columns, over the throughputs' window (first send to last end of the measured
# requests), summed over the task's devices: null where energy was not measured, never 0, and
# then ENERGY_METHOD says ENERGY_NOT_MEASURED. ENERGY_DEVICES is a JSON object: device ->
# {"j": joules or null, "method": ...}. MEAN_POWER_W = ENERGY_J / duration.
ENERGY_J = "energy_j"
# Not "..._token": `sweep.core.secrets` hides the value of any key ending in `_token`.
ENERGY_J_PER_OUTPUT_TOKEN = "energy_per_output_token_j"
ENERGY_J_PER_REQUEST = "energy_per_request_j"
ENERGY_WH_PER_1M_OUTPUT = "energy_wh_per_1m_output_tokens"
MEAN_POWER_W = "mean_power_w"
ENERGY_METHOD = "energy_method"
ENERGY_DEVICES = "energy_devices"
ENERGY_NVML_COUNTER = "nvml_energy_counter"  # the GPU's own counter
ENERGY_POWER_INTEGRAL = "nvml_power_integral"  # GPU_POWER_W samples integrated over time
ENERGY_RAPL = "rapl"  # the CPU packages' (and their DRAM's) RAPL counters
ENERGY_NOT_MEASURED = "not_measured"
# Several methods in one trial (one per device) are joined with this, sorted.
ENERGY_METHOD_SEPARATOR = "+"

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e", ANSWER)
LATENCY_STATS = ("mean", "median", "p90", "p99")


def latency_column(metric: str, stat: str) -> str:
    """Summary column of one latency statistic in milliseconds, e.g. `ttft_ms_p99`."""
    return f"{metric}_ms_{stat}"


# --- flattened config columns of summary.parquet that analysis groups and plots by ---
CONFIG_SEPARATOR = "."
BACKEND_NAME = "backend.name"
WORKLOAD_NAME = "workload.name"
WORKLOAD_CONCURRENCY = "workload.concurrency"
WORKLOAD_BATCH_SIZE = "workload.batch_size"
WORKLOAD_REQUEST_RATE = "workload.request_rate"  # null: not an open loop
WORKLOAD_BURSTINESS = "workload.burstiness"
WORKLOAD_IGNORE_EOS = "workload.ignore_eos"
WORKLOAD_CLIENT_PROCESSES = "workload.client_processes"  # load-generator shards
DATASET_NAME = "dataset.name"
MODEL_NAME = "model.name"
HARDWARE_NAME = "hardware.name"

# --- repeat aggregates (`sweep.core.summary.aggregate_repeats`) ---
NUM_REPEATS = "num_repeats"
CI_STATS = ("mean", "ci_low", "ci_high")


def ci_column(metric: str, stat: str) -> str:
    """Column of one statistic over repeats of a summary metric, e.g. `ttft_ms_p99_ci_low`."""
    return f"{metric}_{stat}"


# --- comparative analysis (`analysis.stats.compare`, `analysis.stats.roofline`) ---
# Config columns the comparison reads; the model's architecture columns are optional: without
# them MBU counts the weights only.
DATASET_TASK = "dataset.task"
BACKEND_NUM_GPUS = "backend.num_gpus"
BACKEND_DTYPE = "backend.dtype"
BACKEND_QUANTIZATION = "backend.quantization"
BACKEND_KV_CACHE_DTYPE = "backend.kv_cache_dtype"
MODEL_NUM_PARAMS_B = "model.num_params_b"
MODEL_NUM_LAYERS = "model.num_layers"
MODEL_NUM_KV_HEADS = "model.num_kv_heads"
MODEL_HEAD_DIM = "model.head_dim"
# What the deployment loaded, as the worker resolved it (`sweep.worker.trial`): the model's files (a
# local directory or a hub id) and the tokenizer that counted the client's tokens, or that none did.
MODEL_RESOLVED_PATH = "model.resolved_path"
MODEL_TOKENIZER = "model.tokenizer"
HARDWARE_PRICE_PER_HOUR = "hardware.price_per_hour"
HARDWARE_MEMORY_BANDWIDTH = "hardware.memory_bandwidth_gb_s"
HARDWARE_PEAK_FP16_TFLOPS = "hardware.peak_fp16_tflops"
SLO_PREFIX = "slo."
# Set by the load generator when it could not keep up with the offered load.
CLIENT_SATURATED = "client_saturated"

# Derived per-trial columns of the comparison frame.
THROUGHPUT_PER_GPU = "output_throughput_tok_s_per_gpu"
MBU = "mbu"
MFU = "mfu"
ROOFLINE_BASIS = "roofline_basis"
SLO_GOODPUT = "slo_goodput_req_s"
SLO_GOODPUT_OUTPUT_THROUGHPUT = "slo_goodput_output_tok_s"
SLO_COST_PER_1M_OUTPUT = "slo_cost_per_1m_output_tokens_usd"
ON_PARETO_FRONT = "on_pareto_front"

# --- capacity search (`sweep.worker.search`): columns of each probe's summary row ---
# A search is one grid point of one deployment with its load axis left open; every probe is a
# trial of that point at one load. SEARCH_ID hashes the point without its load (and repeat).
SEARCH_ID = "search_id"
SEARCH_MODE = "search_mode"  # capacity | profile
SEARCH_AXIS = "search_axis"  # workload.request_rate | workload.concurrency
SEARCH_LOAD = "search_load"  # the offered load of this probe, in the axis's unit
SEARCH_PROBE = "search_probe"  # 0, 1, ... in the order the search chose them
SEARCH_PHASE = "search_phase"  # bracket | narrow | synchronous | throughput | profile
SLO_PASSED = "slo_passed"  # the probe met every bound of the SLO (`sweep.core.slo`)
SLO_MARGIN = "slo_margin"  # the tightest bound's (limit - value) / limit: > 0 passes
SLO_REASON = "slo_reason"  # the first bound missed, e.g. "ttft_ms_p99 812.4 > 500"
# Share of the trial's requests (in window, failed ones included) meeting every per-request
# bound of the SLO (`slo.ttft_ms`, `slo.tpot_ms`, `slo.e2e_ms`); None without such a bound.
SLO_ATTAINED_FRACTION = "slo_attained_fraction"

# --- trust checks: the load generator's own measurements and the minimum-size rules ---
# `sweep.loadgen.saturation` defines when a trial is CLIENT_SATURATED; `sweep.core.trust` defines
# the steady-state window and TOO_SHORT.
CLIENT_CPU_PERCENT = "client_cpu_percent"  # generator CPU time / wall time, summed over shards
SEND_LAG_MS_P50 = "send_lag_ms_p50"
SEND_LAG_MS_P99 = "send_lag_ms_p99"
OUT_OF_WINDOW_REQUESTS = "out_of_window_requests"
TOO_SHORT = "too_short"
WORKLOAD_MIN_DURATION_S = "workload.min_duration_s"
WORKLOAD_MIN_REQUESTS = "workload.min_requests"
