"""The node image's Dockerfile: CUDA 13 as torch's, every GPU's architecture, every piece, its tag.

The Dockerfile is read with `sweep.image.node_image` (its parser is tested on a small Dockerfile of
its own first). One test asks the package index which CUDA the pinned torch needs (a resolver
run of torch alone, its metadata only: a few seconds and MB); the rest reads files.
"""

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from sweep.core.pieces import PIECES_ENV
from sweep.image import node_image as ni
from sweep.image import node_setup as ns

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "cluster"
DOCKERFILE = CLUSTER / "Dockerfile"
BUILD = CLUSTER / "build_image.sh"
IMAGE = ni.read_file(DOCKERFILE)
BUILDER, RUNTIME = IMAGE.stage("builder"), IMAGE.stage("runtime")
SMALL = r"""# syntax=docker/dockerfile:1
ARG ARCHS="8.0 9.0"
FROM nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04 AS builder
ARG ARCHS
ARG VERSION=1.2
ENV LIST=${ARCHS} \
    VENV=/v
ENV PATH=${VENV}/bin:${PATH}
RUN apt-get update \
    # a comment line inside the continuation
    && pip install --only-binary=:all: -c /c.txt "a==${VERSION}" b[x] \
    && /opt/other/bin/pip install not-the-venv ; python3 -m pip wheel -w /w "c==${NOPE:-3}"
RUN bash /src/scripts/cluster/piece.sh p1 env K="v 1" pip install -e /src[y] \
    && bash /src/scripts/cluster/piece.sh p2 python -c "import x" || true
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS runtime
COPY --from=builder /v /v
"""


def test_the_parser_reads_values_chains_pieces_and_the_venvs_pip_only():
    small = ni.read(SMALL)
    builder = small.stage("builder")
    assert [s.name for s in small.stages] == ["builder", "runtime"]
    assert builder.env == {"LIST": "8.0 9.0", "VENV": "/v", "PATH": "/v/bin:${PATH}"}
    steps = ni.steps(small)
    assert [(s.line, s.piece, s.verb) for s in steps] == [
        (9, None, "install"), (9, None, "wheel"), (13, "p1", "install"), (13, "p2", None)
    ]  # fmt: skip
    assert steps[0].requirements == ("a==1.2", "b[x]")
    assert steps[0].option("-c", "--constraint") == ["/c.txt"]
    assert steps[1].requirements == ("c==3",) and steps[1].option("-w") == ["/w"]
    assert steps[2].env == (("K", "v 1"),) and steps[2].requirements == ("/src[y]",)
    assert steps[3].argv == ("python", "-c", "import x")
    assert small.stage("runtime").copies == [("--from=builder", "/v", "/v")]


def test_both_stages_are_the_same_cuda_13_on_ubuntu_devel_then_runtime():
    assert BUILDER.base == "nvidia/cuda:13.0.2-cudnn-devel-ubuntu24.04"
    assert RUNTIME.base == BUILDER.base.replace("-devel-", "-runtime-")
    assert ni.cuda_version(BUILDER.base) == "13.0.2"
    assert ni.platforms(RUNTIME.base)[:2] == ["manylinux_2_39_x86_64", "manylinux_2_38_x86_64"]


def test_the_base_images_cuda_major_is_the_pinned_torchs():
    """Real: which CUDA the torch of constraints.txt needs, read from its metadata on the index."""
    constraints = str(CLUSTER / "constraints.txt")
    code, output, report = ns.resolve(["torch"], IMAGE, ("--no-deps", "-c", constraints))
    assert code == 0, ns.first_error(output)
    version, major = ns.cuda_major(report)
    assert version == "2.13.0" and major == 13
    assert {int(ni.cuda_version(s.base).split(".")[0]) for s in IMAGE.stages} == {major}
    if importlib.util.find_spec("sweep.cuda_compat"):  # the table of torch's CUDA, where it is
        from sweep.cuda_compat import TORCH_CUDA

        assert TORCH_CUDA[version] == major


def hardware() -> dict[str, str]:
    """accelerator_type of each hardware config that has one."""
    found = {}
    for path in sorted((REPO / "conf" / "hardware").glob("*.yaml")):
        accelerator = yaml.safe_load(path.read_text()).get("accelerator_type")
        if accelerator:
            found[path.stem] = accelerator
    return found


