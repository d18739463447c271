"""The ExLlamaV2 engine: GPTQ and EXL2 quantized checkpoints on CUDA, continuous batching.

ExLlamaV2's kernels exist only for CUDA (its extension is compiled on first import), so the
backend checks for a GPU before importing it: on a machine without one, the deployment fails at
start with one line. Requests of a batch become jobs of the dynamic generator, which admits them
into its paged KV cache as space allows and decodes them together (continuous batching: jobs join
and leave between steps). Each `iterate()` step streams the jobs' new token ids; EOS is ignored
by giving a job no stop tokens, so it runs to exactly `max_new_tokens`.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from backends.base import EngineBackend, GenRequest, GenResult, TokenCallback
from backends.config import EngineConfig
from backends.models.cache import first_line, local_checkpoint
from backends.streaming import TokenCounter
from sweep.core import records as R
from sweep.core.errors import (
    BackendError,
    ConfigError,
    MissingExtraError,
    check_choice,
    check_positive,
)

log = logging.getLogger(__name__)

# The first flash-attn with `flash_attn_with_kvcache` and a block table (exllamav2.attn).
FLASH_ATTN_PAGED = (2, 5, 7)
FLASH_ATTN_PAGED_TEXT = ".".join(map(str, FLASH_ATTN_PAGED))
CACHE_CLASSES = {
    "fp16": "ExLlamaV2Cache",
    "q8": "ExLlamaV2Cache_Q8",
    "q6": "ExLlamaV2Cache_Q6",
    "q4": "ExLlamaV2Cache_Q4",
}


def import_exllamav2() -> tuple[Any, Any]:
    """`exllamav2` and its generator module; importing builds the CUDA extension on first use."""
    try:
        import exllamav2
        import exllamav2.generator as generator
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "exllamav2":
            raise MissingExtraError("exllamav2", "exllamav2") from exc
        message = f"exllamav2 failed to import: {first_line(exc)}"
        raise BackendError(message, R.ERROR_BACKEND_START) from None
    except Exception as exc:  # e.g. its CUDA extension does not compile on this machine
        message = f"exllamav2 failed to load: {first_line(exc)}"
        raise BackendError(message, R.ERROR_BACKEND_START) from None
    return exllamav2, generator


def require_paged_attention(torch: Any) -> None:
    """Fail with one line unless flash-attn can serve the paged cache on every visible GPU.

    The dynamic generator's paged mode asserts flash-attn >= 2.5.7 (`exllamav2.attn`), only
    once the model is loaded; flash-attn's kernels need compute capability 8.0 (Ampere) or
    newer, and on an older GPU (a T4) they fail at the first batch. The version is read from
    the installed package's metadata: importing flash-attn would load its CUDA extension.
    """
    unpaged = "or set backend.paged=false (one sequence at a time)"
    try:
        version = importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or _release(version) < FLASH_ATTN_PAGED:
        found = "it is not installed" if version is None else f"{version} is installed"
        raise BackendError(
            f"exllamav2's paged cache needs flash-attn>={FLASH_ATTN_PAGED_TEXT} ({found}): pip "
            f"install --no-build-isolation -e '.[exllamav2]', {unpaged}",
            R.ERROR_BACKEND_START,
        )
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        if major < 8:
            raise BackendError(
                f"exllamav2's paged cache needs flash-attn, whose kernels need compute "
                f"capability 8.0 or newer; GPU {index} has compute capability {major}.{minor}: "
                f"{unpaged}",
                R.ERROR_BACKEND_START,
            )


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: `2.8.3.post2` -> (2, 8, 3)."""
    numbers = []
    for part in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


@dataclass
class ExLlamaV2BackendConfig(EngineConfig):
    """ExLlamaV2: GPTQ or EXL2 checkpoints on CUDA, its dynamic (continuous) batching generator."""

    name: str = "exllamav2"
    max_seq_len: int = 4096
    max_batch_size: int = 64
    cache_tokens: int = 32768
    cache_type: str = "fp16"
    paged: bool = True
    num_gpus: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "cache_type", self.cache_type, tuple(CACHE_CLASSES))
        check_positive("backend", max_seq_len=self.max_seq_len, max_batch_size=self.max_batch_size)
        if self.cache_tokens < self.max_seq_len or self.cache_tokens % 256:
            raise ConfigError(
                f"backend.cache_tokens={self.cache_tokens} must be a multiple of 256 (the page "
                f"size) and at least max_seq_len={self.max_seq_len}"
            )


