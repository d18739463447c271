"""search=tune on vLLM's real CPU server: two server arguments, the report names the best.

`+experiment=tune_vllm_cpu` tunes `max_num_seqs` and `max_num_batched_tokens` of vLLM's
OpenAI server on the tiny model; each configuration is a server of its own, started by the
sweep's driver on the session's Ray cluster. Here each is measured by one closed-loop trial at 8
streams (the objective `output_throughput_tok_s`, maximised: a summary column, so no SLO on a
shared machine decides the answer), four configurations of the six. The report must name the
best configuration, the one with the highest throughput in `tune.parquet`, and give both
arguments an importance; the servers must be gone at the end.
"""

import json

import pandas as pd
import pytest

from sweep.core import records as R
from tests.helpers import own_processes, sweep_in_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_tuning_vllm_names_the_best_configuration_and_each_arguments_importance(
    tmp_path, ray_cluster
):
    done = sweep_in_process(
        "+experiment=tune_vllm_cpu",
        f"output.dir={tmp_path}",
        f"cluster.address={ray_cluster}",
        "tracking=none",
        "search.tune.objective=output_throughput_tok_s",
        "search.tune.direction=maximize",
        "workload.concurrency=8",
        "workload.num_requests=24",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "tune_vllm_cpu"
    table = pd.read_parquet(root / R.TUNE_TABLE)
    measured = table[table["state"] != "duplicate"]
    assert len(measured) == 4 and (measured["state"] == "complete").all(), table["reason"]
    assert measured["params"].is_unique
    best = measured.loc[measured["value"].astype(float).idxmax()]
    params = json.loads(best["params"])
    named = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())
    text = (root / "report.md").read_text()
    assert f"Tuning: the best of 4 configurations is {named}, with output_throughput_tok_s" in text
    for name in ("max_num_seqs", "max_num_batched_tokens"):
        assert f"Importance of backend.{name}: " in text
    summaries = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert set(summaries[R.TRIAL_ID]) == set(measured["seed_id"])  # one trial each, none again
    assert (summaries[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert [p.pid for p in own_processes("vllm.entrypoints")] == []
