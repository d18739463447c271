"""The settings `analysis.tracking.tracking.Tracker` starts W&B runs with.

`resolve_mode`: online or offline, the configured mode, else whether there are credentials (it
reads the environment and the netrc file only; no request is sent). `QUIET_SETTINGS`: what runs
leave out. `sweep_tracking`: the tracking config a results folder's sweep.yaml recorded.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import yaml

from sweep.core import records as rec
from sweep.core.config import TrackingConfig

DEFAULT_HOST = "https://api.wandb.ai"
# No console capture, code, git, requirements or machine metadata: the sweep's own output stays
# readable, and nothing from the environment (where secrets live) is copied into the run.
QUIET_SETTINGS = {
    "silent": True,
    "console": "off",
    "save_code": False,
    "disable_git": True,
    "x_save_requirements": False,
    "x_disable_meta": True,
    "x_disable_stats": True,
    "x_disable_machine_info": True,
    "disable_job_creation": True,
    "init_timeout": 30.0,  # an outage costs one wait, then the tracker is off
}


def resolve_mode(configured: str | None) -> str:
    """The configured mode, else `WANDB_MODE`, else online with credentials, offline without."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_credentials() else "offline"


def has_credentials() -> bool:
    """Whether `WANDB_API_KEY` is set or the netrc file has a password for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def sweep_tracking(results_dir: str | Path, project: str) -> TrackingConfig:
    """W&B tracking as the folder's sweep.yaml set it (its layout, entity), into `project`."""
    path = Path(results_dir) / rec.SWEEP_YAML
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    saved = ((meta or {}).get("config") or {}).get("tracking") or {}
    return TrackingConfig(
        name="wandb",
        project=project,
        entity=saved.get("entity"),
        runs=saved.get("runs", "auto"),
        group_above=saved.get("group_above", TrackingConfig.group_above),
    )
