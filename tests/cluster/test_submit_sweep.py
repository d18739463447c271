"""scripts/submit_sweep.sh and the driver under `ray job submit`: results kept, secrets private.

The `ray` command on PATH is a stand-in that records what the script asked of it (a real job
server is exercised by the multi-host harness); everything the script decides is checked here.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import ray

from sweep.core.errors import ConfigError
from sweep.driver.job import JOB_ENV_VAR, check_output_dir
from tests.helpers import sweep_in_process

REPO = Path(__file__).resolve().parents[2]
FAKE_RAY = """#!/usr/bin/env python3
import json, shlex, sys
args = sys.argv[1:]
env_file = args[args.index("--runtime-env") + 1]
record = {"argv": args, "runtime_env": json.load(open(env_file)), "env_file": env_file}
json.dump(record, open(sys.argv[0] + ".json", "w"))
"""


@pytest.fixture
def fake_ray(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text(FAKE_RAY)
    ray.chmod(0o755)
    return ray


def submit(fake_ray, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY")}
    environ.update(env, PATH=f"{fake_ray.parent}{os.pathsep}{environ['PATH']}")
    done = subprocess.run(
        [str(REPO / "scripts" / "submit_sweep.sh"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(Path(f"{fake_ray}.json").read_text()), done


def test_secrets_travel_in_a_private_file_never_on_the_command_line(fake_ray):
    record, done = submit(
        fake_ray, "+experiment=sim_cluster", HF_TOKEN="hf_secret123", FORWARD_ENV="MY_KEY",
        MY_KEY="k-456",
    )  # fmt: skip
    assert record["runtime_env"]["env_vars"] == {"HF_TOKEN": "hf_secret123", "MY_KEY": "k-456"}
    text = " ".join(record["argv"]) + done.stdout + done.stderr
    assert "hf_secret123" not in text and "k-456" not in text
    assert not Path(record["env_file"]).exists()  # removed once submitted
    assert "forwarding to the job: HF_TOKEN, MY_KEY" in done.stderr


def test_results_go_to_one_absolute_folder_on_the_head(fake_ray):
    record, _ = submit(fake_ray, "+experiment=sim_cluster")
    entry = record["argv"][record["argv"].index("--") + 1 :]
    assert entry[:3] == ["python", "-m", "sweep"]
    assert "cluster=auto" in entry
    assert "output.dir='~/llm-sweep-results'" in entry
    assert set(record["runtime_env"]["excludes"]) >= {".venv", "results", ".git"}
    assert record["runtime_env"]["env_vars"] == {}


def test_a_relative_results_folder_is_refused_inside_a_job(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    check_output_dir("results")  # a plain run: relative to where the user stands
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    with pytest.raises(ConfigError, match="output.dir='results' is relative"):
        check_output_dir("results")
    for kept in ("~/llm-sweep-results", "/data/results", "s3://bucket/results"):
        check_output_dir(kept)


def test_the_sweep_refuses_it_in_one_line_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(JOB_ENV_VAR, "{}")
    done = sweep_in_process("+experiment=quickstart", "output.dir=results")
    assert done.returncode == 2
    assert done.stderr.startswith("error: output.dir='results' is relative")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not ray.is_initialized() and list(tmp_path.iterdir()) == []