class ExLlamaV2Backend(EngineBackend):
    """`ExLlamaV2DynamicGenerator` over a GPTQ or EXL2 model directory (or hub id)."""

    config_class: ClassVar[type] = ExLlamaV2BackendConfig
    weight_format: ClassVar[str] = R.WEIGHTS_EXL2
    roofline_fields: ClassVar[tuple[str, ...]] = ("cache_type",)

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """The paged cache needs flash-attn (a source build, its own set-up piece)."""
        return ("flash-attn",) if config.paged else ()

    def start(self) -> None:
        """Check for CUDA, then load the model across the visible GPUs with its KV cache."""
        import torch

        if not torch.cuda.is_available():
            raise BackendError(
                "exllamav2 needs a CUDA GPU and none is visible on this machine "
                "(its GPTQ/EXL2 kernels are CUDA-only)",
                R.ERROR_BACKEND_START,
            )
        self._torch = torch
        if self.config.paged:
            require_paged_attention(torch)
        exl, gen = import_exllamav2()
        config = self.config
        model_config = exl.ExLlamaV2Config(str(local_checkpoint(self.model_path)))
        model_config.max_seq_len = min(model_config.max_seq_len, config.max_seq_len)
        model = exl.ExLlamaV2(model_config)
        cache_class = getattr(exl, CACHE_CLASSES[config.cache_type])
        cache = cache_class(model, max_seq_len=config.cache_tokens, lazy=True)
        log.info("loading %s (%s cache of %d tokens)", self.model_path, config.cache_type,
                 config.cache_tokens)  # fmt: skip
        try:
            model.load_autosplit(cache, progress=False)
            self.generator = gen.ExLlamaV2DynamicGenerator(
                model=model,
                cache=cache,
                tokenizer=exl.ExLlamaV2Tokenizer(model_config),
                max_batch_size=config.max_batch_size,
                paged=config.paged,
            )
        except AssertionError as exc:  # exllamav2 reports unmet requirements by assert
            raise BackendError(
                f"exllamav2 cannot start: {first_line(exc)} (paged mode needs flash-attn; "
                "backend.paged=false serves one sequence at a time)",
                R.ERROR_BACKEND_START,
            ) from None
        self._gen = gen
        self._model, self._cache = model, cache
        eos = model_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def stop(self) -> None:
        """Unload the model and free its GPU memory."""
        model = getattr(self, "_model", None)
        if model is not None:
            model.unload()
        self._model = self._cache = self.generator = None
        torch = getattr(self, "_torch", None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Enqueue the batch as jobs and stream each step's tokens until every job ends."""
        torch, gen = self._torch, self._gen
        counter = TokenCounter(requests, self.eos_ids, on_token)
        jobs = [
            gen.ExLlamaV2DynamicJob(
                input_ids=torch.tensor([request.prompt_token_ids], dtype=torch.long),
                max_new_tokens=request.max_tokens,
                stop_conditions=[] if request.ignore_eos else sorted(self.eos_ids),
                gen_settings=_sampling(gen, request.temperature),
                identifier=row,
            )
            for row, request in enumerate(requests)
        ]
        self.generator.enqueue(jobs)
        try:
            while self.generator.num_remaining_jobs():
                for result in self.generator.iterate():
                    ids = result.get("token_ids") if result["stage"] == "streaming" else None
                    for token in [] if ids is None else ids.reshape(-1).tolist():
                        counter.add(result["identifier"], token)
        except torch.OutOfMemoryError as exc:
            self.generator.clear_queue()
            raise BackendError(
                f"out of memory at batch {len(requests)}: {first_line(exc)}",
                kind=R.ERROR_OUT_OF_MEMORY,
            ) from None
        return counter.results()


def _sampling(gen: Any, temperature: float) -> Any:
    """Greedy at temperature 0 (as the studies decode), else plain temperature sampling."""
    if temperature <= 0:
        return gen.ExLlamaV2Sampler.Settings.greedy()
    return gen.ExLlamaV2Sampler.Settings.greedy(temperature=temperature, top_k=0)
