"""Out of memory is its own error kind: raised inside a trial, the trial is recorded failed as
`out_of_memory` (`sweep.worker.trial._classify`), with the first line of the reason.

The real HF backend on the tiny model runs each trial through the trial runner in this process
(`tests.helpers.run_sweep_here`); only the model's `generate` is replaced, by one that raises the
error, standing in for a GPU or host that ran out of memory (there is no GPU here).
"""

import pandas as pd
import pytest
import torch

import sweep.worker.trial as trial_module
from backends.hf import HFBackend
from sweep.core import records as R
from tests.helpers import run_sweep_here

TRIAL = (
    "backend=hf", "backend.mode=static_batch", "model=tiny_llama", "workload=throughput_bound",
    "workload.batch_size=2",
    "workload.num_requests=4", "workload.output_len=4", "workload.warmup_requests=0",
    "sweep.name=oom",
)  # fmt: skip


def out_of_memory_backend(error: BaseException, at: str) -> type:
    """HF, whose model raises `error` when it loads (`at="start"`) or generates (`"generate"`)."""

    class OutOfMemory(HFBackend):
        def start(self):
            if at == "start":
                raise error
            super().start()

            def generate(*args, **kwargs):
                raise error

            self.model.generate = generate

    return OutOfMemory


@pytest.mark.parametrize(
    ("error", "at", "message"),
    [
        # torch's CUDA error, turned by the HF backend into its out-of-memory BackendError
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
         "generate", "out of memory at batch 2: CUDA out of memory. Tried to allocate 2.00 GiB"),
        # a host allocation that failed, caught by the trial runner itself
        (MemoryError("cannot allocate 2.00 GiB"), "generate", "MemoryError: cannot allocate"),
        (MemoryError("cannot allocate the weights"), "start", "MemoryError: cannot allocate"),
    ],
    ids=["torch-generate", "memory-generate", "memory-start"],
)  # fmt: skip
def test_out_of_memory_is_its_own_error_kind(tmp_path, monkeypatch, error, at, message):
    backend = out_of_memory_backend(error, at)
    monkeypatch.setattr(trial_module, "backend_class", lambda name: backend)
    root = run_sweep_here(tmp_path, TRIAL)
    (path,) = root.glob(f"*/*/{R.SUMMARY_FILE}")
    row = pd.read_parquet(path).iloc[0]
    assert row[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert row[R.ERROR_KIND] == R.ERROR_OUT_OF_MEMORY
    assert row[R.ERROR_MESSAGE].startswith(message), row[R.ERROR_MESSAGE]
