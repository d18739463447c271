"""The llama.cpp backend on the tiny model, converted to GGUF by our own converter."""

import sys

import pytest

from backends.llamacpp import GGUF_NAME, LlamaCppBackend, LlamaCppBackendConfig
from sweep.core.errors import BackendError, MissingExtraError
from tests.backends.engine_checks import assert_exact_streaming, run_batch, tiny_requests

pytestmark = pytest.mark.usefixtures("cache_dir")  # conversions go to a test cache

pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_exact_counts_one_sequence_at_a_time(model_dir, outtype):
    requests = tiny_requests(model_dir, max_tokens=(5, 9, 1))
    with LlamaCppBackend(LlamaCppBackendConfig(convert_outtype=outtype), model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)
    # the binding holds one sequence: each request streams only after the previous one ended
    assert [idx for idx, _, _ in events] == [0] * 5 + [1] * 9 + [2]


def test_converted_file_is_cached_and_reused_as_gguf_file(model_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(cache_dir))
    LlamaCppBackend(LlamaCppBackendConfig(), model_dir).start()
    LlamaCppBackend(LlamaCppBackendConfig(), model_dir).start()
    files = sorted((cache_dir / "gguf").glob(f"*/{GGUF_NAME}"))
    assert len(files) == 1
    config = LlamaCppBackendConfig(gguf_file=str(files[0]))
    requests = tiny_requests(model_dir, max_tokens=(3, 3, 3))
    with LlamaCppBackend(config, "/no/such/model") as b:  # the model dir is not needed
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)
    assert sorted((cache_dir / "gguf").glob(f"*/{GGUF_NAME}")) == files


def test_missing_gguf_file_is_one_line(tmp_path):
    config = LlamaCppBackendConfig(gguf_file=str(tmp_path / "none.gguf"))
    with pytest.raises(BackendError, match="is not a file"):
        LlamaCppBackend(config, "unused").start()


def test_request_longer_than_context_is_a_clear_error(model_dir):
    with LlamaCppBackend(LlamaCppBackendConfig(n_ctx=16), model_dir) as b:
        with pytest.raises(BackendError, match="exceeds backend.n_ctx=16"):
            b.generate(tiny_requests(model_dir, max_tokens=(20, 1, 1)), lambda idx, n: None)


def test_missing_package_names_the_extra(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[llamacpp\]'"):
        LlamaCppBackend(LlamaCppBackendConfig(), model_dir).start()


@pytest.mark.gpu
def test_all_layers_on_the_gpu_exact_counts(model_dir):
    config = LlamaCppBackendConfig(n_gpu_layers=-1)
    requests = tiny_requests(model_dir, max_tokens=(16, 16, 16))
    with LlamaCppBackend(config, model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)
