"""The node image's pip steps, checked on a CPU machine before an hour of `docker build`.

`scripts/cluster/Dockerfile` builds the one image every node runs; `sweep.image.node_image` reads
its builder stage's steps. `check_image` checks them in three passes, as far as a machine without a
GPU goes:
- each `pip wheel` step (a source distribution the image builds on purpose) runs for real, into a
  folder that stands in for the image's;
- the core install steps' requirements go through one real resolver run for the image's Python
  and platform: `pip install --dry-run --report` with `--python-version`, the manylinux tags of
  the base image's glibc, `--only-binary=:all:` and the steps' constraints, against the index the
  image reads (PyPI or PIP_INDEX_URL; not this machine's pip configuration or local wheels).
  Wheels' metadata is read with HTTP range requests (`fast-deps`): a few MB, where a plain dry
  run downloads GBs of CUDA wheels. torch's resolved requirements name its CUDA major, which must
  be the base images' own. An optional piece's source is looked up on the index (its CUDA build
  needs nvcc: the image's only);
- the steps then install for real in a fresh venv, but for what is a GPU node's only: a
  requirement whose dependencies (short of torch) reach a CUDA library (`nvidia-*`, `cuda-*`)
  is left out, and torch is this machine's CPU build of the pinned version.
A core step that fails fails the image (exit status 1 of scripts/check_node_setup.py); an
optional piece that fails is "optional-failed". `/src`, the project in the image, is the checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sweep.image import node_image
from sweep.image.node_image import Dockerfile, Step

SRC = "/src"  # where the Dockerfile puts the project
OK, FAILED, OPTIONAL_FAILED, SKIPPED = "ok", "failed", "optional-failed", "skipped"
CUDA_LIBRARY = re.compile(r"^(nvidia|cuda)-")
NOT_CUDA = {"nvidia-ml-py"}  # NVML's bindings: pure Python
STOP_AT = {"torch"}  # this machine has its own CPU build of the pinned torch
# Markers of the image's platform, for the requirements of the resolved distributions.
PLATFORM = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What one check of a step gave."""

    step: str  # the step, as the table names it
    done: str  # what was done with it here
    status: str  # OK, FAILED, OPTIONAL_FAILED or SKIPPED
    detail: str = ""


def label(step: Step) -> str:
    """The table's name of a step: its Dockerfile line and what it installs."""
    return f"L{step.line} {step.name}" + (" (piece)" if step.piece else "")


def classify(step: Step, returncode: int, output: str, done: str, ok_detail: str = "") -> Outcome:
    """The outcome of a step's check that exited with `returncode` and printed `output`."""
    if returncode == 0:
        return Outcome(label(step), done, OK, ok_detail)
    status = OPTIONAL_FAILED if step.piece else FAILED
    return Outcome(label(step), done, status, first_error(output))


def first_error(output: str) -> str:
    """The line that says why pip failed (the build's own error first), and what it was building."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    built = re.search(r"Failed to build '([^']+)'|Encountered error while generating .*?> (\S+)",
                      output, re.S)  # fmt: skip
    prefix = f"{built.group(1) or built.group(2)}: " if built else ""
    missing = re.search(r"no matching distributions available for your environment:\s*(.+)", output)
    suffix = f" (no distribution for the image: {missing.group(1).strip()})" if missing else ""
    noise = ("WARNING", "subprocess-exited", "Ignored the following")
    found = [line for m in ("Error:", "ERROR:", "error:") for line in lines if m in line]
    found = [line for line in found if not any(n in line for n in noise)]
    line = found[0] if found else (lines[-1] if lines else "failed, with no output")
    line = re.sub(r"\(from versions: (\S+?),? .*?(\S+)\)", r"(from versions: \1 ... \2)", line)
    return prefix + line + suffix


def index_env() -> dict[str, str]:
    """This environment for pip runs that may see only the image's index."""
    dropped = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**env, "PIP_CONFIG_FILE": os.devnull}  # no config file: no local wheel folders


