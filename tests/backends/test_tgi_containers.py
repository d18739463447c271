"""TGI containers a SIGKILLed worker left behind are removed when its deployment starts again.

No docker engine runs on these machines, so only `docker` is mocked: a fake executable on PATH
that records every argv it is called with. Its `run` starts the "container" (the sim server,
which answers TGI's `/health`) in a session of its own, as a docker daemon would, and stays
attached to it as the real client does; `ps` lists the containers it started and has not
removed, with their labels; `rm -f` kills them. The backend, `ServerProcess` and the processes
are real: the first worker is a subprocess that is SIGKILLed while it holds a container.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.config import DEPLOYMENT_ENV
from backends.tgi import TGIBackend, TGIBackendConfig
from sweep.core import records as R
from sweep.core.errors import BackendError

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "dep0123abcd"

FAKE_DOCKER = """\
#!{python}
import json, os, signal, subprocess, sys
from pathlib import Path

state = Path({state!r})
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(args) + "\\n")
containers = state / "containers"
containers.mkdir(exist_ok=True)
if os.environ.get("FAKE_DOCKER_DOWN"):
    sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
if args[0] == "run":
    name = args[args.index("--name") + 1]
    labels = dict(v.split("=", 1) for k, v in zip(args, args[1:]) if k == "--label")
    port = args[args.index("-p") + 1].split(":")[1]
    server = [sys.executable, "-m", "backends.sim_server", "--port", port]
    container = subprocess.Popen(server, cwd={repo!r}, start_new_session=True)
    info = {{"pid": container.pid, "client": os.getpid(), "labels": labels}}
    (containers / name).write_text(json.dumps(info))
    sys.exit(container.wait())
elif args[0] == "ps":
    key, _, value = args[args.index("--filter") + 1].removeprefix("label=").partition("=")
    for path in sorted(containers.iterdir()):
        labels = json.loads(path.read_text())["labels"]
        if labels.get(key) == value:
            print(path.name, labels.get("llm-sweep.owner", ""))
elif args[0] == "rm":
    for name in args[2:]:
        path = containers / name
        if path.exists():
            os.kill(json.loads(path.read_text())["pid"], signal.SIGKILL)
            path.unlink()
"""

WORKER = """\
import time
from backends.tgi import TGIBackend, TGIBackendConfig
backend = TGIBackend(TGIBackendConfig(num_gpus=0, startup_timeout_s=30), "m")
backend.start()
print(backend.container, flush=True)
time.sleep(120)
"""


@pytest.fixture
def docker(tmp_path, monkeypatch):
    """The fake docker first on PATH; yields its state folder (calls.jsonl, containers/)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state), repo=str(REPO)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(DEPLOYMENT_ENV, DEPLOYMENT)
    yield state
    for path in (state / "containers").glob("*"):  # a failed test leaks no container either
        with contextlib.suppress(ProcessLookupError):
            os.kill(json.loads(path.read_text())["pid"], signal.SIGKILL)


