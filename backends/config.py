"""What every backend's config shares: its registry name, the resources of one deployment, checks.

Each backend module defines its own config dataclass beside its class, derived from
`BackendConfig`; `backends.config_classes` hands them to Hydra's ConfigStore as `<name>_schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from backends.lora import check_lora
from backends.process.argv import check_values
from sweep.core.errors import ConfigError, check_choice, check_positive
from sweep.core.missing import MISSING

# Config dtype names and what torch (and the engines built on it) call them.
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "auto": "auto"}
DTYPES = tuple(TORCH_DTYPES)
SERVER_APIS = ("completions", "chat")
# The deployment id of the task this process runs, exported by the trial runner while its backend
# lives (a launched container is labelled with it, so a later start can remove what a killed
# worker left behind).
DEPLOYMENT_ENV = "LLM_SWEEP_DEPLOYMENT_ID"


@dataclass
class BackendConfig:
    """Fields every backend shares: its registry name and the resources of one deployment."""

    name: str = MISSING
    num_gpus: int = 0
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        check_positive("backend", num_cpus=self.num_cpus)
        if self.num_gpus < 0:
            raise ConfigError(f"backend.num_gpus must be >= 0, got {self.num_gpus}")


@dataclass
class EngineConfig(BackendConfig):
    """What every in-process engine's config adds: how its prompts are phrased.

    `api: chat` gives each prompt the model's chat template, rendered as a chat server renders
    it: the ids the engine is handed include it (`sweep.datasets.chat`), as do the input
    lengths. None (the default; it hashes as before the field existed) or `completions`: the
    prompt as it is. The same key as the servers' `backend.api`, so one switch asks for chat.
    """

    api: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_api(self.api)


@dataclass
class LaunchedServerConfig(BackendConfig):
    """What every server the worker launches shares: where it listens, how long it may start.

    `host`: the address the server binds (loopback by default; the load generator runs beside
    it). `startup_timeout_s`: launch to healthy, after which the deployment fails; each server
    keeps its own default (a docker pull takes longer than a sim).
    """

    host: str = "127.0.0.1"
    startup_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("backend", startup_timeout_s=self.startup_timeout_s)
        check_values("backend", host=self.host)


@dataclass
class OpenAIServerConfig(LaunchedServerConfig):
    """A launched server with an OpenAI-compatible API: which endpoint its requests use.

    `api`: `completions` or `chat` (the load generator streams from `/v1/completions` or
    `/v1/chat/completions`); the sim's None hashes as before it had the field.
    """

    api: str | None = "completions"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_api(self.api)


@dataclass
class LoraServerConfig(OpenAIServerConfig):
    """A launched server that can serve LoRA adapters (`backends.lora`).

    `lora_adapters`: name -> path, served when any; `lora_count`: how many adapters the server
    loads (None: all; more than listed serves copies under names of their own). Each server
    adds its own limits (adapters a batch, rank).
    """

    lora_adapters: dict[str, str] = field(default_factory=dict)
    lora_count: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lora(self.lora_adapters, self.lora_count)


def check_api(api: str | None) -> None:
    """`backend.api` is None (the prompt as it is) or one of `SERVER_APIS`."""
    if api is not None:
        check_choice("backend", "api", api, SERVER_APIS)


def typed_names(config: Any) -> list[str]:
    """The typed settings of a config (every field but the free-form `extra_args`)."""
    return [f.name for f in fields(config) if f.name != "extra_args"]


def check_fraction(key: str, value: float | None) -> None:
    """`backend.<key>` is None or in (0, 1]."""
    if value is not None and not 0.0 < value <= 1.0:
        raise ConfigError(f"backend.{key} must be in (0, 1], got {value}")


def check_url(key: str, value: str | None) -> None:
    """`backend.<key>` is None or an http(s) URL."""
    if value is not None and not re.match(r"https?://[^\s/]+", value):
        raise ConfigError(f"backend.{key}={value!r} must be an http:// or https:// URL")
