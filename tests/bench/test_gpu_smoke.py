"""scripts/gpu_smoke.sh: its table on a machine without CUDA, and how it judges a GPU sweep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from sweep.core import records as R
from sweep.tools.gpu_smoke import verify

REPO = Path(__file__).parents[2]


def test_without_cuda_the_first_check_fails_and_the_rest_are_skipped(tmp_path):
    assert not torch.cuda.is_available()  # this suite runs on CPU machines (gpu tests apart)
    done = subprocess.run(
        ["bash", REPO / "scripts" / "gpu_smoke.sh", "--results-dir", tmp_path],
        cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [(r[0].strip("| "), r[1]) for r in rows] == [
        ("import vllm, torch; CUDA", "fail"),
        ("server_tuning c1, c3, c5", "skipped"),
        ("batch_size_sweep at 1 and 8", "skipped"),
        ("one trial on a cluster", "skipped"),
    ]
    assert "CUDA" in rows[0][2]
    written = list(tmp_path.glob("gpu_smoke/*/table.md"))
    assert len(written) == 1 and written[0].read_text().strip() in done.stdout


def row(deployment, pid, choice="vllm_tuning/c1_default", **extra):
    return {R.TRIAL_STATUS: R.STATUS_OK, R.ERROR_KIND: None, R.ERROR_MESSAGE: None,
            "env.gpu_name": "NVIDIA L4", R.DEPLOYMENT_ID: deployment, R.ENV_WORKER_PID: pid,
            R.GROUP_CHOICES: json.dumps({"backend": choice}), **extra}  # fmt: skip


def test_a_sound_gpu_sweep_passes_and_each_fault_is_named():
    suffix = "vllm_tuning/c5_seqs256_fp8_suffix16"
    spec = row("b", 2, suffix, spec_acceptance_percent=41.0)
    good = pd.DataFrame([row("a", 1), row("a", 1), spec])
    assert verify(good, [R.SPEC_ACCEPTANCE_PERCENT]) == []
    no_spec = pd.DataFrame([row("a", 1), row("b", 2, suffix, spec_acceptance_percent=None)])
    assert verify(no_spec, [R.SPEC_ACCEPTANCE_PERCENT]) == [
        "spec_acceptance_percent missing where the config asks for it"
    ]
    shared = pd.DataFrame([row("a", 7), row("b", 7)])
    assert verify(shared, []) == ["two deployments shared a worker process"]
    blind = pd.DataFrame([row("a", 1, **{"env.gpu_name": None})])
    assert verify(blind, []) == ["env.gpu_name missing: NVML did not see the GPU"]
    failed = pd.DataFrame(
        [
            row(
                "a",
                1,
                **{
                    R.TRIAL_STATUS: R.STATUS_FAILED,
                    R.ERROR_KIND: "out_of_memory",
                    R.ERROR_MESSAGE: "OOM",
                },
            )
        ]
    )
    assert verify(failed, []) == ["1 of 1 failed (out_of_memory: OOM)"]
    assert verify(pd.DataFrame(), []) == ["no trial recorded"]
