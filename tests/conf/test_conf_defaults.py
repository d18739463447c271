"""Group files in conf/ hold only what differs from their schema's defaults (style.md, rule 2).

A key that repeats the dataclass default (or, in a variant file such as
`backend/vllm_tuning/*.yaml`, the value its parent file already sets) hides the default: the two
can then drift apart silently. This test fails on any such key.
"""

import dataclasses
from pathlib import Path

import omegaconf
import pytest
import yaml

from sweep.core.missing import MISSING
from sweep.plan.schema import group_schemas

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUP_FILES = sorted(
    p for p in CONF.glob("*/**/*.yaml") if p.relative_to(CONF).parts[0] != "experiment"
)


def defaults_of(schema: type) -> dict:
    values = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return {k: v for k, v in values.items() if v != MISSING}


def test_missing_is_omegaconfs_marker():
    """The schemas' required-field marker is OmegaConf's, without importing OmegaConf."""
    assert MISSING == omegaconf.MISSING
    required = omegaconf.OmegaConf.structured(group_schemas()["hardware"]["hardware_schema"])
    assert omegaconf.OmegaConf.is_missing(required, "name")


def baseline_of(path: Path, conf: Path = CONF) -> dict:
    """What a file's keys land on: its schema's defaults, overlaid with its parent file's keys."""
    group = path.relative_to(conf).parts[0]
    data = yaml.safe_load(path.read_text()) or {}
    values: dict = {}
    for entry in data.get("defaults", []):
        if isinstance(entry, str) and entry.endswith("_schema"):
            values.update(defaults_of(group_schemas()[group][entry]))
        elif isinstance(entry, str) and entry.startswith("/"):
            parent = conf / (entry.split("@")[0].lstrip("/") + ".yaml")
            values.update(baseline_of(parent, conf))
            values.update(own_keys(parent))
    return values


def own_keys(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in data.items() if k != "defaults"}


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_every_group_file_is_checked():
    assert len(GROUP_FILES) > 30
    assert {p.relative_to(CONF).parts[0] for p in GROUP_FILES} >= {
        "backend", "workload", "dataset", "model", "hardware", "cluster", "tracking", "output"
    }  # fmt: skip


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_group_file_repeats_no_default(path):
    baseline = baseline_of(path)
    assert baseline, f"{path.relative_to(CONF)} names no schema or parent in its defaults"
    repeated = [k for k, v in own_keys(path).items() if k in baseline and same(v, baseline[k])]
    assert not repeated, f"{path.relative_to(CONF)} repeats its defaults: {', '.join(repeated)}"


def test_the_check_catches_a_repeated_default(tmp_path):
    fake = tmp_path / "conf"
    (fake / "backend" / "variants").mkdir(parents=True)
    hf = fake / "backend" / "hf.yaml"
    hf.write_text("defaults:\n  - hf_schema\nname: hf\ndtype: fp16\nnum_cpus: 1\n")
    variant = fake / "backend" / "variants" / "v.yaml"
    variant.write_text(
        "defaults:\n  - /backend/hf@_here_\n  - _self_\ndtype: fp16\nmode: per_request\n"
    )
    repeated = [k for k, v in own_keys(hf).items() if same(v, baseline_of(hf, fake)[k])]
    assert repeated == ["name", "num_cpus"]
    base = baseline_of(variant, fake)
    assert [k for k, v in own_keys(variant).items() if same(v, base[k])] == ["dtype", "mode"]
