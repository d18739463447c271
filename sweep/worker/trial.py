"""The body of one deployment's Ray task: start the backend once, run its trials, hand back tables.

Each trial's files are yielded as soon as the trial ends, so the driver can write them while the
next trial runs. Any failure (backend start, out of memory, dataset, a crash inside a trial) becomes
a failed trial with its reason; the remaining trials of the deployment go on when they can.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from backends import backend_class
from backends.config import DEPLOYMENT_ENV
from backends.models.architecture import architecture, tokenizer_summary
from backends.models.source import resolve_model_path
from backends.proxy.launch import Proxies
from sweep.core import records as R
from sweep.core.adapter_summary import adapter_summaries
from sweep.core.cancel_release import release_columns
from sweep.core.config import Config
from sweep.core.errors import BackendError, DatasetError, SweepError
from sweep.core.pieces import missing_here, pieces_dir
from sweep.core.results import BackendLog, QualityFiles, TrialFiles
from sweep.core.secrets import scrub, scrub_text
from sweep.core.stage_summary import stage_summaries
from sweep.core.summary import summarize
from sweep.core.timeslices import time_slices
from sweep.core.trust import too_short, with_window
from sweep.datasets import dataset_columns
from sweep.datasets.cache import PromptSource
from sweep.datasets.context import limit
from sweep.datasets.multi_turn import NAME as MULTI_TURN
from sweep.datasets.reuse import prompt_columns
from sweep.loadgen.attribution import attribute, require_server_counts
from sweep.loadgen.clock import now_s
from sweep.loadgen.engine import run_engine_workload
from sweep.loadgen.http import run_http_workload
from sweep.loadgen.recorder import Trackers
from sweep.loadgen.requests import build_requests
from sweep.loadgen.saturation import client_columns
from sweep.loadgen.sessions import session_runner
from sweep.loadgen.structured import check_answers, workload_constraint
from sweep.measure.powercap import RAPL_INTERVAL_S, rapl_source
from sweep.measure.telemetry import (
    GPU_INTERVAL_S,
    PROCESS_INTERVAL_S,
    SERVER_INTERVAL_S,
    Sampler,
    ServerCapture,
    check_gpu_memory,
    nvml_source,
    process_source,
)
from sweep.spec import Deployment, TrialSpec
from sweep.worker.cuda_driver import check_cuda_driver
from sweep.worker.isolation import Isolation, isolate, pin_quietest, restore
from sweep.worker.quality_run import score_deployment
from sweep.worker.search_run import Board, SearchDone, run_search

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DeploymentStarted:
    """First item a deployment task yields: it is running (no longer queued for resources)."""

    node_ip: str
    node_id: str | None = None  # the Ray node, so the driver sees when Ray declares it dead


LOG_EVERY_S = 60.0  # the longest a deployment's trials go without one carrying its log

# How each backend interface is driven; server interfaces join this map with their HTTP runners.
RUNNERS = {"engine": run_engine_workload, "openai": run_http_workload, "tgi": run_http_workload}


def run_deployment(
    deployment: Deployment,
    environment: dict[str, Any],
    claim: Callable[[str], bool] | None = None,
    helper: bool = False,
    board: Board | None = None,
) -> Iterator[TrialFiles | SearchDone | DeploymentStarted | QualityFiles]:
    """Start the deployment's backend, run every trial, stop the backend; yield trial files.

    With `claim` (`sweep.driver.ledger`), a trial runs, or is failed, only if `claim(trial_id)` says
    this task may: another task of the same deployment may have taken it. A `helper` whose
    backend does not start fails nothing: the task it helps still has every trial. With
    `quality=on` the backend first scores the quality set (`sweep.worker.quality_run`; not a helper,
    whose task scores it), yielded as `QualityFiles` before the first trial.
    """
    config = deployment.config
    mine = claim or (lambda trial_id: True)
    node = environment.get("env.ray_node_id")
    yield DeploymentStarted(node_ip=str(environment.get("env.node_ip")), node_id=node)
    _quiet_transformers()
    backend = None
    isolation = Isolation()
    os.environ[DEPLOYMENT_ENV] = deployment.deployment_id  # e.g. a TGI container's label
    try:
        model_path = resolve_model_path(config.model)
        backend = backend_class(config.backend.name)(config.backend, model_path)  # not started
        environment = {**environment, **_loaded(config, model_path, backend.local_tokenizer)}
        environment = {**environment, **backend.facts()}  # what analysis reads, not its name
        prompts = PromptSource(
            model_path,
            config.model.revision,
            config.model.trust_remote_code,
            local=backend.local_tokenizer,  # none: the server counts every token
            chat=backend.api == "chat",  # the one switch: lengths count the chat template
            context=limit(config, model_path),  # as the driver decided it (`sweep.plan.plan`)
        )
        if not all(prompts.is_cached(t.config.dataset, _num_prompts(t)) for t in deployment.trials):
            prompts.tokenizer()  # a tokenizer that cannot load fails before the backend starts
        if config.backend.num_gpus > 0:  # Ray's accelerator type does not tell 40 from 80 GB
            check_gpu_memory(config.hardware.name, config.hardware.memory_gb)
            check_cuda_driver()
            require_pieces(backend.pieces(config.backend))
        began = time.monotonic()
        backend.start()
        startup = {R.SERVER_START_S: time.monotonic() - began, **backend.startup()}
        environment = {**environment, **startup}  # the deployment's start-up, in every row
        isolation = _isolate(config)
        environment = {**environment, **_model_facts(config, model_path)}
        environment[R.ENV_CLIENT_CPUS] = isolation.client_cpus
    except Exception as exc:  # every trial of an unstartable deployment fails with the reason
        kind, message = _classify(exc, default_kind=R.ERROR_BACKEND_START)
        log_text = backend.log_text() if backend is not None else None
        if backend is not None:
            backend.stop()
        os.environ.pop(DEPLOYMENT_ENV, None)
        if helper:
            log.warning("helper for %s did not start: %s", deployment.label, message)
            return
        for spec in deployment.trials:
            if mine(spec.trial_id):
                yield _with_log(failed_trial(spec, kind, message, environment), log_text)
        return
    ran = False
    # A trial's proxy starts when it first runs, off the load generator's cores; stops with us.
    proxies = Proxies(backend, None if isolation.split is None else isolation.split.rest)

    shipped = _LogShipping(deployment)

    def run(spec: TrialSpec) -> TrialFiles:
        nonlocal ran
        if ran:
            backend.reset_between_trials()  # drain, empty caches: trials stay independent
        ran = True
        files = run_trial(backend, prompts, spec, environment, proxies)
        if not shipped.due(spec, files):
            return files
        return _with_log(files, backend.log_text())

    try:
        if config.quality.enabled and not helper:
            tokenizer = prompts.tokenizer()
            quality, status = score_deployment(backend, config, tokenizer, deployment.deployment_id)
            environment = {**environment, R.QUALITY_STATUS: status}  # in every summary row
            ran = True  # a server is drained and its caches emptied before the first trial
            if quality is not None:
                yield quality
        for spec in deployment.trials:
            shared = spec.search is not None and spec.config.search.parallel > 1
            if not shared and not mine(spec.trial_id):
                continue  # another task's trial (a search with `parallel` > 1 is everyone's)
            if spec.search is not None:  # a search: probes chosen one after another
                yield from run_search(spec, run, board if shared else None)
            else:
                yield run(spec)
        if ran and shipped.behind and (text := backend.log_text()) is not None:
            # a helper ran the deployment's last trial: the log since this task's last one
            yield BackendLog(deployment.deployment_id, scrub_text(text))
    finally:
        restore(isolation)
        proxies.stop()
        backend.stop()
        os.environ.pop(DEPLOYMENT_ENV, None)


def _isolate(config: Config) -> Isolation:
    """The load generator's own cores (`isolation`); on a small node, a CPU deployment's."""
    isolation = isolate(config.cluster.isolate_client)
    cpu_only = config.backend.num_gpus == 0 and config.cluster.pin_cpu_deployments
    if isolation.split is None and cpu_only:
        return pin_quietest(max(1, int(config.backend.num_cpus)))  # Ray's OMP_NUM_THREADS
    return isolation


class _LogShipping:
    """Which trials carry the backend log: it grows with the trials, so not every one does.

    The first trial, a failed one, the deployment's last, and one at least every
    `LOG_EVERY_S`: the driver rewrites backend.log about once a minute, not once per trial.
    """

    def __init__(self, deployment: Deployment) -> None:
        self.last = deployment.trials[-1].trial_id if deployment.trials else None
        self.sent_at: float | None = None
        self.behind = False  # a trial ran since the log was last sent

    def due(self, spec: TrialSpec, files: TrialFiles) -> bool:
        """Whether `files` (the trial `spec` just run) should carry the log."""
        now = time.monotonic()
        failed = files.summary.column(R.TRIAL_STATUS)[0].as_py() != R.STATUS_OK
        waited = self.sent_at is None or now - self.sent_at >= LOG_EVERY_S
        if failed or waited or spec.trial_id == self.last:
            self.sent_at, self.behind = now, False
            return True
        self.behind = True
        return False


def _with_log(files: TrialFiles, log_text: str | None) -> TrialFiles:
    """Attach the backend log so far; the driver keeps the latest as backend.log."""
    if log_text is None:
        return files
    return dataclasses.replace(files, backend_log=scrub_text(log_text))


def run_trial(
    backend: Any,
    prompts: PromptSource,
    spec: TrialSpec,
    environment: dict[str, Any],
    proxies: Proxies | None = None,
) -> TrialFiles:
    """Offer the trial's workload to a started backend and build its tables.

    With `proxies`, a trial whose `proxy` is set sends its requests through that proxy; the
    proxy's own /metrics are captured beside the server's (`records.PROXY_SOURCE`).
    """
    config = spec.config
    workload = config.workload
    t0, started = now_s(), time.time()
    sources = [(process_source(), PROCESS_INTERVAL_S)]
    gpus = nvml_source()
    if gpus is not None:
        sources.append((gpus, GPU_INTERVAL_S))
    rapl = rapl_source() if config.backend.num_gpus == 0 else None  # a CPU trial's energy
    if rapl is not None:
        sources.append((rapl, RAPL_INTERVAL_S))
    sources += [(source, SERVER_INTERVAL_S) for source in backend.telemetry_sources()]
    trackers, kind, message = Trackers(), None, None
    texts: list[Any] = []
    dataset_facts: dict[str, Any] = {}
    sampler = Sampler(sources, t0)
    capture = ServerCapture(backend.metrics_scrape(), t0)  # whole /metrics at start and end
    proxy_capture = ServerCapture(None, t0, R.PROXY_SOURCE)
    front = None
    try:
        front = backend if proxies is None else proxies.front(config.proxy)  # or its proxy
        if front is not backend:
            proxy_capture = ServerCapture(front.metrics_scrape(), t0, R.PROXY_SOURCE)
        texts = prompts.prompts(config.dataset, _num_prompts(spec))
        require_image_server(texts, backend)
        # A trace's hash and rows used, skipped and cut (no tokenizer needed: counts only).
        dataset_facts = dataset_columns(config.dataset, prompts.context, _num_prompts(spec))
        warmup, requests = build_requests(texts, workload, backend.adapters)
        runner = RUNNERS[backend.interface]
        if config.dataset.name == MULTI_TURN:  # each turn sends its session's history
            runner = session_runner(config, prompts.tokenizer(), backend.model_path)
        if backend.interface != "engine" and config.search.mode == "capacity":
            # A probe that cannot pass stops once that is certain (`sweep.worker.search_run`).
            runner = functools.partial(runner, stop_ratio=config.search.saturation_ratio)
        with capture, sampler, proxy_capture:
            trackers = runner(front, requests, warmup, workload)
        attribute(trackers, prompts.tokenizer)  # after the load, so it costs the client nothing
        if (constraint := workload_constraint(workload)) is not None:
            check_answers(trackers, constraint)  # each answer against its schema, after the load
        if not prompts.local:
            require_server_counts(trackers)  # no tokenizer: every count is the server's usage
    except Exception as exc:
        kind, message = _classify(exc, default_kind=R.ERROR_BACKEND)
        # Bad input, or a proxy that did not start (its reason says why): one line.
        tail = backend.log_tail() if kind != R.ERROR_DATASET and front is not None else ""
        if tail:
            message = f"{message}\n--- backend log tail ---\n{tail}"
        log.warning("trial %s failed: %s", spec.label, message.splitlines()[0])
    requests_table = pa.Table.from_pylist(
        [t.record(spec.trial_id, t0) for t in trackers], schema=R.REQUESTS_SCHEMA
    )
    requests_table = with_window(requests_table, workload)
    timeseries = pa.Table.from_pylist(
        [
            {R.TRIAL_ID: spec.trial_id, R.T_S: t, R.SOURCE: s, R.METRIC: m, R.VALUE: v}
            for t, s, m, v in sampler.rows
        ],
        schema=R.TIMESERIES_SCHEMA,
    )
    server_metrics = pa.concat_tables(
        [capture.table(spec.trial_id), proxy_capture.table(spec.trial_id)]
    )
    frame, samples = requests_table.to_pandas(), timeseries.to_pandas()
    metrics = summarize(
        frame,
        num_gpus=config.backend.num_gpus,
        price_per_hour=config.hardware.price_per_hour,
        slo=config.slo.request_bounds(),
        timeseries=samples,
        server_metrics=server_metrics.to_pandas(),
        server_series=backend.server_series,
        server=backend.interface != "engine",
    )
    metrics.update(release_columns(frame, samples))  # how soon the server let go of hang-ups
    # Can the numbers be trusted: did the client keep up, was the trial long enough?
    metrics.update(client_columns(metrics, workload, trackers.client))
    metrics[R.TOO_SHORT] = too_short(metrics, workload)
    metrics.update(prompt_columns(texts))  # what the prompts offered a prefix cache
    metrics.update(dataset_facts)
    outcome = {
        R.TRIAL_STATUS: R.STATUS_OK if kind is None else R.STATUS_FAILED,
        R.ERROR_KIND: kind,
        R.ERROR_MESSAGE: message,
        R.STARTED_UNIX_S: started,
        R.WALL_S: now_s() - t0,
    }
    files = _trial_files(spec, outcome, metrics, environment, requests_table, timeseries)
    over_time = _over_time(spec, requests_table, timeseries)
    return dataclasses.replace(files, server_metrics=server_metrics, **over_time)


def _over_time(spec: TrialSpec, requests: pa.Table, timeseries: pa.Table) -> dict[str, Any]:
    """The trial's metrics per time slice, per stage (`workload.stages`) and per LoRA adapter."""
    config = spec.config
    frame, samples = requests.to_pandas(), timeseries.to_pandas()
    stages = None
    if config.workload.stages:
        stages = stage_summaries(
            frame,
            config.workload,
            spec.trial_id,
            num_gpus=config.backend.num_gpus,
            price_per_hour=config.hardware.price_per_hour,
            slo=config.slo.request_bounds(),
            timeseries=samples,
        )
    slices = time_slices(frame, samples, config.workload.slice_s, spec.trial_id)
    adapters = adapter_summaries(
        frame,
        spec.trial_id,
        num_gpus=config.backend.num_gpus,
        price_per_hour=config.hardware.price_per_hour,
        slo=config.slo.request_bounds(),
    )
    return {"timeslices": slices, "stages": stages, "adapters": adapters}


