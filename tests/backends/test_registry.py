"""The registry lists each backend once; configs are read without importing any engine."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from backends import REGISTRY, backend_class, config_classes
from backends.base import Backend
from backends.config import BackendConfig
from sweep.plan.schema import group_schemas

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("torch", "transformers", "vllm", "ctranslate2", "llama_cpp", "exllamav2", "docker")


def test_every_backend_owns_its_config_beside_its_class():
    for name, cls in config_classes().items():
        backend = backend_class(name)
        assert issubclass(backend, Backend)
        assert issubclass(cls, BackendConfig) and dataclasses.is_dataclass(cls)
        assert cls.__module__ == backend.__module__ == f"backends.{name}"
        name_field = {f.name: f for f in dataclasses.fields(cls)}["name"]
        assert name_field.default == name  # the registry key, module and config name agree
        assert (REPO / "conf" / "backend" / f"{name}.yaml").is_file()


def test_hydra_schemas_are_derived_from_the_registry():
    assert group_schemas()["backend"] == {
        f"{name}_schema": cls for name, cls in config_classes().items()
    }
    assert len(config_classes()) == len(REGISTRY)


def test_reading_every_config_imports_no_engine():
    code = (
        "import sys, json; from sweep.plan.schema import register_schemas; register_schemas(); "
        "from backends import config_classes; config_classes(); "
        f"print(json.dumps(sorted(m for m in {ENGINES!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []
