"""Fixtures shared by the backend tests."""

import pytest

from backends.models.tiny import ensure_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A private copy of the tiny model for one test module, as a path string."""
    return str(ensure_tiny_model(tmp_path_factory.mktemp("models")))


@pytest.fixture
def cache_dir(tmp_path_factory, monkeypatch):
    """`SWEEP_CACHE_DIR` shared by the whole session, so that each model converts once."""
    root = tmp_path_factory.getbasetemp() / "engine-cache"
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(root))
    return root
