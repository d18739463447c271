"""Node types read without docker: `~` in the monitor's flag, and `ray up`'s bootstrap file.

A real process stands in for the autoscaler's monitor: its command line is what Ray gives the
monitor (`.../autoscaler/_private/monitor.py --gcs-address=... --autoscaling-config=~/...`), and
its GCS address is one no other cluster of this machine has. HOME is a temporary folder.
"""

import subprocess
import sys
import uuid

import pytest
import yaml

from sweep.driver import node_types
from sweep.driver.node_types import bootstrap_config, monitor_config_path, node_types_of

CONFIG = {
    "max_workers": 2,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 1}},
        "l4_x1": {"resources": {"CPU": 8, "GPU": 1, "accelerator_type:L4": 1}, "max_workers": 2},
    },
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # restored by monkeypatch
    return tmp_path


@pytest.fixture
def monitor():
    gcs = f"127.0.0.1:{uuid.uuid4().int % 50000 + 10000}-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)",
         "/x/ray/autoscaler/_private/monitor.py", f"--gcs-address={gcs}",
         "--autoscaling-config=~/autoscaling.yaml"],
    )  # fmt: skip
    try:
        yield gcs
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_monitors_tilde_path_is_read_against_home(home, monitor):
    (home / "autoscaling.yaml").write_text(yaml.safe_dump(CONFIG))
    path = monitor_config_path(monitor)
    assert path == home / "autoscaling.yaml"
    types = node_types_of(path)
    assert [(t.name, t.resources["GPU"], t.max_workers) for t in types] == [("l4_x1", 1.0, 2)]


def test_without_gcs_node_types_the_bootstrap_file_is_read(home, monkeypatch):
    # No monitor of this (made-up) cluster on this machine, and the GCS tells nothing (not
    # connected): `ray up`'s copy on the head is what is left.
    monkeypatch.setattr(node_types, "gcs_address", lambda: f"127.0.0.1:1-{uuid.uuid4().hex}")
    assert bootstrap_config() is None
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(CONFIG))
    assert bootstrap_config() == home / "ray_bootstrap_config.yaml"
    types = node_types.launchable_node_types()
    assert [(t.name, t.resources["accelerator_type:L4"]) for t in types] == [("l4_x1", 1.0)]
