"""The conversion cache: one atomic build per key, shared by concurrent builders."""

import threading

import pytest

from backends.models.cache import cache_key, cache_root, cached_build, local_checkpoint
from sweep.core.errors import BackendError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_root_and_key(cache_dir, tmp_path):
    assert cache_root("ct2") == cache_dir / "ct2"
    model = tmp_path / "model"
    model.mkdir()
    assert cache_key(str(model), q="int8") == cache_key(str(model) + "/", q="int8")
    assert cache_key(str(model), q="int8") != cache_key(str(model), q="float32")
    assert cache_key("org/name", q="int8") != cache_key("org/other", q="int8")


def test_builds_once_and_atomically(cache_dir):
    calls = []

    def build(out):
        calls.append(out)
        assert out.parent == cache_dir / "gguf" and out.name.startswith(".k1.")
        (out / "model.gguf").write_text("weights")

    first = cached_build("gguf", "k1", build, "test model")
    again = cached_build("gguf", "k1", build, "test model")
    assert first == again == cache_dir / "gguf" / "k1"
    assert (first / "model.gguf").read_text() == "weights"
    assert len(calls) == 1
    assert [p.name for p in (cache_dir / "gguf").iterdir() if p.is_dir()] == ["k1"]


def test_concurrent_builders_wait_for_the_first():
    calls, barrier = [], threading.Barrier(3)

    def build(out):
        calls.append(out)
        (out / "done").write_text("1")

    def worker():
        barrier.wait()
        cached_build("ct2", "shared", build, "test model")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_failed_build_leaves_nothing_and_is_one_line(cache_dir):
    def build(out):
        (out / "half").write_text("x")
        raise RuntimeError("disk full\nmore detail")

    with pytest.raises(BackendError, match="^converting test model failed: disk full$"):
        cached_build("ct2", "bad", build, "test model")
    assert [p.name for p in (cache_dir / "ct2").iterdir() if p.is_dir()] == []


def test_local_checkpoint_passes_directories_through(tmp_path):
    assert local_checkpoint(str(tmp_path)) == tmp_path