def calls(state: Path) -> list[list[str]]:
    """Every argv the fake docker was called with, in order."""
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def container(state: Path, name: str) -> dict:
    """What the fake docker recorded of a container it started: pids and labels."""
    return json.loads((state / "containers" / name).read_text())


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    """Waits until the processes have ended; returns those still running."""
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def start_killed_worker(state: Path) -> tuple[str, dict, int]:
    """A worker subprocess starts TGI and is SIGKILLed; its container name, record and pid."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        name = worker.stdout.readline().strip()
        record = container(state, name)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
    return name, record, worker.pid


def test_a_killed_workers_container_is_removed_when_its_deployment_starts(docker, caplog):
    """SIGKILL a worker holding a container; the deployment's next start removes it first.

    Then a third task of the deployment (a helper beside a live one) removes nothing, and at
    the end every process the test started (workers, docker clients, containers) is gone.
    """
    name, first, worker_pid = start_killed_worker(docker)
    assert first["labels"]["llm-sweep.deployment"] == DEPLOYMENT
    assert first["labels"]["llm-sweep.owner"].split(":")[1] == str(worker_pid)
    # The client dies with its worker (PR_SET_PDEATHSIG); the container runs on: the leak.
    assert wait_gone([first["client"]]) == [] and alive(first["pid"])

    second = TGIBackend(TGIBackendConfig(num_gpus=0, startup_timeout_s=30), "m")
    helper = TGIBackend(TGIBackendConfig(num_gpus=0, startup_timeout_s=30), "m")
    try:
        with caplog.at_level(logging.WARNING, logger="backends.tgi"):
            second.start()
        history = calls(docker)
        assert [c[0] for c in history] == ["ps", "run", "ps", "rm", "run"]
        filter_ = ["--filter", f"label=llm-sweep.deployment={DEPLOYMENT}"]
        assert history[0][:4] == history[2][:4] == ["ps", "-a", *filter_]
        assert history[3] == ["rm", "-f", name]  # issued before the second container runs
        assert history[4][3] == second.container
        assert ["--label", f"llm-sweep.deployment={DEPLOYMENT}"] == history[4][4:6]
        removed = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
        assert removed == [
            f"removed 1 TGI container(s) of deployment {DEPLOYMENT} left running by a killed "
            f"worker: {name}"
        ]
        assert wait_gone([first["pid"]]) == []  # the removal really ended the old container

        helper.start()  # the second task's owner (this process) lives: its container stays
        assert [c[0] for c in calls(docker)[5:]] == ["ps", "run"]
        assert alive(container(docker, second.container)["pid"])
    finally:
        kept = [docker / "containers" / b.container for b in (second, helper)]
        records = [json.loads(path.read_text()) for path in kept if path.exists()]
        second.stop()
        helper.stop()
    assert [c[:2] for c in calls(docker)[-2:]] == [["rm", "-f"], ["rm", "-f"]]
    started = [worker_pid, first["client"], first["pid"]]
    started += [p for r in records for p in (r["client"], r["pid"])]
    assert wait_gone(started) == []


def test_labels_name_the_deployment_and_fall_back_to_a_config_hash(monkeypatch):
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    one, same = (TGIBackend(TGIBackendConfig(num_gpus=0), "m") for _ in range(2))
    other = TGIBackend(TGIBackendConfig(num_gpus=0, tag="3.0.0"), "m")
    assert one.deployment == same.deployment != other.deployment
    argv = one.argv(9000)
    labels = [v for k, v in zip(argv, argv[1:], strict=False) if k == "--label"]
    assert labels[0] == f"llm-sweep.deployment={one.deployment}"
    assert labels[1].startswith("llm-sweep.owner=") and f":{os.getpid()}:" in labels[1]
    monkeypatch.setenv(DEPLOYMENT_ENV, DEPLOYMENT)
    assert TGIBackend(TGIBackendConfig(num_gpus=0), "m").deployment == DEPLOYMENT


def test_a_docker_that_cannot_list_containers_is_one_line_and_runs_nothing(docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    backend = TGIBackend(TGIBackendConfig(num_gpus=0), "m")
    with pytest.raises(BackendError) as info:
        backend.start()
    backend.stop()
    assert str(info.value) == (
        "docker ps failed (exit code 1): "
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    )
    assert info.value.kind == R.ERROR_BACKEND_START
    assert [c[0] for c in calls(docker)] == ["ps"]  # no run, and nothing to remove


def test_a_missing_docker_names_what_to_install_and_runs_nothing():
    backend = TGIBackend(TGIBackendConfig(docker="no-such-docker-binary"), "m")
    with pytest.raises(BackendError) as info:
        backend.start()
    backend.stop()
    message = str(info.value)
    assert "\n" not in message and info.value.kind == R.ERROR_BACKEND_START
    assert message.startswith("'no-such-docker-binary' is not installed")
    assert "install Docker Engine" in message and "backend.url" in message
    assert backend.pid is None  # nothing was launched, so no container can be left
