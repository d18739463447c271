"""The GPU start-up paths of the in-process engines, decided on a CPU machine (issue 18).

No GPU is here, so where a test needs one it is simulated, and the test says so: torch's CUDA
entry points are replaced by recorders that answer as one GPU would. Everything else is real:
the real `vllm` import, the real llama.cpp build of this machine, the real package metadata.
"""

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

from backends.exllamav2 import ExLlamaV2Backend, ExLlamaV2BackendConfig
from backends.llamacpp import LlamaCppBackend, LlamaCppBackendConfig
from backends.vllm import VLLMBackend, VLLMBackendConfig
from backends.vllm_server import VLLMServerBackend, VLLMServerConfig
from sweep.core.errors import BackendError, MissingExtraError

REPO = Path(__file__).resolve().parents[2]
EXTRAS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
SUFFIX_CONFIGS = sorted((REPO / "conf" / "backend" / "vllm_tuning").glob("c[5-8]_*.yaml"))


def extra_requires(extra: str, package: str) -> str | None:
    """The requirement of `package` in `extra` of pyproject.toml (None when it is not there)."""
    return next((r for r in EXTRAS[extra] if r.replace("_", "-").startswith(package)), None)


# --- item 2: in-process vLLM touches no CUDA before vLLM is imported; start method set ------

