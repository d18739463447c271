"""What a sweep does about nodes that never come: refused at once, or given up after a wait."""

from collections import Counter
from types import SimpleNamespace

import pytest
import yaml

from sweep.core.config import ClusterConfig
from sweep.core.errors import ConfigError
from sweep.driver.driver import SweepOutcome
from sweep.driver.node_types import autoscaler_last_word, node_types_of
from sweep.driver.placement import unplaceable_reason

# What placement reads of a deployment: its resources (the rest of Deployment is not needed).
LOCAL = SimpleNamespace(cluster=SimpleNamespace(address=None))  # so no set-up pieces asked
L4_DEPLOYMENT = SimpleNamespace(num_gpus=1, num_cpus=0.5, accelerator_type="L4", config=LOCAL)
HEAD = {"Alive": True, "Resources": {"CPU": 1.0}}


def write_config(path, max_workers):
    config = {
        "max_workers": max_workers,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "max_workers": 0},
            "gpu_l4": {
                "resources": {"CPU": 4, "GPU": 1, "accelerator_type:L4": 1},
                "max_workers": 4,
            },
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_cluster_that_may_launch_no_worker_makes_a_gpu_deployment_unplaceable(tmp_path):
    types = node_types_of(write_config(tmp_path / "c.yaml", max_workers=0))
    assert types == []
    reason = unplaceable_reason(L4_DEPLOYMENT, [HEAD], types)
    assert reason is not None and "may launch no worker node" in reason


def test_a_cluster_that_may_launch_one_waits_instead(tmp_path):
    types = node_types_of(write_config(tmp_path / "c.yaml", max_workers=2))
    assert [t.name for t in types] == ["gpu_l4"]
    assert unplaceable_reason(L4_DEPLOYMENT, [HEAD], types) is None


@pytest.mark.parametrize("value", [0, -5])
def test_node_wait_must_be_positive(value):
    with pytest.raises(ConfigError, match=r"cluster.node_wait_s must be > 0"):
        ClusterConfig(node_wait_s=value)


def test_without_a_report_the_autoscaler_says_so():
    assert autoscaler_last_word(["gpu_l4"]) == "no report on gpu_l4"


def test_the_last_line_counts_failures_by_kind():
    outcome = SweepOutcome(ok=["a"], failed=["b", "c", "d"],
                           failed_kinds=Counter({"no_node": 2, "timeout": 1}))  # fmt: skip
    assert outcome.line() == "finished: 1 ok, 3 failed (no_node: 2, timeout: 1)"
    assert SweepOutcome(ok=["a"]).line() == "finished: 1 ok, 0 failed"
