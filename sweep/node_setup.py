"""A cluster YAML's node set-up, run as far as a CPU machine can: which step would install.

`ray up` runs `setup_commands` on every node, then `head_setup_commands` on the head and
`worker_setup_commands` (or a node type's own) on each worker. `node_plans` reads those per node
type; `run_plan` runs one node's steps in order in a fresh venv and classifies each:
- a step that names torch (the base layer: torch and the build tools) is installed for real; on
  a CPU machine pip picks the local CPU torch of the constraint's version, and the source builds
  of later steps compile against it, as they do on a node;
- every other pip step is a dry run (`pip install --dry-run`): it resolves every requirement and
  builds every source distribution's metadata, where a `setup.py` that imports torch fails;
  wheels' metadata is read with HTTP range requests (pip's fast-deps), so no wheel is downloaded;
- a step that compiles CUDA code (`CMAKE_ARGS` with `GGML_CUDA=on`) is skipped: it needs nvcc;
- a step run through `scripts/cluster/piece.sh NAME` is an optional piece: its failure is
  "optional-failed", which leaves the node up without it.
flash-attn's metadata runs its `setup.py` with torch; without CUDA it stops at the extension's
CUDA paths, so its CUDA build is skipped for the dry run (`FLASH_ATTENTION_SKIP_CUDA_BUILD`) and
only that part is left to the node. `table` prints the outcomes; `failed_required` says whether
the node would fail. Nothing here needs Ray.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NODE_ROOT = "/home/ray/llm-sweep"  # where the YAMLs' file_mounts put the project on a node
PIECE_SCRIPT = "scripts/cluster/piece.sh"
INSTALLED, FAILED, OPTIONAL_FAILED, SKIPPED = "installed", "failed", "optional-failed", "skipped"
# Set for every dry run: flash-attn's setup.py then describes itself without CUDA.
DRY_RUN_ENV = {"FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"}
VALUED_OPTIONS = ("-c", "--constraint", "-r", "--requirement", "--index-url", "--extra-index-url")
CUDA_BUILD_FLAGS = ("GGML_CUDA=on", "GGML_CUDA=ON", "LLAMA_CUBLAS=on")


@dataclass(frozen=True)
class Step:
    """One set-up command of a node, as the YAML gives it."""

    command: str
    piece: str | None = None  # the optional piece's name; None: a core step
    argv: tuple[str, ...] = ()  # the command without the piece wrapper and the env prefix
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """What the table calls it: the piece, or the command's requirements."""
        if self.piece:
            return self.piece
        words, skip = [], False
        for arg in self.argv[2:]:
            if not skip and not arg.startswith("-"):
                words.append(arg)
            skip = arg in VALUED_OPTIONS  # the next word is the option's value
        return " ".join(words)


@dataclass(frozen=True)
class Outcome:
    """What running a step here gave."""

    step: Step
    status: str  # INSTALLED, FAILED, OPTIONAL_FAILED or SKIPPED
    detail: str = ""


def parse_step(command: str) -> Step:
    """The step of one set-up command: its piece name, env prefix and remaining argv."""
    argv = shlex.split(command)
    piece = None
    if len(argv) >= 3 and argv[0] == "bash" and argv[1].endswith(PIECE_SCRIPT):
        piece, argv = argv[2], argv[3:]
    if argv and argv[0] == "env":
        argv = argv[1:]
    env = {}
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    return Step(command, piece, tuple(argv), env)


def node_plans(config: dict[str, Any]) -> dict[str, list[Step]]:
    """Each node type's set-up steps; worker types with the same steps share one entry."""
    common = list(config.get("setup_commands") or [])
    head = config.get("head_node_type")
    plans: dict[tuple[str, ...], list[str]] = {}
    for name, spec in (config.get("available_node_types") or {}).items():
        own = (spec or {}).get("worker_setup_commands")
        if name == head:
            extra = config.get("head_setup_commands") or []
        else:
            extra = own if own is not None else config.get("worker_setup_commands") or []
        plans.setdefault(tuple(common + list(extra)), []).append(str(name))
    return {", ".join(names): [parse_step(c) for c in cmds] for cmds, names in plans.items()}


def is_pip_install(argv: tuple[str, ...]) -> bool:
    """Whether the command is `pip install ...` (or `python -m pip install ...`)."""
    if argv[:2] == ("pip", "install"):
        return True
    return len(argv) >= 4 and argv[1:4] == ("-m", "pip", "install")


