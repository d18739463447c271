"""Optional set-up pieces: what a GPU deployment needs on its node, refused before the night."""

from pathlib import Path

import pytest

from sweep.core.errors import BackendError
from sweep.core.pieces import PIECE_PREFIX, PIECES_ENV, missing_here
from sweep.driver.node_types import node_types_of
from sweep.driver.placement import pieces_of, resources_of, unplaceable_reason
from sweep.image import node_image
from sweep.plan.plan import build_plan
from sweep.worker.trial import require_pieces

REPO = Path(__file__).parents[2]
CLUSTER = "cluster.address=127.0.0.1:6379"  # joined, not dialled: planning only
HEAD = {"Alive": True, "Resources": {"CPU": 4.0}}


def deployment(*overrides):
    plan = build_plan(["hardware=l4", "workload.num_requests=2", *overrides])
    assert len(plan.deployments) == 1
    return plan.deployments[0]


@pytest.mark.parametrize(
    ("overrides", "pieces"),
    [
        (
            ["backend=llamacpp", "backend.num_gpus=1", "backend.n_gpu_layers=-1", CLUSTER],
            ("llama-cpp-cuda",),
        ),
        (["backend=llamacpp", "backend.num_gpus=1", "backend.n_gpu_layers=-1"], ()),  # local
        (["backend=llamacpp", CLUSTER], ()),  # on the CPU: the core install has it
        (["backend=exllamav2", "backend.num_gpus=1", CLUSTER], ("flash-attn",)),
        (["backend=exllamav2", "backend.num_gpus=1", "backend.paged=false", CLUSTER], ()),
        (
            [
                "backend=vllm_server",
                "backend.num_gpus=1",
                CLUSTER,
                "backend=vllm_tuning/c5_seqs256_fp8_suffix16",
            ],
            ("arctic-inference",),
        ),
        (["backend=vllm_server", "backend.num_gpus=1", CLUSTER], ()),
        (["backend=tgi", "backend.num_gpus=1", CLUSTER], ("docker",)),
        (["backend=tgi", "backend.num_gpus=1", "backend.url=http://127.0.0.1:9", CLUSTER], ()),
    ],
)
def test_each_backend_names_the_pieces_its_config_needs(overrides, pieces):
    found = deployment(*overrides)
    assert pieces_of(found) == pieces
    asked = {k for k in resources_of(found) if k.startswith(PIECE_PREFIX)}
    assert asked == {PIECE_PREFIX + p for p in pieces}


@pytest.mark.parametrize("yaml_name", ["l4-aws.yaml", "l4-gcp.yaml", "kuberay-l4.yaml"])
def test_shipped_node_types_declare_what_their_image_builds(yaml_name):
    """Every piece the node image builds that a deployment can ask for, and no other.
    exllamav2's extension is built in the image so that it is not compiled at run time, where the
    image has no nvcc; no deployment asks for it."""
    path = REPO / "scripts" / "cluster" / yaml_name
    image = node_image.read_file(REPO / "scripts" / "cluster" / "Dockerfile")
    built = {step.piece for step in node_image.steps(image) if step.piece}
    assert built == {"flash-attn", "arctic-inference", "llama-cpp-cuda", "exllamav2-ext"}
    installed = built - {"exllamav2-ext"}
    for node_type in node_types_of(path):
        if node_type.resources.get("GPU"):
            declared = {k[len(PIECE_PREFIX):] for k in node_type.resources
                        if k.startswith(PIECE_PREFIX)}  # fmt: skip
            assert declared == installed, node_type.name


def test_a_piece_no_node_type_has_is_refused_in_one_line_naming_it():
    types = node_types_of(REPO / "scripts" / "cluster" / "l4-gcp.yaml")
    cpp = deployment("backend=llamacpp", "backend.num_gpus=1", "backend.n_gpu_layers=-1", CLUSTER)
    assert unplaceable_reason(cpp, [HEAD], types) is None  # the L4 types install it
    tgi = deployment("backend=tgi", "backend.num_gpus=1", CLUSTER)
    reason = unplaceable_reason(tgi, [HEAD], types)
    assert reason == (
        "needs the set-up piece docker (tgi), which no node, alive or launchable, has "
        "(l4_x1: flash-attn, arctic-inference, llama-cpp-cuda; l4_x4: flash-attn, "
        "arctic-inference, llama-cpp-cuda); declare 'piece:docker' in the resources of a node "
        "type that installs it"
    )
    assert "\n" not in reason


def test_a_node_whose_piece_failed_to_build_fails_the_deployment_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv(PIECES_ENV, str(tmp_path / "none-here"))
    assert missing_here(("flash-attn",)) == []  # not set up by piece.sh: trusted
    folder = tmp_path / "pieces"
    folder.mkdir()
    (folder / "flash-attn").write_text("2026-11-24T07:00:00Z\n")
    monkeypatch.setenv(PIECES_ENV, str(folder))
    assert missing_here(("flash-attn", "arctic-inference")) == ["arctic-inference"]
    require_pieces(("flash-attn",))
    with pytest.raises(BackendError, match=r"^the set-up piece arctic-inference did not install"):
        require_pieces(("arctic-inference",))


def test_piece_sh_leaves_the_marker_the_worker_reads(tmp_path):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), PIECES_ENV: str(tmp_path / "p")}
    script = REPO / "scripts" / "cluster" / "piece.sh"
    ok = subprocess.run(["bash", script, "good", "true"], env=env, capture_output=True, text=True)
    bad = subprocess.run(["bash", script, "bad", "false"], env=env, capture_output=True, text=True)
    assert ok.returncode == bad.returncode == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["good"]
