"""The node image's Dockerfile, read: its stages, base images, build values and pip steps.

`scripts/cluster/Dockerfile` builds the one image every node of the cluster runs. `read` parses
the little of Docker's syntax it uses: line continuations and comment lines, `ARG` (with global
ARGs before the first `FROM`), `ENV`, `FROM ... AS name`, `COPY` and `RUN`, whose text gets the
stage's ARG and ENV values as the shell would give them (`$NAME`, `${NAME}`, `${NAME:-default}`;
a name it does not know, such as the base image's `PATH`, is left as written). `steps` splits a
stage's `RUN` commands at `&&`, `||`, `;` and `|` and keeps the pip commands that install into the
image's venv (a bare `pip` or `python -m pip`: a pip named by its path is another Python's) and the
optional pieces (`scripts/cluster/piece.sh NAME COMMAND...`), each with its env prefix.
`sweep.image.node_setup` checks those steps; the tests read bases and GPU architectures from here.
Heredoc bodies (`RUN <<EOF`) are not read: the Dockerfile has none.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

PIECE_SCRIPT = "scripts/cluster/piece.sh"
# pip options that take a value (the next word, unless written --option=value).
VALUED_OPTIONS = frozenset(
    "-c --constraint -r --requirement -i --index-url --extra-index-url -f --find-links -w "
    "--wheel-dir --only-binary --no-binary -t --target --prefix --root -C --config-settings "
    "--python-version --platform --implementation --abi --report --log --cache-dir --src "
    "--progress-bar --upgrade-strategy --trusted-host --timeout --retries --proxy --cert "
    "--exists-action --use-feature --use-deprecated --global-option".split()
)
# Ray's accelerator_type labels (conf/hardware/*.yaml) and the compute capability of each.
COMPUTE_CAPABILITY = {"T4": "7.5", "A100": "8.0", "L4": "8.9", "H100": "9.0", "H200": "9.0"}
# The glibc of each Ubuntu release an NVIDIA CUDA image is built on: the manylinux wheels it runs.
UBUNTU_GLIBC = {"ubuntu20.04": (2, 31), "ubuntu22.04": (2, 35), "ubuntu24.04": (2, 39)}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")
_SEPARATOR = re.compile(r"^[();]*(&&|\|\||;|\||&)[();]*$")


@dataclass
class Stage:
    """One `FROM` of the Dockerfile and what follows it."""

    base: str
    name: str
    values: dict[str, str] = field(default_factory=dict)  # ARG and ENV, as each line left them
    env: dict[str, str] = field(default_factory=dict)  # the ENV values only
    runs: list[tuple[int, str]] = field(default_factory=list)  # (line, command with values in)
    copies: list[tuple[str, ...]] = field(default_factory=list)  # each COPY's words


@dataclass(frozen=True)
class Step:
    """One pip command (or optional piece) of a `RUN`, with the line it starts on."""

    line: int
    argv: tuple[str, ...]  # the command without the piece wrapper and the env prefix
    env: tuple[tuple[str, str], ...] = ()
    piece: str | None = None  # the optional piece's name; None: a core step

    @property
    def verb(self) -> str | None:
        """`install` or `wheel` for a pip command of the venv; None for anything else."""
        argv = self.argv
        if argv[:1] in (("pip",), ("pip3",)) and len(argv) > 1:
            return argv[1]
        if argv and re.fullmatch(r"python(3(\.\d+)?)?", argv[0]) and argv[1:3] == ("-m", "pip"):
            return argv[3] if len(argv) > 3 else None
        return None

    @property
    def args(self) -> tuple[str, ...]:
        """The words after pip's verb."""
        return self.argv[self.argv.index(self.verb) + 1 :] if self.verb else ()

    @property
    def requirements(self) -> tuple[str, ...]:
        """The requirements named on the command line (an editable's path included)."""
        found, args, i = [], self.args, 0
        while i < len(args):
            if args[i] in ("-e", "--editable"):
                found += args[i + 1 : i + 2]
                i += 2
            elif args[i].startswith("-"):
                i += 2 if args[i] in VALUED_OPTIONS else 1
            else:
                found.append(args[i])
                i += 1
        return tuple(found)

    def option(self, *names: str) -> list[str]:
        """The values this command gives the option `names` (its spellings)."""
        values, args = [], self.args
        for i, arg in enumerate(args):
            key, eq, value = arg.partition("=")
            if key in names:
                values.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
        return values

    @property
    def name(self) -> str:
        """What a table calls it: the piece, or the command's requirements."""
        return self.piece or " ".join(self.requirements) or " ".join(self.argv)


