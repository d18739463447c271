"""The lazy backend registry: every backend name, greppable in one place.

Values are `"module:Class"` strings so that a heavy engine (vLLM, CTranslate2, ...) is imported
only inside the Ray task of a deployment that uses it. The key is also the name of the config
option (`conf/backend/<key>.yaml`) and of the module (`backends/<key>.py`). Each backend class
names its config dataclass (`config_class`), defined beside it; `config_classes` hands those to
Hydra's ConfigStore. Backend modules import their engine only in `start`, so reading the configs
imports no engine.
"""

from __future__ import annotations

import pkgutil

from sweep.core.errors import ConfigError

REGISTRY: dict[str, str] = {
    "hf": "backends.hf:HFBackend",
    "sim": "backends.sim:SimBackend",
    "vllm_server": "backends.vllm_server:VLLMServerBackend",
    "vllm": "backends.vllm:VLLMBackend",
    "tgi": "backends.tgi:TGIBackend",
    "openai": "backends.openai:OpenAIBackend",
    "ctranslate2": "backends.ctranslate2:CTranslate2Backend",
    "llamacpp": "backends.llamacpp:LlamaCppBackend",
    "exllamav2": "backends.exllamav2:ExLlamaV2Backend",
    "llamacpp_server": "backends.llamacpp_server:LlamaCppServerBackend",
    "sglang_server": "backends.sglang_server:SGLangServerBackend",
}


def backend_class(name: str) -> type:
    """Import and return the backend class registered under `name`."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; choose one of: {', '.join(sorted(REGISTRY))}"
        ) from None
    return pkgutil.resolve_name(target)


def config_classes() -> dict[str, type]:
    """Every backend's config dataclass by registry name (imports the modules, not the engines)."""
    return {name: backend_class(name).config_class for name in REGISTRY}
