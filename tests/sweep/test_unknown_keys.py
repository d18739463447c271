"""A key that no schema declares is one clear line naming it and the closest valid names.

Hydra's `+` adds a key even to a structured config, and the conversion to dataclasses then
dropped it silently: `+workload.output_lenn=64` ran the whole sweep with the default length.
"""

import pytest

from sweep.core.config import GROUPS
from sweep.core.errors import ConfigError
from sweep.plan.plan import build_plan

BASE = ["+experiment=quickstart"]


@pytest.mark.parametrize("group", [*GROUPS, "slo", "sweep"])
def test_an_added_unknown_key_in_any_group_is_refused(group):
    with pytest.raises(ConfigError) as info:
        build_plan([*BASE, f"+{group}.no_such_setting=1"])
    message = str(info.value)
    assert "\n" not in message
    assert f"unknown config key '{group}.no_such_setting'" in message
    assert "valid keys:" in message


def test_a_typo_names_the_key_it_probably_meant():
    with pytest.raises(ConfigError) as info:
        build_plan([*BASE, "+workload.output_lenn=64"])
    assert "'workload.output_lenn'; did you mean output_len?" in str(info.value)


def test_a_typo_in_a_backend_setting_is_refused_for_every_backend_option():
    with pytest.raises(ConfigError, match="did you mean max_num_seqs"):
        build_plan([*BASE, "backend=vllm_server", "+backend.max_num_seq=8"])


def test_free_form_maps_still_take_new_keys():
    plan = build_plan(["+experiment=server_tuning", "+backend.extra_args.enforce-eager=true"])
    assert {t.config.backend.extra_args["enforce-eager"] for t in plan.trials} == {True}
    plan = build_plan([*BASE, "+sweep.grid.workload.output_len=[8,16]"])
    assert {t.config.workload.output_len for t in plan.trials} == {8, 16}


def test_a_key_of_one_grid_option_is_kept_for_it_and_left_out_of_the_others():
    # quickstart_serving's grid runs hf and vllm_server: extra_args is vllm_server's alone.
    plan = build_plan(["+experiment=quickstart_serving", "+backend.extra_args.enforce-eager=true"])
    by_name = {t.config.backend.name: t.config.backend for t in plan.trials}
    assert by_name["vllm_server"].extra_args == {"enforce-eager": True}
    assert not hasattr(by_name["hf"], "extra_args")


def test_a_key_no_grid_option_knows_is_refused():
    with pytest.raises(ConfigError, match="unknown config key 'backend.max_num_seq'"):
        build_plan(["+experiment=quickstart_serving", "+backend.max_num_seq=8"])


@pytest.mark.parametrize("axis", ["backend.ttft_ms", "workload.batch_size", "backend"])
def test_a_grid_axis_without_plus_names_the_same_override_with_plus(axis):
    with pytest.raises(ConfigError) as info:
        build_plan([*BASE, f"sweep.grid.{axis}=[1,2]"])
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(f"write '+sweep.grid.{axis}=[1,2]'")
    assert "NAME=VALUE" not in message


def test_the_suggested_grid_override_runs():
    with pytest.raises(ConfigError) as info:
        build_plan([*BASE, "sweep.grid.workload.batch_size=[1,2]"])
    suggested = str(info.value).rsplit("write ", 1)[1].strip("'")
    assert build_plan([*BASE, suggested]).axes["workload.batch_size"] == [1, 2]


def test_a_key_under_a_missing_parent_names_the_same_override_with_plus():
    with pytest.raises(ConfigError) as info:
        build_plan([*BASE, "backend.extra_args.x=1"])  # hf has no extra_args
    message = str(info.value)
    assert "\n" not in message
    assert "Key 'extra_args' not in 'HFBackendConfig'" in message
    assert message.endswith("add a new key with '+backend.extra_args.x=1'")
