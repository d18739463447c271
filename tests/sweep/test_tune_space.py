"""search=tune's space and objective: parsed into Optuna's distributions, each fault one line.

A bad space is refused by `python -m sweep` (run here by its main function) before anything
runs: exit code 2, one line on stderr, no results folder. The pruned capacity search
(`search.stop_below`) is checked against a step server whose capacity is known.
"""

import optuna
import pytest

from sweep.core.config import SearchConfig
from sweep.core.errors import ConfigError
from sweep.core.tune_config import ParamSpec, parse_space
from sweep.plan.plan import build_plan
from sweep.spec import Probe
from sweep.tune.space import distribution, suggest
from sweep.worker.search import capacity, next_loads
from tests.helpers import sweep_in_process

SPACE = {
    "backend": {
        "max_num_seqs": {"low": 2, "high": 32, "int": True, "log": True},
        "chunked_prefill": {"choices": [True, False]},
        "max_num_batched_tokens": {
            "low": 256, "high": 16384, "int": True, "log": True,
            "when": "backend.chunked_prefill == true",
        },
    },
    "workload.output_len": {"low": 4, "high": 16, "step": 4, "int": True},
    "backend.jitter": {"low": 0.0, "high": 0.5},
}  # fmt: skip


def test_the_space_becomes_optuna_distributions_in_the_order_written():
    specs = parse_space(SPACE)
    assert [s.name for s in specs] == [
        "backend.max_num_seqs",
        "backend.chunked_prefill",
        "backend.max_num_batched_tokens",
        "workload.output_len",
        "backend.jitter",
    ]
    dists = {s.name: distribution(s) for s in specs}
    assert dists["backend.max_num_seqs"] == optuna.distributions.IntDistribution(2, 32, log=True)
    assert dists["backend.chunked_prefill"] == optuna.distributions.CategoricalDistribution(
        [True, False]
    )
    assert dists["workload.output_len"] == optuna.distributions.IntDistribution(4, 16, step=4)
    assert dists["backend.jitter"] == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert specs[2].when == ("backend.chunked_prefill", "==", True)


def test_a_conditional_field_is_suggested_only_when_its_condition_holds():
    specs = parse_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = {True: 0, False: 0}
    for _ in range(30):
        params = suggest(study.ask(), specs)
        chunked = params["backend.chunked_prefill"]
        seen[chunked] += 1
        assert ("backend.max_num_batched_tokens" in params) == chunked
        assert 256 <= params.get("backend.max_num_batched_tokens", 256) <= 16384
        assert params["workload.output_len"] in (4, 8, 12, 16)
    assert seen[True] and seen[False]


def test_a_condition_reads_not_equal_too():
    spec = ParamSpec("b", choices=(1, 2), when=("a", "!=", "x"))
    assert spec.active({"a": "y"}) and not spec.active({"a": "x"}) and not spec.active({})


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({}, "needs a search space"),
        ({"backend.max_num_seqs": {"low": 8, "high": 8}}, "empty range: low=8 is not below high=8"),
        ({"backend.max_num_seqs": {"low": 9, "high": 2}}, "empty range"),
        ({"backend.jitter": {"low": 0.0, "high": 1.0, "log": True}}, "log range through 0"),
        ({"backend.jitter": {"low": -1.0, "high": 1.0, "log": True}}, "log range through 0"),
        ({"backend.max_num_seqs": {"choices": []}}, "choices is empty"),
        ({"backend.max_num_seqs": {"low": 1}}, "needs choices, or both low and high"),
        ({"backend.max_num_seqs": {"low": 1, "high": 4, "spread": 2}}, "unknown keys ['spread']"),
        ({"backend.max_num_seqs": {"choices": [1], "low": 1}}, "not both"),
        ({"backend.max_num_seqs": {"low": 1.5, "high": 4, "int": True}}, "whole bounds"),
        ({"backend.max_num_seqs": {"low": 1, "high": 4, "step": 1, "log": True}}, "cannot go"),
        (
            {"backend.max_num_seqs": {"low": 1, "high": 4, "when": "backend.x == 1"}},
            "listed before",
        ),
        ({"backend.max_num_seqs": {"low": 1, "high": 4, "when": "nonsense"}}, "FIELD == VALUE"),
        ({"backend.max_num_seqs": 4}, "must be a mapping"),
    ],
)
def test_each_fault_of_a_space_is_one_line(space, words):
    with pytest.raises(ConfigError) as caught:
        parse_space(space)
    message = str(caught.value)
    assert words in message and "\n" not in message


