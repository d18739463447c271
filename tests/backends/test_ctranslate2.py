"""The CTranslate2 backend on the tiny model: converted once, exact counts, step streaming."""

import ctypes
import dataclasses
import sys

import pytest

from backends.ctranslate2 import CTranslate2Backend, CTranslate2BackendConfig
from sweep.core import records as R
from sweep.core.errors import BackendError, MissingExtraError
from tests.backends.engine_checks import assert_exact_streaming, run_batch, tiny_requests

pytestmark = pytest.mark.usefixtures("cache_dir")  # conversions go to a test cache

ct2 = pytest.importorskip("ctranslate2", reason="needs the ctranslate2 extra")


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_exact_counts_streamed_step_by_step(model_dir, compute_type):
    requests = tiny_requests(model_dir, max_tokens=(5, 9, 1))
    with CTranslate2Backend(CTranslate2BackendConfig(compute_type=compute_type), model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)


def test_equal_prompts_decode_in_lockstep(model_dir):
    # One static batch: each step yields a token for every row. (With unequal prompts the
    # shorter ones start early while the longer ones still feed their prompt token by token.)
    request = tiny_requests(model_dir)[0]
    requests = [dataclasses.replace(request, idx=i, max_tokens=4) for i in range(3)]
    with CTranslate2Backend(CTranslate2BackendConfig(), model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)
    assert [sorted(idx for idx, _, _ in events[s : s + 3]) for s in (0, 3, 6, 9)] == [[0, 1, 2]] * 4


def test_conversion_is_cached_per_model_and_compute_type(model_dir, cache_dir, monkeypatch):
    CTranslate2Backend(CTranslate2BackendConfig(), model_dir).start()
    entries = sorted(p.name for p in (cache_dir / "ct2").iterdir() if not p.name.startswith("."))

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(ct2.converters, "TransformersConverter", no_second_conversion)
    CTranslate2Backend(CTranslate2BackendConfig(), model_dir).start()
    assert sorted(p.name for p in (cache_dir / "ct2").iterdir() if not p.name.startswith(".")) == (
        entries
    )
    assert (cache_dir / "ct2" / entries[0] / "model.bin").is_file()
    assert not [p for p in (cache_dir / "ct2").iterdir() if p.is_dir() and p.name.startswith(".")]


def test_larger_batch_than_max_batch_size_keeps_counts(model_dir):
    requests = tiny_requests(model_dir, max_tokens=(3, 4, 2))
    config = CTranslate2BackendConfig(max_batch_size=2)
    with CTranslate2Backend(config, model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)


def test_unsupported_compute_type_is_one_line(model_dir):
    if ct2.get_cuda_device_count():
        pytest.skip("float16 is supported on this machine's GPU")
    backend = CTranslate2Backend(CTranslate2BackendConfig(compute_type="float16"), model_dir)
    with pytest.raises(BackendError, match="compute_type=float16 is not supported on cpu") as err:
        backend.start()
    assert "\n" not in str(err.value)


def test_missing_package_names_the_extra(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # makes `import ctranslate2` fail
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[ctranslate2\]'"):
        CTranslate2Backend(CTranslate2BackendConfig(), model_dir).start()


def test_a_device_that_cannot_compute_fails_at_start_in_one_line(model_dir, monkeypatch):
    """CTranslate2 opens its CUDA libraries at the first computation. No GPU is here, so its
    failure on a node without CUDA 12's cuBLAS (seen on an H200) is simulated: the generator
    answers every batch as it did there. The rest is the real backend on the real model."""
    real = ct2.Generator

    class WithoutCuda12:
        def __init__(self, *args, **kwargs):
            self.real = real(*args, **kwargs)

        def generate_batch(self, *args, **kwargs):
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")

    monkeypatch.setattr(ct2, "Generator", WithoutCuda12)
    with pytest.raises(BackendError) as err:
        CTranslate2Backend(CTranslate2BackendConfig(), model_dir).start()
    message = str(err.value)
    assert "libcublas.so.12 is not found (its wheels are built for CUDA 12)" in message
    assert "backend.device=cpu" in message and "\n" not in message
    assert err.value.kind == R.ERROR_BACKEND_START


def cuda12_cublas_loads() -> bool:
    try:
        ctypes.CDLL("libcublas.so.12")
    except OSError:
        return False
    return True


@pytest.mark.gpu
def test_cuda_int8_float16_exact_counts(model_dir):
    """Exact counts where CUDA 12's cuBLAS is installed; else the one-line error at start."""
    config = CTranslate2BackendConfig(device="cuda", compute_type="int8_float16")
    requests = tiny_requests(model_dir, max_tokens=(16, 16, 16))
    if not cuda12_cublas_loads():
        with pytest.raises(BackendError, match=r"libcublas\.so\.12 is not found"):
            CTranslate2Backend(config, model_dir).start()
        return
    with CTranslate2Backend(config, model_dir) as b:
        results, sent, events = run_batch(b, requests)
    assert_exact_streaming(results, sent, events, requests)