def test_every_gpu_of_the_hardware_configs_is_compiled_for():
    configs = hardware()
    assert set(configs) >= {"t4", "l4", "a100_80g", "h100", "h200"}
    unknown = set(configs.values()) - set(ni.COMPUTE_CAPABILITY)
    assert not unknown, f"compute capability of {unknown}? add it to COMPUTE_CAPABILITY"
    wanted = {ni.COMPUTE_CAPABILITY[a] for a in configs.values()}
    assert wanted == {"7.5", "8.0", "8.9", "9.0"}
    for stage in IMAGE.stages:  # torch's JIT at run time compiles for the same list
        assert ni.architectures(stage.env["TORCH_CUDA_ARCH_LIST"]) >= wanted, stage.name
    assert ni.architectures(BUILDER.values["CUDA_ARCHITECTURES"]) >= wanted
    llama = next(s for s in ni.steps(IMAGE) if s.piece == "llama-cpp-cuda")
    assert (
        f"-DCMAKE_CUDA_ARCHITECTURES={BUILDER.values['CUDA_ARCHITECTURES']}"
        in dict(llama.env)["CMAKE_ARGS"]
    )
    flash = ni.architectures(BUILDER.env["FLASH_ATTN_CUDA_ARCHS"])  # sm80 code runs on 8.x
    for capability in wanted - {"7.5"}:  # flash-attn 2 has no T4 code
        assert any(f[0] == capability[0] and f <= capability for f in flash), capability


def advertised_pieces() -> dict[str, set[str]]:
    """The `piece:NAME` resources each cluster YAML or manifest gives its node types."""

    def walk(node, found):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "resources":
                    text = value if isinstance(value, str) else " ".join(map(str, value))
                    found |= set(re.findall(r"piece:([\w.-]+)", text))
                walk(value, found)
        elif isinstance(node, list):
            for item in node:
                walk(item, found)
        return found

    return {
        p.name: set().union(*(walk(d, set()) for d in yaml.safe_load_all(p.read_text())))
        for p in sorted(CLUSTER.glob("*.yaml"))
    }


def test_every_piece_a_node_type_advertises_is_built_by_the_image():
    built = {s.piece for s in ni.steps(IMAGE) if s.piece}
    assert built >= {"flash-attn", "arctic-inference", "llama-cpp-cuda"}
    advertised = advertised_pieces()
    assert set().union(*advertised.values()), "no YAML advertises a piece: the test reads none"
    for name, pieces in advertised.items():
        assert pieces <= built, f"{name} advertises {sorted(pieces - built)}, never built"


def test_the_piece_markers_reach_the_runtime_stage_where_the_sweep_reads_them():
    folder = BUILDER.env[PIECES_ENV]
    assert RUNTIME.env[PIECES_ENV] == folder == "/opt/llm-sweep/pieces"
    copied = [c[-2] for c in RUNTIME.copies if "--from=builder" in c]
    assert any(folder.startswith(source + "/") for source in copied), copied
    assert ("scripts/cluster/constraints.txt", "scripts/cluster/piece.sh") == next(
        c[:2] for c in BUILDER.copies if "scripts/cluster/piece.sh" in c
    )


def test_core_steps_take_wheels_and_the_pinned_torch():
    core = [s for s in ni.steps(IMAGE) if s.verb == "install" and not s.piece]
    resolving = [s for s in core if "--no-deps" not in s.args]
    assert resolving and all("--only-binary=:all:" in s.args for s in resolving)
    torch_step = next(s for s in core if "torch" in s.requirements)
    constraints = torch_step.option("-c", "--constraint")
    assert constraints == ["/src/scripts/cluster/constraints.txt"]
    assert "torch==2.13.0" in (CLUSTER / "constraints.txt").read_text().split()
    assert core.index(torch_step) < min(i for i, s in enumerate(ni.steps(IMAGE)) if s.piece), (
        "the source builds compile against the installed torch: it comes first"
    )
    assert BUILDER.values["MAX_JOBS"] == BUILDER.env["MAX_JOBS"] == "4"


