"""The plain Hugging Face `transformers` backend: the baseline every engine is measured against.

Two modes: `per_request` processes one request at a time with no inter-request batching (the
classic baseline of study A), `static_batch` left-pads the batch and generates it in one call.
Tokens are reported through a `transformers` streamer, whose `put` receives each step's tokens
after they were copied to the host (that copy synchronizes the device), so a token is reported
when it really exists.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from backends.base import EngineBackend, GenRequest, GenResult, TokenCallback
from backends.config import (
    DTYPES,
    TORCH_DTYPES,
    EngineConfig,
)
from backends.scoring import TokenScores, from_logprobs
from backends.streaming import TokenCounter, one_at_a_time
from sweep.core.errors import (
    BackendError,
    MissingExtraError,
    check_choice,
)

log = logging.getLogger(__name__)

HF_QUANTIZATIONS = ("bnb_8bit", "bnb_4bit")


class _StepStreamer:
    """A `transformers` streamer feeding each generation step's tokens to a `TokenCounter`.

    The first `put` carries the prompt and is skipped. Rows of a static batch all run to the
    longest limit; the counter stops counting each row at its own `max_tokens` (or EOS).
    """

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self.prompt_seen = False

    def put(self, value: object) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self.counter.add(row, token)

    def end(self) -> None:
        """Called by `generate` when it finishes; nothing to flush."""


@dataclass
class HFBackendConfig(EngineConfig):
    """Plain `transformers` generation: the baseline every engine is compared against."""

    name: str = "hf"
    mode: str = "per_request"
    dtype: str = "fp32"
    device: str = "auto"
    quantization: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "mode", self.mode, ("per_request", "static_batch"))
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_choice("backend", "device", self.device, ("auto", "cpu", "cuda"))
        if self.quantization is not None:
            check_choice("backend", "quantization", self.quantization, HF_QUANTIZATIONS)


class HFBackend(EngineBackend):
    """`transformers.AutoModelForCausalLM.generate`, per request or as a padded static batch."""

    config_class: ClassVar[type] = HFBackendConfig
    baseline: ClassVar[bool] = True  # plain transformers: what the others are compared with
    roofline_fields: ClassVar[tuple[str, ...]] = ("dtype", "quantization")
    scoring_unavailable: ClassVar[str | None] = None

    def start(self) -> None:
        """Load tokenizer and model onto the configured device and dtype."""
        try:
            import torch
            import transformers
        except ImportError as exc:  # pragma: no cover - core dependency
            raise MissingExtraError("transformers", "dev") from exc
        self._torch = torch
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("backend.device=cuda but no CUDA device is visible")
        self.device = device
        dtype = TORCH_DTYPES[self.config.dtype]
        kwargs: dict[str, object] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        if self.config.attn_implementation:
            kwargs["attn_implementation"] = self.config.attn_implementation
        kwargs.update(self._quantization_kwargs(transformers))
        log.info("loading %s on %s (%s)", self.model_path, device, self.config.dtype)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
            model = transformers.AutoModelForCausalLM.from_pretrained(self.model_path, **kwargs)
        except OSError as exc:
            raise BackendError(
                f"cannot load model {self.model_path!r}: {exc}".splitlines()[0]
            ) from None
        if "quantization_config" not in kwargs:
            model = model.to(device)
        self.model = model.eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def _quantization_kwargs(self, transformers: object) -> dict[str, object]:
        """Bitsandbytes 8-bit / 4-bit loading, as study C compared.

        Quantized weights are placed by `device_map` while loading (a quantized model cannot be
        moved with `.to()` afterwards); 4-bit matmuls compute in the configured dtype.
        """
        quant = self.config.quantization
        if quant is None:
            return {}
        if quant not in ("bnb_8bit", "bnb_4bit"):
            raise BackendError(f"backend.quantization={quant!r}; choose bnb_8bit or bnb_4bit")
        for package in ("bitsandbytes", "accelerate"):  # transformers needs both for bnb
            try:
                importlib.import_module(package)
            except ImportError as exc:
                raise MissingExtraError(package, "bitsandbytes") from exc
        if quant == "bnb_8bit":
            bits: dict[str, object] = {"load_in_8bit": True}
        else:
            dtype = TORCH_DTYPES[self.config.dtype]
            compute = self._torch.float32 if dtype == "auto" else getattr(self._torch, dtype)
            bits = {"load_in_4bit": True, "bnb_4bit_compute_dtype": compute}
        return {
            "quantization_config": transformers.BitsAndBytesConfig(**bits),
            "device_map": self.device,
        }

    def stop(self) -> None:
        """Drop the model and free device memory."""
        self.model = None
        torch = getattr(self, "_torch", None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def score(self, ids: Sequence[int], top_k: int) -> TokenScores:
        """One forward pass over the text; log-softmax in float32 whatever the model's dtype."""
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.tensor([list(ids)], device=self.device)).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return from_logprobs(ids, logprobs, top_k)

    def generate(self, requests: Sequence[GenRequest], on_token: TokenCallback) -> list[GenResult]:
        """Generate `requests`: one at a time (`per_request`) or as one padded batch."""
        if self.config.mode == "per_request":
            return one_at_a_time(requests, lambda one: self._generate_batch(one, on_token))
        return self._generate_batch(requests, on_token)

    def _generate_batch(
        self, requests: Sequence[GenRequest], on_token: TokenCallback
    ) -> list[GenResult]:
        torch = self._torch
        longest = max(len(r.prompt_token_ids) for r in requests)
        input_ids = torch.full((len(requests), longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(requests), longest), dtype=torch.long)
        for row, request in enumerate(requests):
            ids = torch.tensor(request.prompt_token_ids, dtype=torch.long)
            input_ids[row, longest - len(ids) :] = ids  # left padding keeps the last token aligned
            attention[row, longest - len(ids) :] = 1
        max_new = max(r.max_tokens for r in requests)
        ignore_eos = all(r.ignore_eos for r in requests)
        temperature = requests[0].temperature
        sampling = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        counter = TokenCounter(requests, self.eos_ids, on_token)
        streamer = _StepStreamer(counter)
        try:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention.to(self.device),
                    max_new_tokens=max_new,
                    min_new_tokens=max_new if ignore_eos else None,
                    pad_token_id=self.pad_id,
                    streamer=streamer,
                    **sampling,
                )
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise BackendError(
                f"out of memory at batch {len(requests)}: {exc}".splitlines()[0],
                kind="out_of_memory",
            ) from None
        return counter.results()
