"""Planner: grid expansion, stable ids, grouping, and every experiment file composing."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sweep.core.errors import ConfigError
from sweep.plan.compose import Composer
from sweep.plan.plan import build_plan
from sweep.spec import stable_hash
from tests.helpers import experiment_plan

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf/experiment").glob("*.yaml"))


def test_quickstart_grid_expands_and_groups_by_deployment():
    plan = build_plan(["+experiment=quickstart"])
    assert plan.name == "quickstart"
    assert len(plan.trials) == 20  # mode (2) x batch size (2) x 5 repeats
    assert len(plan.deployments) == 2  # the backend mode is part of what is launched
    for deployment in plan.deployments:
        assert {t.config.backend.mode for t in deployment.trials} == {
            deployment.config.backend.mode
        }
        assert {t.deployment_id for t in deployment.trials} == {deployment.deployment_id}
    datasets = {type(t.config.dataset).__name__ for t in plan.trials}
    assert datasets == {"RandomDatasetConfig"}
    assert sorted({t.config.workload.batch_size for t in plan.trials}) == [1, 8]
    assert sorted({t.repeat for t in plan.trials}) == [0, 1, 2, 3, 4]
    assert len({t.trial_id for t in plan.trials}) == 20


def test_ids_are_stable_and_change_with_values():
    first = build_plan(["+experiment=quickstart"])
    again = build_plan(["+experiment=quickstart", "output.dir=elsewhere", "cluster=auto"])
    assert [t.trial_id for t in first.trials] == [t.trial_id for t in again.trials]
    assert [d.deployment_id for d in first.deployments] == [
        d.deployment_id for d in again.deployments
    ]
    changed = build_plan(["+experiment=quickstart", "workload.output_len=17"])
    assert not {t.trial_id for t in first.trials} & {t.trial_id for t in changed.trials}
    # workload changes leave what is launched, and so the deployment ids, unchanged
    assert {d.deployment_id for d in first.deployments} == {
        d.deployment_id for d in changed.deployments
    }
    other_hw = build_plan(["+experiment=quickstart", "hardware=l4"])
    assert not {d.deployment_id for d in first.deployments} & {
        d.deployment_id for d in other_hw.deployments
    }


def test_points_sharing_a_composed_tree_keep_their_own_values_and_the_base_its_own():
    """Points of one group combination share its tree, each point's scalars set in place and
    set back (`Composer.point_config`)."""
    plan = build_plan(
        [
            "backend=sim",
            "model=tiny_llama",
            "sweep.name=shared",
            "backend.ttft_ms=7",
            "+sweep.grid={backend.ttft_ms: [1, 2], workload.concurrency: [3, 4]}",
        ]
    )
    points = [(t.config.backend.ttft_ms, t.config.workload.concurrency) for t in plan.trials]
    assert sorted(points) == [(1, 3), (1, 4), (2, 3), (2, 4)]
    assert len({t.trial_id for t in plan.trials}) == 4
    assert "ttft_ms: 7" in plan.base_yaml  # the base tree as composed, not the last point's


def test_a_list_value_of_a_point_leaves_the_shared_tree_as_it_was():
    with Composer(["backend=sim", "model=tiny_llama"]) as composer:
        tree, _ = composer.compose_point([])
        before = OmegaConf.to_yaml(tree)
        config = composer.point_config(tree, {"cluster.forward_env": ["X"], "backend.ttft_ms": 3})
        assert config.cluster.forward_env == ["X"] and config.backend.ttft_ms == 3
        assert OmegaConf.to_yaml(tree) == before
        config = composer.point_config(tree, {"backend.ttft_ms": 4})
        assert config.cluster.forward_env == ["HF_TOKEN"] and config.backend.ttft_ms == 4
        assert OmegaConf.to_yaml(tree) == before


def test_repeats_get_distinct_ids():
    plan = build_plan(["+experiment=quickstart", "sweep.repeats=5"])
    assert len(plan.trials) == 20
    assert len({t.trial_id for t in plan.trials}) == 20
    assert {t.repeat for t in plan.trials} == {0, 1, 2, 3, 4}


def test_repeats_take_turns_within_a_deployment():
    """A deployment runs every point's repeat 0, then every point's repeat 1, and so on."""
    plan = build_plan(["+experiment=quickstart", "sweep.repeats=3"])
    for deployment in plan.deployments:
        order = [(t.repeat, t.config.workload.batch_size) for t in deployment.trials]
        assert order == [(r, b) for r in range(3) for b in (1, 8)]


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_flat_config_has_dotted_columns():
    trial = build_plan(["+experiment=quickstart"]).trials[0]
    assert trial.flat["backend.name"] == "hf"
    assert trial.flat["workload.batch_size"] in (1, 4)
    assert "sweep.grid" not in trial.flat and "output.dir" not in trial.flat


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_plans(experiment):
    plan = experiment_plan(experiment)
    assert plan.trials
    first_lines = (Path(__file__).parents[2] / f"conf/experiment/{experiment}.yaml").read_text()
    lines = first_lines.splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# python -m sweep +experiment=")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["backend=nope"], "backend=nope is not a known option; choose one of: "),
        (["+experiment=nope"], "experiment=nope is not a known option"),
        (["backend.foo=1"], "unknown config key 'backend.foo'; valid keys: name"),
        (["workload.batch_size=0"], "workload.batch_size must be > 0, got 0"),
        (["workload.num_requests=-3"], "workload.num_requests must be > 0, got -3"),
        (["dataset.input_len=0"], "dataset.input_len must be > 0"),
        (["sweep.repeats=0"], "sweep.repeats must be > 0"),
        (
            ["+sweep.grid.workload.nothing=[1,2]"],
            "sweep.grid axis 'workload.nothing' names neither",
        ),
        (["+sweep.grid.bogus=[1]"], "sweep.grid axis 'bogus' names neither"),
        (["+sweep.grid.backend=[hf,zzz]"], "backend=zzz is not a known option"),
        (["workload=nope"], "workload=nope is not a known option; choose one of: "),
    ],
)
def test_bad_input_is_one_clear_line(overrides, expected):
    with pytest.raises(ConfigError) as info:
        build_plan(["+experiment=quickstart", *overrides])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_a_field_added_later_moves_no_id_at_its_default(monkeypatch):
    from sweep.core import config as config_module
    from sweep.spec import hash_tree

    tree = {"workload": {"num_requests": 8, "later_field": None}, "sweep": {"name": "x"}}
    before = stable_hash(hash_tree(tree))
    monkeypatch.setitem(config_module.ADDED_LATER, "workload.later_field", None)
    assert stable_hash(hash_tree(tree)) == stable_hash({"workload": {"num_requests": 8}})
    assert stable_hash(hash_tree(tree)) != before
    tree["workload"]["later_field"] = 30.0
    assert "later_field" in hash_tree(tree)["workload"]
