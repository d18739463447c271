"""The published studies as experiments: trial counts, settings, and references that match."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.report.reference import UNIT_ALIASES, Reference, reference_table
from sweep.core import records as R
from sweep.core.config import GROUPS
from sweep.core.summary import summarize
from tests.helpers import experiment_plan

CONF = Path(__file__).parents[2] / "conf" / "experiment"
# Trials each study plans: study A 3 engines x 4 tasks (x 8 batch sizes), study B as published,
# study C 8 engines x 4 batch sizes, study D 8 server configurations.
TRIALS = {
    "latency_bound": 12,
    "throughput_bound": 96,
    "batch_size_sweep": 6,
    "seq_len_sweep": 5,
    "request_count_sweep": 5,
    "engine_comparison": 32,
    "quickstart_engines": 8,
    "server_tuning": 8,
}
SUMMARY_COLUMNS = set(
    summarize(pd.DataFrame(columns=R.REQUESTS_SCHEMA.names), num_gpus=0, price_per_hour=1.0)
) | {R.TRIAL_STATUS, R.ERROR_KIND}


def plan_of(name):
    if not (CONF / f"{name}.yaml").is_file():
        pytest.skip(f"{name} is not in this checkout yet")
    return experiment_plan(name)


@pytest.mark.parametrize(("name", "trials"), sorted(TRIALS.items()))
def test_each_study_plans_its_trial_count(name, trials):
    plan = plan_of(name)
    assert len(plan.trials) == trials
    assert len({t.trial_id for t in plan.trials}) == trials


def test_study_a_settings():
    plan = plan_of("throughput_bound")
    assert {t.config.backend.name for t in plan.trials} == {"hf", "vllm_server", "tgi"}
    assert {t.config.dataset.task for t in plan.trials} == {
        "qa", "reasoning", "summarization", "sentiment"
    }  # fmt: skip
    assert max(t.config.workload.batch_size for t in plan.trials) == 128
    assert {t.config.hardware.price_per_hour for t in plan.trials} == {2.93}
    hf = [t.config.backend for t in plan.trials if t.config.backend.name == "hf"]
    assert {(b.dtype, b.mode) for b in hf} == {("fp16", "static_batch")}
    assert all(t.config.workload.num_requests == t.config.workload.batch_size for t in plan.trials)


def test_study_b_lengths_follow_the_grid():
    seq = plan_of("seq_len_sweep")
    assert [(t.config.dataset.input_len, t.config.workload.output_len) for t in seq.trials] == [
        (n, n) for n in (32, 64, 128, 256, 512)
    ]
    assert {t.config.backend.max_num_batched_tokens for t in seq.trials} == {4096}
    count = plan_of("request_count_sweep")
    assert [t.config.workload.batch_size for t in count.trials] == [10, 50, 100, 200, 500]
    batch = plan_of("batch_size_sweep")
    assert {(t.config.model.name, t.config.backend.name, t.config.hardware.name)
            for t in batch.trials} == {("opt_125m", "vllm", "t4")}  # fmt: skip


def test_study_c_engines_and_checkpoints():
    plan = plan_of("engine_comparison")
    engines = {
        (b.name, getattr(b, "quantization", None), d.config.model.path)
        for d in plan.deployments
        for b in [d.config.backend]
    }
    assert engines == {
        ("hf", None, "meta-llama/Llama-2-7b-hf"),
        ("hf", "bnb_8bit", "meta-llama/Llama-2-7b-hf"),
        ("hf", "bnb_4bit", "meta-llama/Llama-2-7b-hf"),
        ("exllamav2", None, "TheBloke/Llama-2-7B-GPTQ"),
        ("ctranslate2", None, "meta-llama/Llama-2-7b-hf"),
        ("llamacpp", None, "meta-llama/Llama-2-7b-hf"),
        ("vllm", None, "meta-llama/Llama-2-7b-hf"),
        ("vllm", "gptq", "TheBloke/Llama-2-7B-GPTQ"),
    }
    workload = plan.trials[0].config.workload
    assert (workload.name, workload.output_len, workload.discard_first_batch) == (
        "offline_batch", 200, True
    )  # fmt: skip
    assert plan.trials[0].config.dataset.name == "hf"


def test_quickstart_engines_runs_engines_one_at_a_time_on_cpu():
    plan = plan_of("quickstart_engines")
    assert [d.config.backend.name for d in plan.deployments] == [
        "hf", "vllm", "ctranslate2", "llamacpp"
    ]  # fmt: skip
    assert {(d.num_gpus, d.num_cpus) for d in plan.deployments} == {(0, 2)}
    assert plan.base.cluster.num_cpus == 2
    assert {t.config.dataset.name for t in plan.trials} == {"prompts"}


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_every_reference_row_names_real_columns_and_matches_planned_trials(name):
    plan = plan_of(name)
    rows = plan.base.reference or []
    if name not in ("quickstart_engines",):
        assert rows, f"{name} reproduces a study and should carry its published numbers"
    trials = pd.DataFrame([t.flat for t in plan.trials])
    for row in rows:
        for key in row:
            if key in GROUPS or "." in key:
                continue
            aliases = {key.replace(a, b) for a, b, _ in UNIT_ALIASES if a in key}
            assert key in SUMMARY_COLUMNS or aliases & SUMMARY_COLUMNS, f"{name}: unknown {key}"
    table = reference_table(trials, Reference(tuple(rows)))
    unmatched = table[table["Trials"] == "0"]
    assert unmatched.empty, f"{name}: rows match no trial:\n{unmatched}"


@pytest.mark.parametrize(
    ("name", "baseline", "deployments"),
    [
        ("engine_comparison", "engines/hf_fp32", 8),
        ("server_tuning", "vllm_tuning/c1_default", 8),
        ("quickstart_quality", "hf", 5),
    ],
)
def test_quality_studies_score_every_deployment_against_a_named_baseline(
    name, baseline, deployments
):
    """quality=on, and the baseline is a grid option of the study (the plan checks it names one)."""
    plan = plan_of(name)
    assert plan.base.quality.enabled and plan.base.quality.baseline == baseline
    assert len(plan.deployments) == deployments
    assert all(d.trials[0].config.quality.enabled for d in plan.deployments)
