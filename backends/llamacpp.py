"""The llama.cpp engine through llama-cpp-python: a GGUF model, one sequence at a time.

The model is a GGUF file: `backend.gguf_file` (a path, or a file of `backend.gguf_repo` on the hub),
or the model directory converted by `backends.models.gguf_convert` on first use and cached. The
binding's `Llama` object holds a single sequence, so a batch is served one request after another
(`one_at_a_time`): batch size changes nothing but the queueing, and a flat throughput curve is the
engine's real behaviour, not a measurement error (docs/engines.md). Each request starts from an
empty context, so no request reuses another's prompt in the KV cache. Tokens come from
`Llama.generate`, which never stops by itself: the counter ends a request at its `max_tokens`, or at
EOS when the request does not ignore it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backends.base import EngineBackend, GenRequest, GenResult, TokenCallback
from backends.config import EngineConfig
from backends.models.cache import cache_key, cached_build, first_line, local_checkpoint
from backends.models.gguf_convert import CONVERTER_VERSION, convert_to_gguf
from backends.models.gguf_convert import OUTTYPES as GGUF_OUTTYPES
from backends.models.gguf_quantize import QUANT_TYPES, quantize_gguf
from backends.scoring import TokenScores, from_logprobs, log_softmax
from backends.streaming import TokenCounter, one_at_a_time
from sweep.core import records as R
from sweep.core.errors import (
    BackendError,
    ConfigError,
    MissingExtraError,
    check_choice,
    check_positive,
)

log = logging.getLogger(__name__)

GGUF_NAME = "model.gguf"
# What `convert_outtype` may name: our converter's float types, then llama.cpp's block types,
# quantized from the f32 conversion.
CONVERT_OUTTYPES = (*GGUF_OUTTYPES, *QUANT_TYPES)
_PARAMS_LOCK = threading.Lock()


def import_llama_cpp() -> Any:
    """The `llama_cpp` module, or a one-line error naming the extra to install."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingExtraError("llama-cpp-python", "llamacpp") from exc
    return llama_cpp


def gguf_path(config: Any, model_path: str) -> Path:
    """The GGUF file a deployment loads: given, downloaded, or converted (once) from the model."""
    if config.gguf_repo is not None:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(config.gguf_repo, config.gguf_file))
        except Exception as exc:
            where = f"{config.gguf_file} of {config.gguf_repo}"
            raise BackendError(f"cannot fetch {where}: {first_line(exc)}") from None
    if config.gguf_file is not None:
        path = Path(os.path.expanduser(config.gguf_file))
        if not path.is_file():
            raise BackendError(f"backend.gguf_file={config.gguf_file!r} is not a file")
        return path
    if model_path.endswith(".gguf") and os.path.isfile(model_path):
        return Path(model_path)
    outtype = config.convert_outtype
    key = cache_key(model_path, outtype=outtype, converter=CONVERTER_VERSION)

    def build(out: Path) -> None:
        if outtype in QUANT_TYPES:
            source = gguf_path(_Outtype("f32"), model_path)
            quantize_gguf(import_llama_cpp(), source, out / GGUF_NAME, outtype)
            return
        convert_to_gguf(local_checkpoint(model_path), out / GGUF_NAME, outtype)

    return cached_build("gguf", key, build, f"{model_path} to GGUF ({outtype})") / GGUF_NAME


@dataclass(frozen=True)
class _Outtype:
    """The GGUF source a quantized conversion starts from: our converter's file of `outtype`."""

    convert_outtype: str
    gguf_repo: None = None
    gguf_file: None = None


def require_gpu_offload(llama_cpp: Any, n_gpu_layers: int) -> None:
    """Fail with one line when GPU layers are asked of a build that cannot offload.

    The registry's wheel is built for the CPU only, and `Llama` then ignores `n_gpu_layers`
    without a word: the trial would be a CPU measurement labelled with the GPU it was placed on.
    """
    if n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
        raise BackendError(
            f"backend.n_gpu_layers={n_gpu_layers} asks for GPU offload, but this llama-cpp-python "
            f"build is CPU-only: reinstall it built for CUDA (CMAKE_ARGS='-DGGML_CUDA=on' pip "
            f"install --force-reinstall --no-cache-dir llama-cpp-python), or set "
            f"backend.n_gpu_layers=0",
            R.ERROR_BACKEND_START,
        )


@dataclass
class LlamaCppBackendConfig(EngineConfig):
    """llama.cpp through llama-cpp-python: a GGUF file (given, or converted from the HF model)."""

    name: str = "llamacpp"
    gguf_file: str | None = None
    gguf_repo: str | None = None
    convert_outtype: str = "f16"
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    n_batch: int = 512
    n_threads: int | None = None
    seed: int = 0
    # llama.cpp's weight repacking into the CPU's own layouts (AMX, AArch64); False is its
    # `--no-repack`. Its AMX kernels crashed on this project's CPU test host for Q8_0/Q4_0.
    repack: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_gguf_config(self)