@dataclass
class Dockerfile:
    """The stages of a Dockerfile, in order."""

    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage called `name`."""
        return next(s for s in self.stages if s.name == name)


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` with the `$NAME` of `values` replaced, as the shell of a `RUN` would."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        if name in values:
            return values[name]
        return match.group(2) if match.group(2) is not None else match.group(0)

    return _VARIABLE.sub(value, text)


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, rest) of each instruction, continuations joined, comments dropped."""
    found, buffer, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or (not buffer and not line.strip()):
            continue
        start = start or number
        buffer += line.rstrip()
        if buffer.endswith("\\"):
            buffer = buffer[:-1] + " "
            continue
        keyword, _, rest = buffer.strip().partition(" ")
        found.append((start, keyword.upper(), rest.strip()))
        buffer, start = "", 0
    return found


def _assignments(text: str, values: dict[str, str]) -> dict[str, str]:
    """The `NAME=value` pairs of an ARG or ENV line (`ENV NAME value`, the old form, too).

    As Docker does, the line is split into words first and values go into each word after.
    """
    words = [substitute(word, values) for word in shlex.split(text)]
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.partition("=")[::2] for word in words)


def read(text: str) -> Dockerfile:
    """The stages of the Dockerfile `text`."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line, keyword, rest in instructions(text):
        stage = stages[-1] if stages else None
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(substitute(words[0], global_args), name))
        elif keyword == "ARG":
            for key, value in _assignments(rest, stage.values if stage else {}).items():
                inherited = global_args.get(key, "")
                if stage is None:
                    global_args[key] = value
                else:
                    stage.values[key] = value if "=" in rest else inherited
        elif keyword == "ENV" and stage:
            new = _assignments(rest, stage.values)
            stage.values.update(new)
            stage.env.update(new)
        elif keyword == "RUN" and stage:
            if rest.startswith("["):
                rest = shlex.join(json.loads(rest))
            rest = re.sub(r"^(--\S+\s+)+", "", rest)
            stage.runs.append((line, substitute(rest, stage.values)))
        elif keyword == "COPY" and stage:
            stage.copies.append(tuple(substitute(rest, stage.values).split()))
    return Dockerfile(stages)


def commands(run: str) -> list[list[str]]:
    """The simple commands of a `RUN` line: words split at `&&`, `||`, `;` and `|`."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    words = list(lexer)
    skip = False
    for word in words:
        if skip:
            skip = False
        elif _SEPARATOR.match(word):
            found.append([])
        elif word[0] in "<>":  # a redirection and its target
            skip = True
        elif word.strip("()"):
            found[-1].append(word)
    return [c for c in found if c]


def parse_command(line: int, argv: list[str]) -> Step:
    """The step of one command: its piece name, env prefix and remaining argv."""
    piece = None
    if len(argv) >= 3 and argv[0] == "bash" and argv[1].endswith(PIECE_SCRIPT):
        piece, argv = argv[2], argv[3:]
    if argv[:1] == ["env"]:
        argv = argv[1:]
    env = []
    while argv and re.fullmatch(r"\w+=.*", argv[0], re.S):
        key, _, value = argv.pop(0).partition("=")
        env.append((key, value))
    return Step(line, tuple(argv), tuple(env), piece)


def steps(dockerfile: Dockerfile, stage: str = "builder") -> list[Step]:
    """The pip commands and the pieces of `stage`, in the order the build runs them."""
    found = []
    for line, run in dockerfile.stage(stage).runs:
        for argv in commands(run):
            step = parse_command(line, argv)
            if step.piece or step.verb in ("install", "wheel"):
                found.append(step)
    return found


def read_file(path: Path) -> Dockerfile:
    """The stages of the Dockerfile at `path`."""
    return read(Path(path).read_text())


def cuda_version(image: str) -> str | None:
    """The CUDA version of an `nvidia/cuda` image tag ("13.0.2"); None for another image."""
    match = re.match(r"(?:[\w.-]+/)?nvidia/cuda:(\d+\.\d+(?:\.\d+)?)-", image)
    return match.group(1) if match else None


def platforms(image: str, machine: str = "x86_64") -> list[str]:
    """The manylinux platform tags a wheel may carry to run on `image` (newest glibc first)."""
    ubuntu = re.search(r"ubuntu\d+\.\d+", image)
    if not ubuntu or ubuntu.group(0) not in UBUNTU_GLIBC:
        raise ValueError(f"{image}: not an Ubuntu image of {sorted(UBUNTU_GLIBC)}")
    major, minor = UBUNTU_GLIBC[ubuntu.group(0)]
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 4, -1)]
    return tags + [f"manylinux{old}_{machine}" for old in ("2014", "2010", "1")]


def architectures(value: str) -> set[str]:
    """The compute capabilities ("8.9") of a TORCH_CUDA_ARCH_LIST or CMake architecture list."""
    found = set()
    for item in re.split(r"[\s;,]+", value.strip()):
        item = re.sub(r"(\+PTX|-real|-virtual)$", "", item)
        if re.fullmatch(r"\d+\.\d+", item):
            found.add(item)
        elif re.fullmatch(r"\d{2,3}", item):
            found.add(f"{item[:-1]}.{item[-1]}")
    return found
