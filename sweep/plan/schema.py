"""Hydra's view of the config tree: every group's schema registered in the ConfigStore.

Each option file of a group names its schema in its defaults list (`- hf_schema`), so unknown
keys and wrong types fail at composition. The backend schemas are derived from the backend
registry (`backends.config_classes`): a backend is listed once, beside its class.
"""

from __future__ import annotations

from backends import config_classes
from sweep.core.config import (
    ClipProxyConfig,
    ClusterConfig,
    Config,
    HardwareConfig,
    HFDatasetConfig,
    ImagesDatasetConfig,
    ModelConfig,
    MultiTurnDatasetConfig,
    OutputConfig,
    PromptsDatasetConfig,
    ProxyConfig,
    QualityConfig,
    RandomDatasetConfig,
    SearchConfig,
    SemanticCacheProxyConfig,
    SharedPrefixDatasetConfig,
    TraceDatasetConfig,
    TrackingConfig,
    WorkloadConfig,
)


def group_schemas() -> dict[str, dict[str, type]]:
    """`conf/<group>/<option>.yaml` lists `- <schema name>` in its defaults: name -> dataclass."""
    return {
        "model": {"model_schema": ModelConfig},
        "backend": {f"{name}_schema": cls for name, cls in config_classes().items()},
        "dataset": {
            "random_schema": RandomDatasetConfig,
            "prompts_schema": PromptsDatasetConfig,
            "hf_schema": HFDatasetConfig,
            "trace_schema": TraceDatasetConfig,
            "shared_prefix_schema": SharedPrefixDatasetConfig,
            "multi_turn_schema": MultiTurnDatasetConfig,
            "images_schema": ImagesDatasetConfig,
        },
        "workload": {"workload_schema": WorkloadConfig},
        "hardware": {"hardware_schema": HardwareConfig},
        "cluster": {"cluster_schema": ClusterConfig},
        "output": {"output_schema": OutputConfig},
        "tracking": {"tracking_schema": TrackingConfig},
        "search": {"search_schema": SearchConfig},
        "proxy": {
            "proxy_schema": ProxyConfig,
            "clip_schema": ClipProxyConfig,
            "semantic_cache_schema": SemanticCacheProxyConfig,
        },
        "quality": {"quality_schema": QualityConfig},
    }


_STORED: list[dict[str, dict[str, type]]] = []  # the schemas this process has stored


def register_schemas() -> None:
    """Store the root schema and every group schema in Hydra's ConfigStore (idempotent).

    Storing converts each dataclass to an OmegaConf tree (about 0.05 CPU-s a composition), so a
    process that composes many times stores once, and again only when the registry changed.
    """
    from hydra.core.config_store import ConfigStore  # not at the top: workers need no Hydra

    wanted = group_schemas()
    if _STORED and _STORED[0] == wanted:
        return
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, schemas in wanted.items():
        for name, node in schemas.items():
            cs.store(group=group, name=name, node=node)
    _STORED[:] = [wanted]