# Runs in a fresh interpreter, so that `vllm` is not imported yet. A GPU is simulated: torch's
# CUDA entry points answer as one GPU would and record, for each call, whether vLLM had been
# imported. The engine itself cannot run on a simulated GPU, so `vllm.LLM` is replaced by a
# recorder of what it was given and of the start method vLLM would read.
ORDER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, types
    import torch

    calls = []

    def recorder(name, answer):
        def call(*args, **kwargs):
            calls.append({"name": name, "vllm_imported": "vllm" in sys.modules,
                          "nvml_check": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")})
            return answer
        return call

    for name, answer in [("is_available", True), ("device_count", 1), ("init", None),
                         ("_lazy_init", None), ("current_device", 0), ("set_device", None),
                         ("get_device_name", "NVIDIA L4"), ("get_device_capability", (8, 9)),
                         ("mem_get_info", (23 * 2**30, 24 * 2**30))]:
        setattr(torch.cuda, name, recorder(name, answer))
    if hasattr(torch._C, "_cuda_getDeviceCount"):  # a CUDA build; its presence alone means one
        torch._C._cuda_getDeviceCount = recorder("_cuda_getDeviceCount", 1)

    seen = {}

    class RecordingLLM:
        def __init__(self, **kwargs):
            seen["kwargs"] = sorted(kwargs)
            seen["start_method"] = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")

    engine = types.ModuleType("vllm.entrypoints.llm")
    engine.LLM = RecordingLLM
    sys.modules["vllm.entrypoints.llm"] = engine  # what `vllm.LLM` resolves to, lazily

    from backends.vllm import VLLMBackend, VLLMBackendConfig

    assert "vllm" not in sys.modules
    backend = VLLMBackend(VLLMBackendConfig(num_gpus=1), "facebook/opt-125m")
    backend.start()
    backend.stop()  # removes the engine's socket folder
    print("RESULT " + json.dumps({"calls": calls, **seen}))
    """
)


def test_vllm_start_touches_no_cuda_before_vllm_and_sets_the_start_method():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTORCH_NVML"))}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", ORDER_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    calls = result["calls"]
    assert calls, "the backend never asked whether a GPU is there"
    early = [c["name"] for c in calls if not c["vllm_imported"]]
    assert early == [], f"CUDA touched before vLLM was imported: {early}"
    # Once vLLM is imported, torch's availability check asks NVML, which sets no fork guard.
    assert {c["nvml_check"] for c in calls if c["name"] == "is_available"} == {"1"}
    assert result["start_method"] == "spawn"
    assert "kv_cache_memory_bytes" not in result["kwargs"]  # it took the GPU path


# In a fresh interpreter, as a Ray worker starts a deployment: nothing imported vLLM before.
GPU_START_SCRIPT = textwrap.dedent(
    """
    import sys
    from backends.base import GenRequest
    from backends.models.tiny import ensure_tiny_model
    from backends.vllm import VLLMBackend, VLLMBackendConfig

    config = VLLMBackendConfig(num_gpus=1, max_model_len=512, gpu_memory_utilization=0.3)
    backend = VLLMBackend(config, str(ensure_tiny_model(sys.argv[1])))
    backend.start()
    try:
        steps = []
        request = GenRequest(0, "", (1, 2, 3), 5)
        result = backend.generate([request], lambda idx, n: steps.append(n))[0]
        print("RESULT", result.output_tokens, sum(steps))
    finally:
        backend.stop()
    """
)


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_vllm_starts_on_cuda_in_a_fresh_process(tmp_path):
    pytest.importorskip("vllm", reason="needs the vllm extra")  # a missing install, not a pass
    done = subprocess.run(
        [sys.executable, "-c", GPU_START_SCRIPT, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert "Cannot re-initialize CUDA" not in done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT 5 5" in done.stdout


# --- item 3: suffix decoding needs arctic-inference, named at start ------------------------


def arctic_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("arctic_inference") is not None


def test_suffix_decoding_configs_fail_at_start_naming_the_extra(monkeypatch):
    if arctic_installed():
        pytest.skip("arctic-inference is installed here: the error case cannot happen")
    assert len(SUFFIX_CONFIGS) == 4
    launched = []
    for path in SUFFIX_CONFIGS:
        option = yaml.safe_load(path.read_text())
        assert option["speculative_config"]["method"] == "suffix"
        config = VLLMServerConfig(speculative_config=option["speculative_config"])
        backend = VLLMServerBackend(config, "/no/such/model")
        monkeypatch.setattr(backend._server, "launch", lambda *a, **k: launched.append(a))
        with pytest.raises(MissingExtraError) as err:
            backend.start()
        message = str(err.value)
        assert "\n" not in message
        assert "arctic-inference" in message and "'.[vllm]'" in message, message
        assert launched == [], f"{path.name}: the server was launched anyway"
    # The extra the message names does install it.
    assert extra_requires("vllm", "arctic-inference")


def test_in_process_vllm_suffix_decoding_fails_before_the_engine_starts():
    if arctic_installed():
        pytest.skip("arctic-inference is installed here: the error case cannot happen")
    spec = {"method": "suffix", "num_speculative_tokens": 8}
    backend = VLLMBackend(VLLMBackendConfig(engine_kwargs={"speculative_config": spec}), "unused")
    with pytest.raises(MissingExtraError, match=r"arctic-inference.*'\.\[vllm\]'"):
        backend.start()
    assert backend._llm is None


def test_suffix_decoding_passes_the_check_once_arctic_inference_is_there(tmp_path, monkeypatch):
    package = tmp_path / "arctic_inference"
    package.mkdir()
    (package / "__init__.py").write_text("")  # found by the same lookup vLLM makes
    monkeypatch.syspath_prepend(str(tmp_path))
    from backends.vllm_server import require_engine_features

    require_engine_features({"method": "suffix", "num_speculative_tokens": 16})
    require_engine_features({"method": "ngram", "num_speculative_tokens": 4})
    require_engine_features(None)


# --- item 10: GPU layers asked of a CPU-only llama.cpp build -------------------------------


def test_gpu_layers_on_a_cpu_only_llamacpp_build_fail_at_start(model_dir, cache_dir):
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build offloads to a GPU")
    backend = LlamaCppBackend(LlamaCppBackendConfig(n_gpu_layers=-1), model_dir)
    with pytest.raises(BackendError) as err:
        backend.start()
    message = str(err.value)
    assert "\n" not in message
    assert "n_gpu_layers=-1" in message and "GGML_CUDA=on" in message, message
    assert err.value.kind == "backend_start_failed"
    assert getattr(backend, "llm", None) is None  # nothing loaded on the CPU instead
    backend.stop()
    # No GPU layers asked: the same build serves on the CPU as before.
    with LlamaCppBackend(LlamaCppBackendConfig(n_gpu_layers=0), model_dir) as cpu:
        assert cpu.llm is not None


# --- item 11: exllamav2's paged cache needs flash-attn >= 2.5.7 ----------------------------


@pytest.fixture
def one_gpu(monkeypatch):
    """A GPU is simulated (none is here): torch reports one CUDA device of `capability`."""
    import torch

    capability = {"value": (8, 9)}  # an L4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability["value"])
    monkeypatch.delitem(sys.modules, "exllamav2", raising=False)
    return capability


def fake_distribution(root: Path, name: str, version: str) -> None:
    """Installed-package metadata for `name` (what `importlib.metadata` reads), no code."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def flash_attn_installed() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def start_error(config: ExLlamaV2BackendConfig) -> Exception:
    backend = ExLlamaV2Backend(config, "TheBloke/Llama-2-7B-GPTQ")
    with pytest.raises((BackendError, MissingExtraError)) as err:
        backend.start()
    backend.stop()
    return err.value


def test_exllamav2_paged_cache_without_flash_attn_fails_naming_it(one_gpu):
    if flash_attn_installed():
        pytest.skip("flash-attn is installed here: the error case cannot happen")
    error = start_error(ExLlamaV2BackendConfig())  # the shipped default: paged
    message = str(error)
    assert isinstance(error, BackendError) and error.kind == "backend_start_failed"
    assert "\n" not in message
    assert "flash-attn>=2.5.7" in message and "'.[exllamav2]'" in message, message
    assert "backend.paged=false" in message
    assert "exllamav2" not in sys.modules  # checked before the extension is built
    assert extra_requires("exllamav2", "flash-attn") == "flash-attn>=2.5.7"


def test_exllamav2_flash_attn_too_old_or_gpu_too_old(one_gpu, tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    fake_distribution(old, "flash-attn", "2.5.6")
    fake_distribution(new, "flash-attn", "2.8.3")
    monkeypatch.syspath_prepend(str(old))
    message = str(start_error(ExLlamaV2BackendConfig()))
    assert "flash-attn>=2.5.7" in message and "2.5.6 is installed" in message, message
    monkeypatch.syspath_prepend(str(new))  # found first now
    one_gpu["value"] = (7, 5)  # a T4: flash-attn's kernels need compute capability 8.0
    message = str(start_error(ExLlamaV2BackendConfig()))
    assert "compute capability 7.5" in message and "backend.paged=false" in message, message
    if exllamav2_installed():
        return  # importing it would build its CUDA extension for the simulated GPU
    one_gpu["value"] = (8, 0)  # an A100 with a recent flash-attn: the check passes, and the
    error = start_error(ExLlamaV2BackendConfig())  # start goes on to import exllamav2
    assert isinstance(error, MissingExtraError) and "'exllamav2'" in str(error)


def test_exllamav2_unpaged_needs_no_flash_attn(one_gpu):
    if exllamav2_installed():
        pytest.skip("importing exllamav2 would build its CUDA extension for the simulated GPU")
    error = start_error(ExLlamaV2BackendConfig(paged=False))
    assert isinstance(error, MissingExtraError) and "'exllamav2'" in str(error)


def exllamav2_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("exllamav2") is not None
