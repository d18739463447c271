"""One base for the launched servers' shared config fields, and the same checks for each.

Every backend that launches its own server (`backends.launched.LaunchedServerBackend`) has a
config derived from `LaunchedServerConfig`; those with an OpenAI API from `OpenAIServerConfig`,
those that serve LoRA adapters from `LoraServerConfig`. A bad shared value fails alike for each,
with one line naming the key, however the server is configured otherwise.
"""

from dataclasses import fields

import pytest

from backends import REGISTRY, backend_class
from backends.config import LaunchedServerConfig, LoraServerConfig, OpenAIServerConfig
from backends.launched import LaunchedServerBackend
from sweep.core.errors import ConfigError

LAUNCHED = sorted(n for n in REGISTRY if issubclass(backend_class(n), LaunchedServerBackend))
OPENAI = [n for n in LAUNCHED if issubclass(backend_class(n).config_class, OpenAIServerConfig)]
LORA = [n for n in LAUNCHED if issubclass(backend_class(n).config_class, LoraServerConfig)]


def test_every_launched_server_shares_one_base():
    assert LAUNCHED == ["llamacpp_server", "sglang_server", "sim", "tgi", "vllm_server"]
    for name in LAUNCHED:
        assert issubclass(backend_class(name).config_class, LaunchedServerConfig), name
    assert OPENAI == ["llamacpp_server", "sglang_server", "sim", "vllm_server"]
    assert LORA == ["sglang_server", "sim", "vllm_server"]


def test_each_field_is_declared_once_in_the_base():
    """The shared fields come from the base: no server declares host or LoRA fields again.

    A server may give a shared field its own default (`startup_timeout_s`, the sim's `api`).
    """
    shared = {"host", "lora_adapters", "lora_count"}
    for name in LAUNCHED:
        config = backend_class(name).config_class
        own = set(vars(config).get("__annotations__", {}))
        assert not own & shared, f"{name} declares {sorted(own & shared)} again"
        assert "host" in {f.name for f in fields(config)}


@pytest.mark.parametrize("name", LAUNCHED)
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"startup_timeout_s": 0}, "backend.startup_timeout_s must be > 0"),
        ({"startup_timeout_s": -5.0}, "backend.startup_timeout_s must be > 0"),
        ({"host": "127.0.0.1\n--evil"}, "backend.host"),
    ],
)
def test_a_bad_shared_value_is_one_line_for_every_server(name, values, message):
    with pytest.raises(ConfigError) as raised:
        backend_class(name).config_class(**values)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value).strip()


@pytest.mark.parametrize("name", OPENAI)
def test_the_api_is_checked_for_every_openai_server(name):
    config = backend_class(name).config_class
    with pytest.raises(ConfigError, match="backend.api"):
        config(api="grpc")
    assert config(api="chat").api == "chat"


@pytest.mark.parametrize("name", LORA)
def test_lora_fields_are_checked_for_every_lora_server(name):
    config = backend_class(name).config_class
    with pytest.raises(ConfigError, match="backend.lora_count is set but"):
        config(lora_count=2)
    with pytest.raises(ConfigError, match="backend.lora_count must be > 0"):
        config(lora_adapters={"a": "generated"}, lora_count=0)


def test_each_server_keeps_its_own_defaults():
    defaults = {n: backend_class(n).config_class() for n in LAUNCHED}
    assert {n: c.startup_timeout_s for n, c in defaults.items()} == {
        "llamacpp_server": 300.0,
        "sglang_server": 900.0,
        "sim": 30.0,
        "tgi": 1800.0,
        "vllm_server": 600.0,
    }
    assert {n: c.host for n, c in defaults.items()} == dict.fromkeys(LAUNCHED, "127.0.0.1")
    assert defaults["sim"].api is None  # hashes as before the sim had the field
    assert defaults["vllm_server"].api == "completions"