def failed_trial(
    spec: TrialSpec, kind: str, message: str, environment: dict[str, Any]
) -> TrialFiles:
    """The files of a trial that could not run at all."""
    outcome = {
        R.TRIAL_STATUS: R.STATUS_FAILED,
        R.ERROR_KIND: kind,
        R.ERROR_MESSAGE: message,
        R.STARTED_UNIX_S: time.time(),
        R.WALL_S: 0.0,
    }
    empty = pd.DataFrame(columns=R.REQUESTS_SCHEMA.names)
    metrics = summarize(
        empty,
        num_gpus=spec.config.backend.num_gpus,
        price_per_hour=spec.config.hardware.price_per_hour,
    )
    return _trial_files(
        spec,
        outcome,
        metrics,
        environment,
        R.REQUESTS_SCHEMA.empty_table(),
        R.TIMESERIES_SCHEMA.empty_table(),
    )


def _trial_files(
    spec: TrialSpec,
    outcome: dict[str, Any],
    metrics: dict[str, Any],
    environment: dict[str, Any],
    requests: pa.Table,
    timeseries: pa.Table,
) -> TrialFiles:
    row = {
        R.TRIAL_ID: spec.trial_id,
        R.DEPLOYMENT_ID: spec.deployment_id,
        R.SWEEP_NAME: spec.sweep_name,
        R.REPEAT: spec.repeat,
        R.LABEL: spec.label,
        **outcome,
        **spec.flat,
        **metrics,
        **environment,
    }
    if spec.search is not None:  # a search that could not run: recorded as the search's row
        row |= {
            R.SEARCH_ID: spec.trial_id,
            R.SEARCH_MODE: spec.search.mode,
            R.SEARCH_AXIS: spec.search.axis,
        }
    row = scrub(row)
    summary = pa.Table.from_pylist([row])
    trial_yaml = yaml.safe_dump(
        scrub(
            {
                "trial_id": spec.trial_id,
                "deployment_id": spec.deployment_id,
                "label": spec.label,
                "repeat": spec.repeat,
                "choices": json.loads(spec.flat.get(R.GROUP_CHOICES, "{}")),
                **outcome,
                "config": dataclasses.asdict(spec.config) | {"sweep": {"name": spec.sweep_name}},
            }
        ),
        sort_keys=False,
    )
    return TrialFiles(spec.trial_id, spec.deployment_id, summary, requests, timeseries, trial_yaml)