def pip(python: str, args: list[str], env: dict[str, str], timeout_s: float = 1800):
    """Run `python -m pip ARGS`: its exit status and output."""
    try:
        done = subprocess.run([python, "-m", "pip", *args], env=env, capture_output=True,
                              text=True, timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 1, f"ERROR: timed out after {timeout_s:.0f} s"
    return done.returncode, done.stdout + done.stderr


def localize(words: tuple[str, ...] | list[str], paths: dict[str, str]) -> list[str]:
    """`words` with the image's paths in `paths` replaced by this machine's."""
    found = []
    for word in words:
        for image_path, here in paths.items():
            if word == image_path or word.startswith((image_path + "/", image_path + "[")):
                word = here + word[len(image_path) :]
        found.append(word)
    return found


def resolve(requirements: list[str], image: Dockerfile, options: tuple[str, ...] = (),
            python: str = sys.executable, timeout_s: float = 1800):  # fmt: skip
    """One resolver run of `requirements` for the image's Python and platform.

    Returns pip's exit status, its output and its report (None when it failed).
    """
    version = image.stage("builder").values.get("PYTHON_VERSION")
    if not version:
        raise ValueError("the Dockerfile's builder stage has no ARG PYTHON_VERSION")
    wanted = ".".join(version.split(".")[:2])
    tags = [f"--platform={tag}" for tag in node_image.platforms(image.stages[-1].base)]
    with tempfile.TemporaryDirectory(prefix="node-resolve-") as folder:
        report = Path(folder) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--no-cache-dir",
                "--use-feature=fast-deps", "--report", str(report), "--only-binary=:all:",
                "--implementation=cp", f"--python-version={wanted}", *tags, *options,
                *requirements]  # fmt: skip
        code, output = pip(python, args, index_env(), timeout_s)
        return code, output, json.loads(report.read_text()) if code == 0 else None


def cuda_major(report: dict, name: str = "torch") -> tuple[str | None, int | None]:
    """The version of `name` in a resolver report, and the CUDA major its requirements name."""
    for item in report["install"]:
        meta = item["metadata"]
        if canonicalize_name(meta["name"]) == name:
            for text in meta.get("requires_dist") or []:
                found = re.match(r"cuda-toolkit\b[^=]*==\s*(\d+)\.", text)
                found = found or re.match(r"nvidia-[\w-]+-cu(\d+)\b", text)
                if found:
                    return meta["version"], int(found.group(1))
            return meta["version"], None
    return None, None


def node_only(requirement: str, report: dict, python: str = "3.11") -> list[str]:
    """The CUDA libraries `requirement` brings in, short of torch: [] when a CPU can have it."""
    items = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    if requirement.startswith("/"):  # a local project: its item is the one read from that path
        path, _, extras = requirement.partition("[")
        uri = Path(path).resolve().as_uri()
        name = next((n for n, i in items.items() if i["download_info"]["url"] == uri), "")
        todo = [(name, set(extras.rstrip("]").split(",")) - {""})]
    else:
        req = Requirement(requirement)
        todo = [(canonicalize_name(req.name), set(req.extras))]
    seen, cuda = set(), set()
    while todo:
        name, extras = todo.pop()
        if name in seen or name not in items:
            continue
        seen.add(name)
        if CUDA_LIBRARY.match(name) and name not in NOT_CUDA:
            cuda.add(name)
        if name in STOP_AT:
            continue
        for text in items[name]["metadata"].get("requires_dist") or []:
            req = Requirement(text)
            env = {**PLATFORM, "python_version": python, "python_full_version": f"{python}.0"}
            if req.marker is None or any(
                req.marker.evaluate({**env, "extra": e}) for e in extras | {""}
            ):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return sorted(cuda)


def resolve_core(core: list[Step], image: Dockerfile, paths: dict[str, str]):
    """The resolver run of every core install step: an outcome per step, and pip's report."""
    requirements, options = [], []
    for step in core:
        requirements += localize(step.requirements, paths)
        for names in (("-c", "--constraint"), ("-f", "--find-links"), ("--extra-index-url",)):
            for value in localize(step.option(*names), paths):
                options += [] if value in options else [names[-1], value]
    code, output, report = resolve(requirements, image, options)
    done = "resolver run for the image (wheels only), all core steps together"
    if code == 0:
        return [Outcome(label(s), done, OK) for s in core], report
    error = first_error(output)
    mentioned = {canonicalize_name(w) for w in re.findall(r"[A-Za-z0-9][\w.-]*", error)}
    named = [s for s in core if mentioned & {requirement_name(r, paths) for r in s.requirements}]
    return [
        Outcome(label(s), done, FAILED, error) if s in named or not named
        else Outcome(label(s), done, SKIPPED, "the run failed on " + label(named[0]))
        for s in core
    ], None  # fmt: skip


def requirement_name(requirement: str, paths: dict[str, str]) -> str:
    """The distribution a requirement names; a path's is its pyproject.toml's project name."""
    if requirement.startswith("/"):
        path = Path(localize([requirement.partition("[")[0]], paths)[0]) / "pyproject.toml"
        return canonicalize_name(tomllib.loads(path.read_text())["project"]["name"])
    return canonicalize_name(Requirement(requirement).name)