def local_argv(step: Step, python: Path, repo: Path, dry_run: bool) -> list[str]:
    """The step's pip command for this machine's venv and checkout."""
    start = 2 if step.argv[0] == "pip" else 4
    args = [a.replace(NODE_ROOT, str(repo)) for a in step.argv[start:] if a not in ("-q", "-qq")]
    extra = ["--dry-run", "--use-feature=fast-deps"] if dry_run else []
    return [str(python), "-m", "pip", "install", *extra, *args]


def needs_cuda(step: Step) -> str | None:
    """Why the step cannot run on a CPU machine; None when it can."""
    cmake = step.env.get("CMAKE_ARGS", "")
    if any(flag in cmake for flag in CUDA_BUILD_FLAGS):
        return f"needs CUDA: CMAKE_ARGS={cmake} compiles CUDA kernels with nvcc"
    return None


def run_step(step: Step, python: Path, repo: Path, timeout_s: float = 1200) -> Outcome:
    """Run one step in the venv of `python`; a step naming torch for real, the rest dry."""
    reason = needs_cuda(step)
    if reason is not None:
        return Outcome(step, SKIPPED, reason)
    if not step.argv or not is_pip_install(step.argv):
        return Outcome(step, SKIPPED, "not a pip install: not run here")
    dry_run = "torch" not in step.argv
    env = {**os.environ, **step.env, **(DRY_RUN_ENV if dry_run else {})}
    try:
        done = subprocess.run(
            local_argv(step, python, repo, dry_run),
            env=env, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return classify(step, 1, f"timed out after {timeout_s:.0f} s")
    how = "dry run" if dry_run else "for real"
    return classify(step, done.returncode, done.stdout + done.stderr, how)


def classify(step: Step, returncode: int, output: str, how: str = "") -> Outcome:
    """The outcome of a step that exited with `returncode` and printed `output`."""
    if returncode == 0:
        return Outcome(step, INSTALLED, how)
    status = OPTIONAL_FAILED if step.piece else FAILED
    return Outcome(step, status, first_error(output))


def first_error(output: str) -> str:
    """The line that says why pip failed (the build's own error first), and what it was building."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    built = re.search(r"Failed to build '([^']+)'|Encountered error while generating .*?> (\S+)",
                      output, re.S)  # fmt: skip
    prefix = f"{built.group(1) or built.group(2)}: " if built else ""
    for marker in ("Error:", "ERROR:", "error:"):
        for line in lines:
            if marker in line and "WARNING" not in line and "subprocess-exited" not in line:
                return prefix + line
    return prefix + (lines[-1] if lines else "failed, with no output")


def run_plan(steps: list[Step], python: Path, repo: Path) -> list[Outcome]:
    """Run a node's steps in order; steps after a failed core step are not run, as on a node."""
    outcomes = []
    for step in steps:
        if any(o.status == FAILED for o in outcomes):
            outcomes.append(Outcome(step, SKIPPED, "a core step before it failed"))
            continue
        outcomes.append(run_step(step, python, repo))
    return outcomes


def failed_required(outcomes: list[Outcome]) -> bool:
    """Whether a core step failed: `ray up` would then fail the node."""
    return any(o.status == FAILED for o in outcomes)


def table(rows: list[tuple[str, str, Outcome]]) -> str:
    """Rows of (config, node type, outcome) as a Markdown table."""
    lines = ["| config | node type | step | result | detail |", "|---|---|---|---|---|"]
    for config, node, outcome in rows:
        step = outcome.step.name + (" (optional)" if outcome.step.piece else "")
        detail = outcome.detail.replace("|", "\\|")
        lines.append(f"| {config} | {node} | {step} | {outcome.status} | {detail} |")
    return "\n".join(lines)


def fresh_venv(python: str, folder: Path) -> Path:
    """A new venv of `python` in `folder` with a current pip; its interpreter's path."""
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    venv_python = folder / "bin" / "python"
    subprocess.run(
        [str(venv_python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        check=True, capture_output=True,
    )  # fmt: skip
    return venv_python


def check_configs(configs: list[Path], python: str, repo: Path) -> tuple[str, bool]:
    """Run every node type's set-up of the `ray up` YAMLs in `configs`.

    Returns the table, and whether a node would fail (a required step failed). The same
    steps in another YAML run once.
    """
    rows, done, failed = [], {}, False
    for path in configs:
        for node, steps in node_plans(yaml.safe_load(path.read_text())).items():
            key = tuple(s.command for s in steps)
            if key not in done:
                print(f"{path.name} {node}: {len(steps)} steps", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix="node-setup-") as folder:
                    done[key] = run_plan(steps, fresh_venv(python, Path(folder) / "venv"), repo)
            rows += [(path.name, node, outcome) for outcome in done[key]]
            failed |= failed_required(done[key])
    return table(rows), failed
