"""Published request traces by name: where each lives, its sha256, and its copy in the cache.

`dataset.path=azure_conv_2023` (or another name of `CATALOG`) means the file as its owners
publish it: downloaded on first use into `$SWEEP_CACHE_DIR/traces/<file>` (written to a temporary
name and renamed, so a reader never sees half a file) and checked against the sha256 recorded
here, on every use (a copy that changed is refused). Where the published bytes could not be
read when the catalog was written (`sha256` None: the Azure 2024 traces, on Azure blob storage,
and Mooncake's tool-agent trace, too large for the snapshot they were read from), the copy is
used as it is and its sha256 is recorded with the results, like any trace's. Without a network,
one line says where to put the file. `SWEEP_TRACES_URL` replaces every file's folder (a mirror
of your own, `<url>/<file>`). `sweep.datasets.trace` resolves names through `local_copy`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backends.models.cache import cache_root
from sweep.core.errors import DatasetError

log = logging.getLogger(__name__)

CACHE_KIND = "traces"
MIRROR_ENV = "SWEEP_TRACES_URL"
TIMEOUT_S = 60.0
AZURE_2023 = (  # the commit that published them, so the bytes and the hash stay together
    "https://raw.githubusercontent.com/Azure/AzurePublicDataset/"
    "790921015d50dd6aae7f7e47f39ba0e235ad6b08/data/"
)
AZURE_2024 = "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace/"
MOONCAKE = (
    "https://raw.githubusercontent.com/kvcache-ai/Mooncake/"
    "3cca71daccf2a7afb8fe3f0295358f70e3a69fdb/FAST25-release/traces/"
)
AZURE_LICENCE, MOONCAKE_LICENCE = "CC-BY 4.0", "Apache 2.0"


@dataclass(frozen=True)
class PublishedTrace:
    """One published trace: its file name, the folder it is served from, its hash, licence."""

    file: str
    folder: str
    sha256: str | None  # None: not recorded here (see the module docstring)
    licence: str

    @property
    def url(self) -> str:
        """Where it is downloaded from: its own folder, or `$SWEEP_TRACES_URL`."""
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/') if mirror else self.folder.rstrip('/')}/{self.file}"


CATALOG: dict[str, PublishedTrace] = {
    "azure_code_2023": PublishedTrace(
        "AzureLLMInferenceTrace_code.csv", AZURE_2023,
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6", AZURE_LICENCE,
    ),
    "azure_conv_2023": PublishedTrace(
        "AzureLLMInferenceTrace_conv.csv", AZURE_2023,
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8", AZURE_LICENCE,
    ),
    "azure_code_2024": PublishedTrace(
        "AzureLLMInferenceTrace_code_1week.csv", AZURE_2024, None, AZURE_LICENCE
    ),
    "azure_conv_2024": PublishedTrace(
        "AzureLLMInferenceTrace_conv_1week.csv", AZURE_2024, None, AZURE_LICENCE
    ),
    "mooncake_conversation": PublishedTrace(
        "conversation_trace.jsonl", MOONCAKE,
        "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df", MOONCAKE_LICENCE,
    ),
    "mooncake_synthetic": PublishedTrace(
        "synthetic_trace.jsonl", MOONCAKE,
        "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131", MOONCAKE_LICENCE,
    ),
    "mooncake_toolagent": PublishedTrace("toolagent_trace.jsonl", MOONCAKE, None, MOONCAKE_LICENCE),
}  # fmt: skip


def cache_path(name: str) -> Path:
    """Where the published trace `name` is kept: `$SWEEP_CACHE_DIR/traces/<file>`."""
    return cache_root(CACHE_KIND) / CATALOG[name].file


def local_copy(name: str) -> str:
    """The path of a checked local copy of published trace `name`, downloaded on first use.

    Raises:
        DatasetError: one line: the download failed (saying where to put the file), or the
            copy's sha256 is not the published one.
    """
    trace, path = CATALOG[name], cache_path(name)
    if not path.is_file():
        _download(name, trace, path)
    stat = path.stat()
    _check(name, str(path), stat.st_mtime_ns, stat.st_size)
    return str(path)


def _download(name: str, trace: PublishedTrace, path: Path) -> None:
    log.info("downloading trace %s from %s to %s", name, trace.url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{trace.file}."
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=prefix, delete=False) as out:
            partial = Path(out.name)
            try:
                with urllib.request.urlopen(trace.url, timeout=TIMEOUT_S) as response:  # noqa: S310
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        digest = _sha256(partial)
        if trace.sha256 is not None and digest != trace.sha256:
            partial.unlink(missing_ok=True)
            raise DatasetError(_mismatch(name, trace.url, digest))
        partial.chmod(0o644)
        partial.replace(path)
    except (OSError, urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise DatasetError(
            f"trace {name}: cannot download {trace.url} ({reason}); put the file at {path}"
        ) from None


@functools.lru_cache(maxsize=16)
def _check(name: str, path: str, mtime_ns: int, size: int) -> None:
    """Refuse a copy whose sha256 is not the published one (once per version of the file)."""
    expected = CATALOG[name].sha256
    if expected is None:
        return
    digest = _sha256(Path(path))
    if digest != expected:
        raise DatasetError(_mismatch(name, path, digest))


def _mismatch(name: str, where: str, digest: str) -> str:
    return (
        f"trace {name}: {where} has sha256 {digest[:16]}..., not the published "
        f"{CATALOG[name].sha256[:16]}... (delete it to download it again)"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
