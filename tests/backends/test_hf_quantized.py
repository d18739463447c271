"""The HF backend with bitsandbytes 8-bit and 4-bit weights (study C), on CPU where bnb allows."""

import sys

import pytest
import torch

from backends.hf import HFBackend, HFBackendConfig
from sweep.core.errors import ConfigError, MissingExtraError
from tests.backends.engine_checks import assert_exact_streaming, run_batch, tiny_requests

bnb = pytest.importorskip("bitsandbytes", reason="needs the bitsandbytes extra")
pytest.importorskip("accelerate", reason="needs the bitsandbytes extra")

LAYERS = {"bnb_8bit": "Linear8bitLt", "bnb_4bit": "Linear4bit"}


def check_quantized(model_dir, quantization, device, dtype):
    config = HFBackendConfig(
        mode="static_batch", quantization=quantization, device=device, dtype=dtype
    )
    requests = tiny_requests(model_dir, max_tokens=(5, 9, 1))
    with HFBackend(config, model_dir) as backend:
        layer = backend.model.model.layers[0].self_attn.q_proj
        assert type(layer).__name__ == LAYERS[quantization]
        assert layer.weight.device.type == device
        results, sent, events = run_batch(backend, requests)
    assert_exact_streaming(results, sent, events, requests)


# bitsandbytes has CPU kernels for both (measured with 0.50.2 and torch 2.13 CPU).
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("quantization", ["bnb_8bit", "bnb_4bit"])
def test_cpu_quantized_weights_exact_counts(model_dir, quantization):
    check_quantized(model_dir, quantization, "cpu", "fp32")


def test_missing_bitsandbytes_names_the_extra(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[bitsandbytes\]'"):
        HFBackend(HFBackendConfig(quantization="bnb_8bit", device="cpu"), model_dir).start()


def test_unknown_quantization_fails_at_config_time():
    with pytest.raises(ConfigError, match="backend.quantization='gptq' is not valid"):
        HFBackendConfig(quantization="gptq")


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["bnb_8bit", "bnb_4bit"])
def test_cuda_quantized_weights_exact_counts(model_dir, quantization):
    assert torch.cuda.is_available()
    check_quantized(model_dir, quantization, "cuda", "fp16")
