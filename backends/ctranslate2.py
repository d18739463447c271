"""The CTranslate2 engine: the HF checkpoint converted to CTranslate2's format, static batches.

On first use the checkpoint is converted with `ctranslate2.converters.TransformersConverter`,
once per model and compute type, into the conversion cache (`backends.models.cache`); later
deployments load the cached directory. A batch is handed to `Generator.generate_batch` in one
call: CTranslate2 pads it and decodes all rows step by step together until the longest request
is done (static batching; it does not admit new requests mid-batch). Its step callback reports
every row's token as soon as the step ends, which `TokenCounter` turns into exact counts.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backends.base import EngineBackend, GenRequest, GenResult, TokenCallback
from backends.config import EngineConfig
from backends.models.cache import cache_key, cached_build
from backends.scoring import TokenScores, from_logprobs
from backends.streaming import TokenCounter
from sweep.core import records as R
from sweep.core.errors import (
    BackendError,
    ConfigError,
    MissingExtraError,
    check_choice,
)

log = logging.getLogger(__name__)

CT2_COMPUTE_TYPES = ("float32", "float16", "int8", "int8_float16")


def import_ctranslate2() -> Any:
    """The `ctranslate2` module, or a one-line error naming the extra to install."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise MissingExtraError("ctranslate2", "ctranslate2") from exc
    return ctranslate2


def converted_model(ct2: Any, model_path: str, compute_type: str) -> Path:
    """The cached CTranslate2 directory of `model_path`, converting it on first use.

    Weights are stored in `compute_type` (an int8 model is a quarter of the float32 size on
    disk) and the key includes CTranslate2's version, whose format may change between releases.
    """

    def build(out: Path) -> None:
        converter = ct2.converters.TransformersConverter(model_path, low_cpu_mem_usage=True)
        converter.convert(str(out), quantization=compute_type, force=True)

    key = cache_key(model_path, compute_type=compute_type, ctranslate2=ct2.__version__)
    return cached_build("ct2", key, build, f"{model_path} to CTranslate2 ({compute_type})")


@dataclass
class CTranslate2BackendConfig(EngineConfig):
    """CTranslate2: the HF checkpoint converted once per compute type, static batches."""

    name: str = "ctranslate2"
    compute_type: str = "float32"
    device: str = "auto"
    device_index: int = 0
    intra_threads: int = 0
    max_batch_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "compute_type", self.compute_type, CT2_COMPUTE_TYPES)
        check_choice("backend", "device", self.device, ("auto", "cpu", "cuda"))
        if min(self.device_index, self.intra_threads, self.max_batch_size) < 0:
            raise ConfigError("backend.device_index, intra_threads and max_batch_size must be >= 0")


class CTranslate2Backend(EngineBackend):
    """`ctranslate2.Generator` on CPU or CUDA, greedy or sampled, exact output lengths."""

    config_class: ClassVar[type] = CTranslate2BackendConfig
    weight_format: ClassVar[str] = R.WEIGHTS_CTRANSLATE2
    roofline_fields: ClassVar[tuple[str, ...]] = ("compute_type",)
    scoring_unavailable: ClassVar[str | None] = None

    def start(self) -> None:
        """Convert (once) and load the model; check the compute type suits the device."""
        ct2 = import_ctranslate2()
        device = self._device(ct2)
        compute_type = self.config.compute_type
        supported = sorted(ct2.get_supported_compute_types(device))
        if compute_type not in supported:
            raise BackendError(
                f"backend.compute_type={compute_type} is not supported on {device}; "
                f"this machine supports: {', '.join(supported)}"
            )
        model_dir = converted_model(ct2, self.model_path, compute_type)
        # Token strings in id order: CTranslate2 takes prompts as tokens, we hold ids.
        self.vocabulary = json.loads((model_dir / "vocabulary.json").read_text(encoding="utf-8"))
        ids = {token: idx for idx, token in enumerate(self.vocabulary)}
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        self.eos_ids = {ids[meta["eos_token"]]} if meta.get("eos_token") in ids else set()
        self.device = device
        self._cpu = ct2.Device.cpu
        log.info("loading %s on %s (%s)", model_dir, device, compute_type)
        self.generator = ct2.Generator(
            str(model_dir),
            device=device,
            device_index=self.config.device_index,
            compute_type=compute_type,
            intra_threads=self.config.intra_threads,
        )
        self._first_step(ct2.__version__)

    def _first_step(self, version: str) -> None:
        """One greedy step of the loaded model, so that a device that cannot compute fails here.

        CTranslate2 opens its CUDA libraries at the first computation, not when the model
        loads: its wheels are built for CUDA 12, and on a node with only CUDA 13's libraries
        (vLLM 0.32's torch) the model loads onto the GPU and every batch then fails with
        "Library libcublas.so.12 is not found or cannot be loaded" (seen on an H200, driver
        580.159.04, ctranslate2 4.8.5). Failing at start names it once for the deployment.
        """
        try:
            self.generator.generate_batch([[self.vocabulary[0]]], max_length=1, sampling_topk=1)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            missing = re.search(r"Library (\S+) is not found", reason)
            if missing is not None:
                reason = (
                    f"{missing.group(1)} is not found (its wheels are built for CUDA 12); install "
                    f"CUDA 12's libraries on the node (docs/gpu-checklist.md) or set "
                    f"backend.device=cpu"
                )
            raise BackendError(
                f"CTranslate2 {version} cannot compute on {self.device}: {reason}",
                R.ERROR_BACKEND_START,
            ) from None

    def _device(self, ct2: Any) -> str:
        has_cuda = ct2.get_cuda_device_count() > 0
        if self.config.device == "auto":
            return "cuda" if has_cuda else "cpu"
        if self.config.device == "cuda" and not has_cuda:
            raise BackendError("backend.device=cuda but CTranslate2 sees no CUDA device")
        return self.config.device

    def stop(self) -> None:
        """Free the model (device memory is released with the generator)."""
        self.generator = None

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """`Generator.forward_batch`: every position's log-probabilities in one call.

        `score_batch` would give only each text token's own log-probability, not the top-K
        alternatives the comparison needs.
        """
        out = self.generator.forward_batch([list(ids)], return_log_probs=True)
        if self.device != "cpu":
            out = out.to_device(self._cpu)
        return from_logprobs(ids, np.asarray(out)[0], top_k)

    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Decode the batch together; each step's tokens go to `on_token` as the step ends.

        EOS never ends decoding inside CTranslate2 (`end_token=[]`): the counter ends a row at
        its `max_tokens`, or at EOS for requests that do not ignore it, by returning True from
        the callback, which stops that row. `include_prompt_in_result=False` feeds the prompts
        in at once and makes `max_length` count new tokens only.
        """
        counter = TokenCounter(requests, self.eos_ids, on_token)
        temperature = requests[0].temperature
        sampling = (
            {"sampling_topk": 0, "sampling_temperature": temperature}
            if temperature > 0
            else {"sampling_topk": 1}
        )
        self.generator.generate_batch(
            [[self.vocabulary[i] for i in r.prompt_token_ids] for r in requests],
            max_batch_size=self.config.max_batch_size,
            beam_size=1,
            max_length=counter.longest,
            end_token=[],
            include_prompt_in_result=False,
            callback=lambda step: counter.add(step.batch_id, step.token_id),
            **sampling,
        )
        return counter.results()
