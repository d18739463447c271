"""vLLM's CPU server started twice on one fresh compile cache: cold, then warm, each by phase.

The first start compiles the model (torch.compile, into `VLLM_CACHE_ROOT`, a folder of this
test's; the suite's `VLLM_CPU_CI_ENV`, which skips that compile, is unset here), the second loads
what the first compiled. Each start's phases are found in its log and add up to its time from
launch to healthy; vLLM's own timer of its engine's set-up fits in the phase our clock gave it;
the warm start is faster, and its columns say it was warm. It
compares two start times, so it runs in the serial `timing` pass, nothing beside it.
"""

import pytest

from backends.models.source import resolve_model_path
from backends.vllm_server import VLLMServerBackend
from sweep.core import records as R
from tests.helpers import deployment_of, environment_restored

pytestmark = [pytest.mark.slow, pytest.mark.timing, pytest.mark.timeout(900)]

SERVER = [
    "+experiment=quickstart_serving",
    "sweep.grid.backend=[vllm_server]",
    "backend=vllm_server",
]


def started(config, model_path):
    """One launch of the server: its start-up columns, the server stopped (and this process's
    environment put back: starting vLLM sets its CUDA check switch here)."""
    backend = VLLMServerBackend(config.backend, model_path)
    with environment_restored():
        try:
            backend.start()
            return backend.startup()
        finally:
            backend.stop()


def test_a_warm_start_is_faster_than_the_cold_one_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    monkeypatch.delenv("VLLM_CPU_CI_ENV", raising=False)  # the suite's: no compile on CPU
    config = deployment_of(SERVER).config
    model_path = resolve_model_path(config.model)
    cold, warm = started(config, model_path), started(config, model_path)
    print({"cold": cold, "warm": warm})
    # the second start found the first's compiled model: it loaded it, or (vLLM 0.32 on CPU)
    # could not and compiled again, faster on the compiler's own caches
    assert cold[R.START_CACHE] == R.CACHE_COLD
    assert warm[R.START_CACHE] in (R.CACHE_WARM, R.CACHE_STALE)
    for start in (cold, warm):
        phases = [start[p] for p in R.START_PHASES]
        assert all(p is not None and p > 0 for p in phases), start  # every line was seen
        assert sum(phases) == pytest.approx(start[R.SERVER_START_S])
        assert start[R.START_WEIGHTS_S] is not None
        # vLLM's timer of its engine's set-up fits in the phase our clock gave it (which also
        # holds the engine core's steps between loading and profiling), up to a poll's 0.1 s
        assert start[R.START_ENGINE_REPORTED_S] <= start[R.START_ENGINE_S] + 0.25
    assert warm[R.START_ENGINE_S] < cold[R.START_ENGINE_S]  # it loaded what the cold one compiled
    assert warm[R.SERVER_START_S] < cold[R.SERVER_START_S]