BASE = ["+experiment=tune_sim", "sweep.report=false", "tracking=none"]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("+search.tune.space.backend.max_num_seqz={low:2,high:8}", "names no field of the config"),
        ("search.tune.space.backend.max_num_seqs={low:8,high:2}", "empty range"),
        ("+search.tune.space.backend.jitter={low:0,high:1,log:true}", "log range through 0"),
        ("+search.tune.space.model={choices:[tiny_llama,opt_125m]}", "names a config group"),
        ("+search.tune.space.workload.request_rate={low:1,high:8}", "the capacity search raises"),
        ("search.tune.objective=speed", "neither capacity"),
        ("search.tune.objective=ttft_ms_p99", "set search.tune.direction"),
        ("+sweep.grid.backend.max_num_seqs=[2,4]", "empty sweep.grid"),
        ("sweep.repeats=2", "measures each configuration once"),
    ],
)
def test_a_bad_tuning_sweep_is_one_line_before_anything_runs(tmp_path, override, words):
    done = sweep_in_process(*BASE, f"output.dir={tmp_path}", override)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "tune_sim").exists()  # nothing ran, nothing was written


def test_a_tuned_configuration_plans_as_the_capacity_search_of_that_point():
    tuned = build_plan([*BASE], point={"backend.max_num_seqs": 8})
    searched = build_plan([*BASE, "search=capacity", "+sweep.grid.backend.max_num_seqs=[8]"])
    (seed,) = tuned.trials
    (same,) = searched.trials
    assert seed.search is not None and seed.search.mode == "capacity"
    assert (seed.trial_id, seed.deployment_id) == (same.trial_id, same.deployment_id)
    assert seed.config.backend.max_num_seqs == 8


def step(truth):
    return lambda load: Probe(load, load <= truth)


def run(settings, judge):
    history = []
    while loads := next_loads(settings, False, history):
        history += [judge(load) for load in loads]
    return history, capacity(settings, history)


def test_a_search_below_the_best_so_far_stops_at_its_first_failure_there():
    settings = SearchConfig(mode="capacity", start=40.0, stop_below=40.0, tolerance=0.05)
    history, found = run(settings, step(25.0))
    assert [p.load for p in history] == [40.0]  # failed at the bound: proven worse
    assert found.pruned and not found.converged and found.failed_load == 40.0
    assert found.reason.startswith("pruned: fails at 40 req/s")


def test_a_search_above_the_best_so_far_runs_to_its_answer():
    settings = SearchConfig(mode="capacity", start=40.0, stop_below=40.0, tolerance=0.05)
    history, found = run(settings, step(57.0))
    assert not found.pruned and found.converged
    assert 57.0 * 0.95 <= found.load <= 57.0
    unbounded = SearchConfig(mode="capacity", start=40.0, tolerance=0.05)
    assert run(unbounded, step(57.0))[1].load == found.load  # the bound changed nothing here


def test_the_dry_run_shows_the_budget_objective_and_space(tmp_path):
    done = sweep_in_process(*BASE, f"output.dir={tmp_path}", "sweep.dry_run=true")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "an optimiser chooses 12 configurations (maximize capacity)" in out
    assert "backend.max_num_seqs: 2 to 32 (int) (log)" in out
    assert "backend.chunked_prefill: one of [True, False]" in out
    assert (
        "backend.max_num_batched_tokens: 256 to 16384 (int) (log) "
        "when backend.chunked_prefill == True"
    ) in out
