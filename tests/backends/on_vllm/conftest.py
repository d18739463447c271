"""One vLLM server and one vLLM offline engine for every test of this folder (fp32, CPU).

A vLLM start costs about a minute of CPU here, so the folder starts each engine once, with three
generated LoRA adapters of the tiny model loaded, and runs every trial it checks on them through
the trial runner:

- `served`: a `vllm_server` deployment of three trials: the two of `quickstart_serving` with
  every request to the base model (`workload.lora_assignment=base`), then the LoRA trial (Zipf
  over the three adapters). The runner is left suspended after its last trial, so the server
  stays up for the tests that attach to it (scoring, the openai backend, caches, a search).
- `offline`: the offline engine's LoRA trial (`backend=vllm`), its runner left suspended the
  same way, so the engine scores and generates for the engine tests on the base model. It
  starts as vLLM starts it by default, its engine core a process of its own
  (`VLLM_ENABLE_V1_MULTIPROCESSING=1`, which the suite otherwise turns off: tests/conftest.py).

Every request of the server's log names its adapter (`--enable-log-requests`). The folder is one
unit of work under pytest-xdist (tests/conftest.py), so each engine starts once per test run. It
is a package (`__init__.py`, and not named `vllm`, which would shadow the library): in a folder
that is not one, pytest keeps a package fixture to the session's end, and the engines with it,
their environment (vLLM's `LD_PRELOAD` of torch's libgomp among it) left in the worker for
every later test's processes.
"""

import os

import pytest

from backends.models.tiny import ensure_tiny_model
from backends.vllm import VLLMBackend
from backends.vllm_server import VLLMServerBackend
from tests.backends.on_vllm.deployments import LORA_OFFLINE, LORA_SERVER, SERVING, one_deployment
from tests.helpers import deployment_of, serve


@pytest.fixture(autouse=True)
def environment_restored():
    """Put back this process's environment after each test.

    vLLM's in-process engine sets `LD_PRELOAD` (torch's libgomp), `TORCHINDUCTOR_*` and more in
    `os.environ`; every process a later test starts inherited them, and the quickstart's two
    torch workers then ran about 17 times slower (20 tok/s against 340), past its timeout.
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="package")
def model_dir():
    return str(ensure_tiny_model())


@pytest.fixture(scope="package")
def served():
    """The server's start, its three trials' files (`trials`: the two base-model ones first)."""
    deployment = one_deployment(SERVING, LORA_SERVER)
    assert len(deployment.trials) == 3
    with serve(deployment, VLLMServerBackend, "vLLM server") as shared:
        yield shared


@pytest.fixture(scope="package")
def offline():
    """The offline engine, started by the trial runner for its LoRA trial (`trials[0]`)."""
    deployment = deployment_of(LORA_OFFLINE)
    assert len(deployment.trials) == 1
    engine_process = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    with serve(deployment, VLLMBackend, "vLLM offline engine", env=engine_process) as shared:
        yield shared