def check_cuda(image: Dockerfile, report: dict) -> Outcome:
    """Whether torch's CUDA major (its resolved requirements) is that of every base image."""
    version, major = cuda_major(report)
    bases = {s.name: node_image.cuda_version(s.base) for s in image.stages}
    detail = f"torch {version}: CUDA {major}; " + ", ".join(f"{k} {v}" for k, v in bases.items())
    detail += f"; {len(report['install'])} distributions resolved"
    same = major is not None and all(v and int(v.split(".")[0]) == major for v in bases.values())
    return Outcome("CUDA", "torch's CUDA major against the base images'", OK if same else FAILED,
                   detail)  # fmt: skip


def look_up_piece(step: Step) -> Outcome:
    """An optional piece's source on the index: its CUDA build is the image's only (nvcc)."""
    if step.verb != "install":
        done = "not a pip install: the image build runs it"
        return Outcome(label(step), done, SKIPPED, "needs nvcc")
    missing = []
    for text in step.requirements:
        req = Requirement(text)
        code, output = pip(sys.executable, ["index", "versions", "--json", req.name], index_env())
        versions = json.loads(output).get("versions", []) if code == 0 else []
        if not any(req.specifier.contains(v, prereleases=True) for v in versions):
            missing.append(f"no {text} on the index")
    done = "source looked up on the index (the CUDA build is the image's)"
    return classify(step, 1 if missing else 0, "; ".join(missing), done)


def install_here(steps: list[Step], report: dict, venv: str, paths: dict[str, str]):
    """The core install steps, for real in the venv of `venv`, less what only a GPU node has."""
    outcomes = []
    for step in (s for s in steps if s.verb == "install" and not s.piece):
        if any(o.status == FAILED for o in outcomes):
            outcomes.append(Outcome(label(step), "not run", SKIPPED, "a core step failed before"))
            continue
        dropped = {r: node_only(localize([r], paths)[0], report) for r in step.requirements}
        dropped = {r: libs for r, libs in dropped.items() if libs}
        args = [a for a in step.args if a not in dropped]
        left = ", ".join(f"{r} ({libs[0]}...)" for r, libs in dropped.items())
        done = "installed here (CPU torch)" + (f", without {left}" if left else "")
        if len(dropped) == len(step.requirements):
            outcomes.append(Outcome(label(step), f"not run: needs CUDA, {left}", SKIPPED))
            continue
        print(f"{label(step)}: installing", file=sys.stderr, flush=True)
        code, output = pip(venv, ["install", *localize(args, paths)], dict(os.environ))
        torch = re.search(r"^Successfully installed .*\btorch-(\S+)", output, re.M)
        outcomes.append(classify(step, code, output, done, f"torch {torch[1]}" if torch else ""))
    return outcomes


def fresh_venv(python: str, folder: Path) -> str:
    """A new venv of `python` in `folder` with a current pip; its interpreter's path."""
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    venv_python = str(folder / "bin" / "python")
    subprocess.run([venv_python, "-m", "pip", "install", "-q", "--upgrade", "pip"],
                   check=True, capture_output=True)  # fmt: skip
    return venv_python


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a Markdown table."""
    lines = ["| step | done | result | detail |", "|---|---|---|---|"]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        lines.append(f"| {o.step} | {o.done} | {o.status} | {detail} |")
    return "\n".join(lines)


def check_image(dockerfile: Path, python: str, repo: Path) -> tuple[str, bool]:
    """Check the image's pip steps (module docstring): the table, and whether a core step failed."""
    image = node_image.read_file(dockerfile)
    steps = node_image.steps(image)
    core = [s for s in steps if s.verb == "install" and not s.piece]
    with tempfile.TemporaryDirectory(prefix="node-image-") as folder:
        wheel_steps = [s for s in steps if s.verb == "wheel" and not s.piece]
        paths = {SRC: str(repo)}
        for i, step in enumerate(wheel_steps):
            paths.update({d: f"{folder}/wheels{i}" for d in step.option("-w", "--wheel-dir")})
        outcomes = []
        for step in wheel_steps:
            print(f"{label(step)}: building", file=sys.stderr, flush=True)
            code, output = pip(sys.executable, ["wheel", *localize(step.args, paths)], index_env())
            outcomes.append(classify(step, code, output, "built here (the image's index)"))
        print(f"resolving {len(core)} core steps for the image", file=sys.stderr, flush=True)
        resolved, report = resolve_core(core, image, paths)
        outcomes += resolved + ([check_cuda(image, report)] if report else [])
        outcomes += [look_up_piece(s) for s in steps if s.piece]
        if report and not any(o.status == FAILED for o in outcomes):
            venv = fresh_venv(python, Path(folder) / "venv")
            outcomes += install_here(steps, report, venv, paths)
    return table(outcomes), any(o.status == FAILED for o in outcomes)