def check_gguf_config(config: Any) -> None:
    """What every llama.cpp config (engine or server) checks: its GGUF's source, sizes, offload."""
    check_choice("backend", "convert_outtype", config.convert_outtype, CONVERT_OUTTYPES)
    check_positive(
        "backend", n_ctx=config.n_ctx, n_batch=config.n_batch, n_threads=config.n_threads
    )
    if config.gguf_repo is not None and config.gguf_file is None:
        raise ConfigError("backend.gguf_repo needs backend.gguf_file (the file in that repo)")
    if config.n_gpu_layers < -1:
        raise ConfigError(f"backend.n_gpu_layers must be >= -1 (all), got {config.n_gpu_layers}")
    if config.num_gpus > 0 and config.n_gpu_layers == 0:
        # llama.cpp would run on the CPU while the GPU is held, and the trial measure the CPU.
        raise ConfigError(
            f"backend.num_gpus={config.num_gpus} with backend.n_gpu_layers=0 runs llama.cpp on "
            "the CPU: set backend.n_gpu_layers (-1: every layer) or backend.num_gpus=0"
        )


def llama_pieces(config: Any) -> tuple[str, ...]:
    """llama.cpp on a GPU needs the CUDA build of the binding (the `llama-cpp-cuda` piece)."""
    return ("llama-cpp-cuda",) if config.num_gpus > 0 else ()


@contextlib.contextmanager
def _model_params(llama_cpp: Any, repack: bool) -> Iterator[None]:
    """`Llama` loading with llama.cpp's weight repacking on or off (`repack`).

    The binding's constructor takes no argument for `use_extra_bufts`; it reads the defaults
    from `llama_model_default_params`, so that function answers with the switch set while one
    model loads (a lock keeps two loads apart).
    """
    if repack:
        yield
        return
    binding = llama_cpp.llama_cpp
    defaults = binding.llama_model_default_params

    def without_repack() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    with _PARAMS_LOCK:
        binding.llama_model_default_params = without_repack
        try:
            yield
        finally:
            binding.llama_model_default_params = defaults


class LlamaCppBackend(EngineBackend):
    """`llama_cpp.Llama` on CPU, or with `n_gpu_layers` offloaded to a GPU."""

    config_class: ClassVar[type] = LlamaCppBackendConfig
    weight_format: ClassVar[str] = R.WEIGHTS_GGUF
    roofline_fields: ClassVar[tuple[str, ...]] = ("gguf_file", "convert_outtype")
    scoring_unavailable: ClassVar[str | None] = None

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """A GPU deployment needs the CUDA build of the binding."""
        return llama_pieces(config)

    def start(self) -> None:
        """Check that the build offloads what is asked; find or make the GGUF file and load it."""
        llama_cpp = import_llama_cpp()
        config = self.config
        require_gpu_offload(llama_cpp, config.n_gpu_layers)
        path = gguf_path(config, self.model_path)
        log.info("loading %s (n_gpu_layers=%d, n_ctx=%d)", path, config.n_gpu_layers, config.n_ctx)
        try:
            with _model_params(llama_cpp, config.repack):
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=config.n_gpu_layers,
                    n_ctx=config.n_ctx,
                    n_batch=config.n_batch,
                    n_threads=config.n_threads,
                    n_threads_batch=config.n_threads,  # prompt processing: same cores
                    seed=config.seed,
                    verbose=False,
                )
        except ValueError as exc:  # the binding's way of saying the file did not load
            raise BackendError(f"llama.cpp cannot load {path}: {first_line(exc)}") from None
        self.eos_ids = {self.llm.token_eos()}

    def stop(self) -> None:
        """Free the model and its context."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
        self.llm = None

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """Decode the text from an empty context with logits kept at every position.

        The binding's `Llama.eval` keeps only the last position's logits unless the model was
        created with `logits_all`, which would slow every trial's prompt processing; so this
        decodes through the binding's own batch and context with every position marked for
        output, `n_batch` tokens at a time, as `eval` does.
        """
        llm, n_ctx = self.llm, self.config.n_ctx
        if len(ids) > n_ctx:
            raise BackendError(f"a text of {len(ids)} tokens exceeds backend.n_ctx={n_ctx}")
        vocabulary = llm.n_vocab()
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        rows = []
        for start in range(0, len(ids), self.config.n_batch):
            chunk = list(ids[start : start + self.config.n_batch])
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), vocabulary))
            rows.append(logits.copy())
        llm.reset()
        return from_logprobs(ids, log_softmax(np.concatenate(rows)), top_k)

    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Serve the batch one request at a time (the binding holds a single sequence)."""
        return one_at_a_time(requests, lambda one: self._generate_one(one[0], on_token))

    def _generate_one(self, request: GenRequest, on_token: TokenCallback) -> list[GenResult]:
        prompt = list(request.prompt_token_ids)
        if len(prompt) + request.max_tokens > self.config.n_ctx:
            raise BackendError(
                f"prompt ({len(prompt)}) + max_tokens ({request.max_tokens}) exceeds "
                f"backend.n_ctx={self.config.n_ctx}"
            )
        counter = TokenCounter([request], self.eos_ids, on_token)
        self.llm.reset()  # no prefix reuse: every request pays its own prompt processing
        sampling = {"temp": request.temperature, "top_k": 0 if request.temperature > 0 else 1}
        tokens = self.llm.generate(prompt, top_p=1.0, min_p=0.0, repeat_penalty=1.0, **sampling)
        for token in tokens:
            if counter.add(0, token):
                break
        return counter.results()
