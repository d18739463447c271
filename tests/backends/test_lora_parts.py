"""LoRA adapters without a server: the generated adapter's format, which adapters a server loads,
the flags each server gets, the bad-input lines, and how requests are assigned and phrased."""

import json
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file

from backends.base import GenRequest
from backends.lora import resolve_adapters, served_adapters, vllm_rank
from backends.models.tiny_lora import GeneratedSpec, ensure_tiny_lora
from backends.sglang_server import SGLangServerBackend, SGLangServerConfig
from backends.vllm_server import VLLMServerBackend, VLLMServerConfig
from sweep.core.config import WorkloadConfig
from sweep.core.errors import BackendError, ConfigError, DatasetError
from sweep.datasets.prompt import Prompt, with_adapters
from sweep.loadgen.adapters import assign_adapters, zipf_weights
from sweep.loadgen.http import Endpoint, _body
from sweep.plan.plan import build_plan


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Generated adapters go into this test's own cache."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_a_generated_adapter_is_peft_lora_of_the_configured_rank_and_modules(cache):
    path = ensure_tiny_lora(GeneratedSpec.parse("generated:rank=4:targets=q_proj+down_proj:seed=3"))
    config = json.loads((path / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["target_modules"]) == (
        "LORA",
        4,
        ["q_proj", "down_proj"],
    )
    tensors = load_file(str(path / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 2 * 2  # layers x modules x (A, B)
    a = tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (4, 128) and b.shape == (128, 4)  # rank x in, out x rank
    down = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"]
    assert down.shape == (128, 4) and np.abs(b).sum() > 0  # B is not zero: the output changes
    other = ensure_tiny_lora(GeneratedSpec.parse("generated:rank=4:targets=q_proj+down_proj"))
    assert other != path
    q_a = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    assert not np.allclose(load_file(str(other / "adapter_model.safetensors"))[q_a], a)  # seed


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("generated:rank=0", "rank must be > 0"),
        ("generated:targets=lm_head", "unknown target module 'lm_head'"),
        ("generated:alpha=2", "is not rank=R, targets=a\\+b or seed=S"),
    ],
)
def test_a_bad_generated_spec_is_one_line(spec, says):
    with pytest.raises(ConfigError, match=says) as info:
        GeneratedSpec.parse(spec)
    assert "\n" not in str(info.value)


def test_a_count_past_the_listed_adapters_serves_named_copies():
    listed = {"a": "/x", "b": "/y"}
    assert served_adapters(listed, None) == listed
    assert served_adapters(listed, 1) == {"a": "/x"}
    assert served_adapters(listed, 5) == {
        "a": "/x",
        "b": "/y",
        "a-2": "/x",
        "b-2": "/y",
        "a-3": "/x",
    }


def test_an_adapter_path_that_does_not_exist_is_one_line(cache, tmp_path):
    with pytest.raises(BackendError) as info:
        resolve_adapters({"good": "generated", "gone": str(tmp_path / "nowhere")}, None)
    assert str(info.value) == f"backend.lora_adapters.gone: {tmp_path / 'nowhere'} does not exist"
    with pytest.raises(BackendError, match="holds no adapter_config.json"):
        resolve_adapters({"empty": str(tmp_path)}, None)


def test_lora_settings_are_checked_when_composed():
    base = ["+experiment=lora_adapters"]
    with pytest.raises(ConfigError, match="backend.lora_count must be > 0"):
        build_plan([*base, "sweep.grid={}", "backend.lora_count=0"])
    with pytest.raises(ConfigError, match="adapter name 'a/b'"):
        build_plan([*base, "+backend.lora_adapters={a/b: generated}"])
    with pytest.raises(ConfigError, match="workload.lora_assignment"):
        build_plan([*base, "workload.lora_assignment=roundrobin"])


def test_the_lora_experiment_sweeps_the_number_of_adapters_one_server_each():
    plan = build_plan(["+experiment=lora_adapters"])
    counts = sorted(d.config.backend.lora_count for d in plan.deployments)
    assert counts == [1, 3] and len({d.deployment_id for d in plan.deployments}) == 2


def test_vllm_server_gets_enable_lora_and_every_adapter_as_one_argument(cache):
    config = VLLMServerConfig(lora_adapters={"a": "generated", "b": "generated:rank=16"})
    backend = VLLMServerBackend(config, "/m")
    assert backend.adapters == ("a", "b")
    backend._adapters = resolve_adapters(config.lora_adapters, None)  # what `start` does
    argv = backend.argv(8000)
    assert "--enable-lora" in argv
    modules = argv[argv.index("--lora-modules") + 1 : argv.index("--lora-modules") + 3]
    assert [json.loads(m)["name"] for m in modules] == ["a", "b"]
    assert all(
        pathlib.Path(json.loads(m)["path"], "adapter_config.json").is_file() for m in modules
    )
    assert argv[argv.index("--max-loras") + 1] == "2"  # as many as are served
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # the largest adapter's
    assert "--enable-lora" not in VLLMServerBackend(VLLMServerConfig(), "/m").argv(8000)
    assert vllm_rank(9) == 16 and vllm_rank(8) == 8


def test_sglang_server_gets_its_own_lora_flags(cache):
    config = SGLangServerConfig(lora_adapters={"a": "generated"}, max_loras_per_batch=4)
    backend = SGLangServerBackend(config, "/m")
    backend._adapters = resolve_adapters(config.lora_adapters, None)
    argv = backend.argv(30000)
    assert "--enable-lora" in argv and argv[argv.index("--max-loras-per-batch") + 1] == "4"
    assert argv[argv.index("--lora-paths") + 1] == f"a={backend._adapters['a']}"


def test_a_request_names_its_adapter_as_each_server_expects():
    request = GenRequest(0, "hi", (), 8, adapter="sql")
    vllm = _body(Endpoint("http://h", "base"), request)
    assert vllm["model"] == "sql"
    sglang = _body(Endpoint("http://h", "base", adapter_field="lora_path"), request)
    assert (sglang["model"], sglang["lora_path"]) == ("base", "sql")
    assert _body(Endpoint("http://h", "base"), GenRequest(0, "hi", (), 8))["model"] == "base"


def prompts(n, adapter=None):
    return [Prompt(f"p{i}", (), 0, adapter=adapter) for i in range(n)]


def test_zipf_assignment_follows_its_skew_and_uniform_is_even():
    names = ("a", "b", "c")
    zipf = WorkloadConfig(name="closed_loop", lora_assignment="zipf", lora_skew=1.0)
    picks = assign_adapters(names, prompts(6000), zipf)
    shares = np.array([picks.count(n) for n in names]) / len(picks)
    assert np.allclose(shares, zipf_weights(3, 1.0), atol=0.02)  # 6/11, 3/11, 2/11
    assert picks == assign_adapters(names, prompts(6000), zipf)  # the seed decides
    even = assign_adapters(names, prompts(6000), WorkloadConfig(name="closed_loop"))
    assert np.allclose([even.count(n) / 6000 for n in names], 1 / 3, atol=0.02)
    assert assign_adapters((), prompts(3), zipf) == [None] * 3  # no adapters: the base model


def test_dataset_assignment_takes_each_prompts_own_adapter_and_refuses_unknown_ones():
    workload = WorkloadConfig(name="closed_loop", lora_assignment="dataset")
    named = with_adapters(prompts(3), ["b", " a ", "b"], "adapter")
    assert assign_adapters(("a", "b"), named, workload) == ["b", "a", "b"]
    with pytest.raises(DatasetError, match="asks for adapter 'z', not served"):
        assign_adapters(("a", "b"), prompts(2, adapter="z"), workload)
    with pytest.raises(DatasetError, match="prompt 0 names no adapter"):
        assign_adapters(("a",), prompts(1), workload)
    with pytest.raises(ConfigError, match="set backend.lora_adapters"):
        assign_adapters((), named, workload)
    with pytest.raises(DatasetError, match="row 2: column 'adapter' names no LoRA adapter"):
        with_adapters(prompts(2), ["a", ""], "adapter")