def _model_facts(config: Config, model_path: str) -> dict[str, float]:
    """Architecture columns read from the model's files (after start: a hub model is local).

    A parameter count set in the config is kept; the files fill it in when it is not.
    """
    facts = architecture(model_path, config.model.revision)
    if config.model.num_params_b is not None:
        facts.pop(R.MODEL_NUM_PARAMS_B, None)
    return facts


def _loaded(config: Config, model_path: str, local_tokenizer: bool) -> dict[str, str | None]:
    """What this deployment loads: the model's files and the tokenizer that counts for the client.

    Recorded in every trial (also a failed one), so a path that was not the one meant is seen.
    """
    tokenizer = (
        tokenizer_summary(model_path, config.model.revision) or "the model's own"
        if local_tokenizer
        else "none: the server counts every token"
    )
    return {R.MODEL_RESOLVED_PATH: model_path, R.MODEL_TOKENIZER: tokenizer}


def _num_prompts(spec: TrialSpec) -> int:
    workload = spec.config.workload
    return workload.num_requests + workload.warmup_requests


def _quiet_transformers() -> None:
    """Loading bars and warnings of transformers would interleave with the sweep's display.

    Set through the environment, which transformers reads when first imported: importing it
    here would cost a worker that never needs it 0.7 s of CPU. Servers the worker starts inherit
    the setting, so their logs have no loading bars and only transformers' errors.
    """
    if "transformers" in sys.modules:  # imported already (a reused worker): too late for that
        sys.modules["transformers"].utils.logging.disable_progress_bar()
        sys.modules["transformers"].utils.logging.set_verbosity_error()
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _classify(exc: BaseException, default_kind: str) -> tuple[str, str]:
    """An error kind and a readable message for a failure inside a worker."""
    if isinstance(exc, BackendError):
        return exc.kind, str(exc)
    if isinstance(exc, DatasetError):
        return R.ERROR_DATASET, str(exc)
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SweepError) else str(exc)
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return R.ERROR_OUT_OF_MEMORY, text
    return default_kind, text


def require_image_server(prompts: list[Any], backend: Any) -> None:
    """One line, before any request, when prompts carry images the backend cannot be sent.

    Images ride in a chat message's content parts (`sweep.datasets.images`): only a server
    backend with `api: chat` takes them.
    """
    if any(p.images for p in prompts) and (backend.interface != "openai" or backend.api != "chat"):
        raise DatasetError(
            "the dataset's prompts carry images, sent only as chat messages to a server: set "
            "backend.api=chat on a server backend"
        )


def require_pieces(names: tuple[str, ...]) -> None:
    """Fail the deployment in one line when a set-up piece it needs did not install here."""
    missing = missing_here(names)
    if missing:
        raise BackendError(
            f"the set-up piece {', '.join(missing)} did not install on this node (no marker in "
            f"{pieces_dir()}; its set-up log says why)",
            kind=R.ERROR_BACKEND_START,
        )
