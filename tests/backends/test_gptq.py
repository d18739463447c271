"""GPTQ checkpoints: our test checkpoint's packing, and vLLM serving it via `quantization`."""

import pytest
import torch
from safetensors.torch import load_file

from backends.models.tiny import ensure_tiny_model
from tests.backends.engine_checks import assert_exact_streaming, run_batch, tiny_requests
from tests.backends.gptq_model import dequantize, write_gptq_model


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    tiny = ensure_tiny_model(tmp_path_factory.mktemp("models"))
    return tiny, write_gptq_model(tiny, tmp_path_factory.mktemp("gptq") / "tiny-gptq")


def test_packed_weights_dequantize_to_the_originals(dirs):
    tiny, gptq = dirs
    original = load_file(tiny / "model.safetensors")
    packed = load_file(gptq / "model.safetensors")
    for name in ("model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"):
        weight = original[f"{name}.weight"]
        parts = {k: packed[f"{name}.{k}"] for k in ("qweight", "qzeros", "scales", "g_idx")}
        assert parts["qweight"].dtype == torch.int32 and f"{name}.weight" not in packed
        # round to nearest of 15 levels: the error is at most half a step of each group
        step = weight.abs().amax() / 7
        assert (dequantize(parts) - weight).abs().max() <= step / 2 + 1e-3


@pytest.mark.gpu
def test_vllm_serves_a_gptq_checkpoint(dirs):
    pytest.importorskip("vllm", reason="needs the vllm extra")
    from backends.vllm import VLLMBackend, VLLMBackendConfig

    gptq = str(dirs[1])
    config = VLLMBackendConfig(quantization="gptq", dtype="fp16", gpu_memory_utilization=0.3)
    requests = tiny_requests(gptq, max_tokens=(5, 9, 1))
    with VLLMBackend(config, gptq) as backend:
        results, sent, events = run_batch(backend, requests)
    assert_exact_streaming(results, sent, events, requests)
