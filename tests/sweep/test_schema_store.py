"""The schemas are stored in Hydra's ConfigStore once a process, and again when backends change."""

from hydra.core.config_store import ConfigStore

import backends
from sweep.plan.plan import build_plan
from sweep.plan.schema import register_schemas


def stores(monkeypatch) -> list[str]:
    """The names of ours ConfigStore.store is asked to store from now on (Hydra's own, under
    `hydra/`, are stored by each initialisation)."""
    seen: list[str] = []
    real = ConfigStore.store

    def counting(self, name, node, group=None, package=None, provider=None):
        if not (group or "").startswith("hydra"):
            seen.append(f"{group}/{name}" if group else name)
        return real(self, name, node, group=group, package=package, provider=provider)

    monkeypatch.setattr(ConfigStore, "store", counting)
    return seen


def test_composing_again_stores_nothing_and_a_new_backend_is_stored(monkeypatch):
    register_schemas()
    seen = stores(monkeypatch)
    assert len(build_plan(["+experiment=quickstart"]).trials) == 20
    register_schemas()
    assert seen == []  # the schemas of the first call are still there

    monkeypatch.setitem(backends.REGISTRY, "sim_copy", backends.REGISTRY["sim"])
    try:
        register_schemas()
        assert "backend/sim_copy_schema" in seen and "config_schema" in seen
        assert "sim_copy_schema.yaml" in ConfigStore.instance().repo["backend"]
    finally:
        ConfigStore.instance().repo["backend"].pop("sim_copy_schema.yaml", None)
    monkeypatch.undo()  # the registry as it was: its schemas are stored again, once
    seen = stores(monkeypatch)
    register_schemas()
    register_schemas()
    assert seen.count("config_schema") == 1
