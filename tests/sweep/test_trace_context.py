"""The driver and the worker judge a trace's rows against one context limit, decided once.

The driver checks a trace before Ray starts and the worker builds its prompts: both must use the
same limit (`sweep.datasets.context`), so a trace the plan accepts is never refused by the trial,
and a trace the trial would refuse is refused by the plan. Real plan, real trial (sim backend, the
tiny model's tokenizer).
"""

from __future__ import annotations

import json

import pytest

from sweep.core import records as R
from sweep.core.errors import DatasetError
from sweep.plan.plan import build_plan
from tests.helpers import run_sweep_here

LONG = {"timestamp": 200, "input_length": 5000, "output_length": 4, "hash_ids": []}
SHORT = {"timestamp": 100, "input_length": 40, "output_length": 4, "hash_ids": []}


@pytest.fixture
def long_trace(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (SHORT, LONG)))
    return path


def test_a_limit_the_driver_accepts_is_the_workers_too(tmp_path, long_trace):
    """`model.max_model_len=200000` over the tiny model's 4096: the worker must not refuse."""
    collected: list = []
    run_sweep_here(
        tmp_path / "results",
        ["+experiment=trace_replay", f"sweep.grid.dataset.path=[{long_trace}]",
         "model.max_model_len=200000", "dataset.speedup=20", "workload.warmup_requests=0"],
        collected,
    )  # fmt: skip
    summary = collected[0].summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    inputs = collected[0].requests.to_pandas()[R.INPUT_TOKENS].tolist()
    assert inputs == [40, 5000]


def test_without_a_model_limit_the_driver_refuses_what_the_worker_would(tmp_path, long_trace):
    """`model.max_model_len` unset: the model's own context (4096) decides in the driver too."""
    with pytest.raises(DatasetError, match=r"long\.jsonl:2: .* exceeds the context of 4096"):
        build_plan(
            ["+experiment=trace_replay", f"sweep.grid.dataset.path=[{long_trace}]",
             "model.max_model_len=null", f"output.dir={tmp_path}/out"]
        )  # fmt: skip