def test_ctranslate2s_cuda_12_cublas_is_installed_and_on_the_runtime_library_path():
    wheel_step = next(s for s in ni.steps(IMAGE) if any("[" in r for r in s.requirements))
    assert any(r.startswith("nvidia-cublas-cu12==12.") for r in wheel_step.requirements)
    assert "ctranslate2" in wheel_step.requirements[0]  # the project's [ctranslate2] extra
    python = ".".join(BUILDER.values["PYTHON_VERSION"].split(".")[:2])
    assert python == "3.11"
    cublas = f"/opt/llm-sweep/venv/lib/python{python}/site-packages/nvidia/cublas/lib"
    assert RUNTIME.env["LD_LIBRARY_PATH"].split(":")[0] == cublas


def test_the_runtime_stage_is_what_ray_up_and_kuberay_expect():
    runs = " ".join(run for _, run in RUNTIME.runs)
    useradd = next(c for _, run in RUNTIME.runs for c in ni.commands(run) if c[0] == "useradd")
    assert useradd[-1] == "ray" and useradd[useradd.index("--uid") + 1] == "1000"
    for package in ("rsync", "openssh-client", "sudo", "wget", "gcc"):
        assert re.search(rf"apt-get install[^&]*\b{package}\b", runs), package
    assert RUNTIME.env["PATH"].startswith("/opt/llm-sweep/venv/bin:")
    assert "ray --version" in runs
    user = [
        rest for _, keyword, rest in ni.instructions(DOCKERFILE.read_text()) if keyword == "USER"
    ]
    assert user == ["ray"]


def test_the_build_script_prints_the_tag_of_version_and_pins():
    done = subprocess.run(["bash", str(BUILD), "registry.example/team/", "--print-tag"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    inputs = (
        CLUSTER / "constraints.txt",
        DOCKERFILE,
        CLUSTER / "piece.sh",
        REPO / "pyproject.toml",
    )
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in inputs))
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == f"registry.example/team/llm-sweep-node:{version}-{digest.hexdigest()[:12]}\n"
    )


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        ([], {}, "build_image.sh: no registry given"),
        (["registry.example"], {"DOCKER": "/nowhere/docker"}, "build_image.sh: docker not found"),
    ],
    ids=["no-registry", "no-docker"],
)
def test_the_build_script_fails_in_one_line(args, env, error):
    done = subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)  # fmt: skip
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(error)


def test_use_names_the_tag_in_every_cluster_file(tmp_path):
    for path in CLUSTER.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    done = subprocess.run(["bash", str(BUILD), "registry.example/team", "--print-tag", "--use"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CLUSTER_DIR": str(tmp_path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    tag = done.stdout.strip()
    images = {
        line.split("image:", 1)[1].strip()
        for path in tmp_path.glob("*.yaml")
        for line in path.read_text().splitlines()
        if "llm-sweep-node" in line and "image:" in line
    }
    assert images == {tag}
    assert len(re.findall(re.escape(tag), "".join(p.read_text() for p in tmp_path.glob("*")))) == 4


def fake_docker(folder, pieces: str):
    """A stand-in for the docker client (no docker engine here): builds nothing, and its image
    lists `pieces` as the ones that built. It logs each call."""
    script = folder / "docker"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> "{folder}/calls"\n'
        f'case "$1" in run) printf "{pieces}" ;; esac\nexit 0\n'
    )
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(("pieces", "ok"), [
    ("arctic-inference\\nexllamav2-ext\\nflash-attn\\nllama-cpp-cuda\\n", True),
    ("arctic-inference\\nllama-cpp-cuda\\n", False),
], ids=["all-built", "flash-attn-failed"])  # fmt: skip
def test_a_piece_advertised_but_not_built_stops_the_push(tmp_path, pieces, ok):
    for path in CLUSTER.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    docker = fake_docker(tmp_path, pieces)
    done = subprocess.run(["bash", str(BUILD), "registry.example", "--push", "--use"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DOCKER": docker,
                               "CLUSTER_DIR": str(tmp_path)})  # fmt: skip
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].startswith("build -f scripts/cluster/Dockerfile")
    pushed = any(c.startswith("push ") for c in calls)
    written = "registry.example/llm-sweep-node" in (tmp_path / "l4-aws.yaml").read_text()
    assert (done.returncode == 0, pushed, written) == (ok, ok, ok), done.stderr
    if not ok:
        last = done.stderr.splitlines()[-1]
        assert last.startswith("build_image.sh: the cluster files advertise pieces the image did")
        assert "did not build: flash-attn;" in last
