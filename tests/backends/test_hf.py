"""The HF backend on the project's tiny model: exact token counts, real streaming, both modes."""

import pytest
import torch

from backends.base import GenRequest
from backends.hf import HFBackend, HFBackendConfig
from sweep.core.errors import BackendError
from sweep.loadgen.clock import now_s


def requests_of(lengths, max_tokens, ignore_eos=True):
    return [
        GenRequest(i, "x", tuple(range(5, 5 + n)), m, ignore_eos)
        for i, (n, m) in enumerate(zip(lengths, max_tokens, strict=True))
    ]


@pytest.mark.parametrize("mode", ["per_request", "static_batch"])
def test_exact_token_counts_streamed_one_by_one(model_dir, mode):
    events = []
    with HFBackend(HFBackendConfig(mode=mode), model_dir) as backend:
        reqs = requests_of([7, 12, 3], [5, 9, 1])
        results = backend.generate(reqs, lambda idx, n: events.append((idx, n, now_s())))
    assert [(r.idx, r.output_tokens) for r in results] == [(0, 5), (1, 9), (2, 1)]
    for req in reqs:
        mine = [e for e in events if e[0] == req.idx]
        assert sum(n for _, n, _ in mine) == req.max_tokens
        times = [t for _, _, t in mine]
        assert times == sorted(times)
    if mode == "per_request":
        # no inter-request batching: request 1 starts streaming only after request 0 finished
        end0 = max(t for i, _, t in events if i == 0)
        assert min(t for i, _, t in events if i == 1) > end0
    else:
        # one padded batch: rows interleave step by step
        assert [i for i, _, _ in events[:3]] == [0, 1, 2]


@pytest.mark.parametrize("mode", ["per_request", "static_batch"])
def test_without_ignore_eos_a_row_stops_at_eos(model_dir, mode):
    """EOS made a token the model is known to emit: the tiny model's greedy continuation of the
    prompt is read first, and the first token it emits anew from the third on becomes EOS; the
    row then stops there, with exactly the tokens before it, far below its limit."""
    prompt = tuple(range(5, 11))
    with HFBackend(HFBackendConfig(mode=mode), model_dir) as backend:
        greedy = backend.model.generate(
            input_ids=torch.tensor([prompt], device=backend.device), max_new_tokens=40,
            min_new_tokens=40, do_sample=False, pad_token_id=backend.pad_id,
        )[0, len(prompt):].tolist()  # fmt: skip
        stop = next(k for k in range(2, 40) if greedy[k] not in greedy[:k])
        backend.eos_ids = {greedy[stop]}
        backend.model.generation_config.eos_token_id = greedy[stop]
        reqs = requests_of([len(prompt)] * 2, [40, 40], ignore_eos=False)
        events = []
        results = backend.generate(reqs, lambda idx, n: events.append(idx))
    assert [r.output_tokens for r in results] == [stop, stop]
    assert events.count(0) == events.count(1) == stop < 40


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_dtypes_load_and_generate(model_dir, dtype):
    with HFBackend(HFBackendConfig(dtype=dtype), model_dir) as backend:
        assert backend.model.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        results = backend.generate(requests_of([4], [3]), lambda idx, n: None)
    assert results[0].output_tokens == 3


def test_missing_model_is_a_clear_backend_error(tmp_path):
    with pytest.raises(BackendError, match="cannot load model"):
        HFBackend(HFBackendConfig(), str(tmp_path / "nowhere")).start()


def test_cuda_requested_without_gpu_is_a_clear_error(model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without
    with pytest.raises(BackendError, match="no CUDA device"):
        HFBackend(HFBackendConfig(device="cuda"), model_dir).start()


@pytest.mark.gpu
def test_cuda_generation_exact_counts(model_dir):
    with HFBackend(
        HFBackendConfig(device="cuda", dtype="fp16", mode="static_batch"), model_dir
    ) as b:
        results = b.generate(requests_of([8, 8, 8, 8], [16] * 4), lambda idx, n: None)
    assert [r.output_tokens for r in results] == [16] * 4
