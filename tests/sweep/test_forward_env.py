"""Which secrets the driver hands to a cluster's workers (`cluster.forward_env`)."""

import json

import pytest

from sweep.core.config import ClusterConfig
from sweep.core.errors import ConfigError
from sweep.driver.job import JOB_ENV_VAR, forwarded_env


def test_set_names_are_forwarded_and_unset_ones_named(monkeypatch):
    monkeypatch.delenv(JOB_ENV_VAR, raising=False)
    monkeypatch.setenv("FWD_A", "a-value")
    monkeypatch.delenv("FWD_UNSET", raising=False)
    assert forwarded_env(["FWD_A", "FWD_UNSET"]) == ({"FWD_A": "a-value"}, ["FWD_UNSET"])


def test_under_a_job_what_the_job_already_carries_is_left_to_it(monkeypatch):
    # Ray refuses a driver's runtime env that sets a variable of the job's own again.
    monkeypatch.setenv("FWD_A", "a-value")
    monkeypatch.setenv("FWD_B", "b-value")
    monkeypatch.setenv(JOB_ENV_VAR, json.dumps({"runtime_env": {"env_vars": {"FWD_A": "x"}}}))
    assert forwarded_env(["FWD_A", "FWD_B"]) == ({"FWD_B": "b-value"}, [])


def test_the_default_forwards_hf_token_and_a_bad_name_is_one_line():
    assert ClusterConfig().forward_env == ["HF_TOKEN"]
    with pytest.raises(ConfigError, match=r"^cluster.forward_env: 'HF TOKEN' is not an env"):
        ClusterConfig(forward_env=["HF TOKEN"])
