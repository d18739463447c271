"""The ExLlamaV2 backend: one clear line without CUDA; GPTQ generation, exact counts, on a GPU."""

import sys

import pytest
import torch

from backends.exllamav2 import ExLlamaV2Backend, ExLlamaV2BackendConfig
from backends.models.tiny import ensure_tiny_model
from sweep.core.errors import BackendError
from tests.backends.engine_checks import assert_exact_streaming, run_batch, tiny_requests
from tests.backends.gptq_model import write_gptq_model


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error case needs a machine without CUDA")
def test_without_cuda_start_fails_with_one_line_and_imports_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "exllamav2", raising=False)
    backend = ExLlamaV2Backend(ExLlamaV2BackendConfig(), "TheBloke/Llama-2-7B-GPTQ")
    with pytest.raises(BackendError, match="exllamav2 needs a CUDA GPU") as err:
        backend.start()
    assert "\n" not in str(err.value)
    assert err.value.kind == "backend_start_failed"
    assert "exllamav2" not in sys.modules  # its CUDA extension is never built on such machines
    backend.stop()  # safe after a failed start


@pytest.fixture(scope="module")
def gptq_dir(tmp_path_factory):
    tiny = ensure_tiny_model(tmp_path_factory.mktemp("models"))
    return str(write_gptq_model(tiny, tmp_path_factory.mktemp("gptq") / "tiny-gptq"))


def flash_attn_available():
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.parametrize("paged", [True, False])
def test_gptq_generation_exact_counts(gptq_dir, paged):
    pytest.importorskip("exllamav2", reason="needs the exllamav2 extra")
    if paged and not flash_attn_available():
        pytest.skip("paged (batched) mode needs flash-attn")
    config = ExLlamaV2BackendConfig(max_seq_len=512, cache_tokens=2048, paged=paged)
    requests = tiny_requests(gptq_dir, max_tokens=(5, 9, 1))
    with ExLlamaV2Backend(config, gptq_dir) as backend:
        results, sent, events = run_batch(backend, requests)
    assert_exact_streaming(results, sent, events, requests)
