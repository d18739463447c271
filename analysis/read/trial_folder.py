"""The complete trials of a results folder, listed once: their folders, files and summary stamps.

A results folder is `<root>/<deployment_id>/<trial_id>/...`, and a trial is complete once its
summary.parquet exists (design.md, "Results layout"). `trial_folder` walks it once with
`os.scandir` and keeps, per complete trial, the names of its files and its summary's
modification time and size: the loaders (`analysis.read.load`) then find each kind of file, and the
per-trial cache (`analysis.read.trial_cache`) tells new and rewritten trials from those it holds,
without walking the folder again or asking the file system about each file. A report lists its
folder once and hands the listing to every loader; a folder of 10,000 trials is 10,000 small
directory reads and as many `stat` calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sweep.core import records as rec
from sweep.core.errors import SweepError

Stamp = tuple[int, int]  # a summary's modification time (ns) and size (bytes)


@dataclass(frozen=True)
class TrialFolder:
    """Every complete trial of one results folder, in path order, as listed."""

    root: Path
    trials: tuple[Path, ...]  # `<root>/<deployment_id>/<trial_id>`
    files: tuple[frozenset[str], ...]  # the names of each trial's files
    stamps: tuple[Stamp, ...]  # each trial's summary: modification time and size

    def keys(self) -> list[str]:
        """Each trial's folder relative to the root (`<deployment_id>/<trial_id>`)."""
        return [f"{trial.parent.name}/{trial.name}" for trial in self.trials]

    def paths(self, file_name: str, trial_ids: Iterable[str] | None = None) -> list[Path]:
        """`file_name` of every complete trial that has one (of `trial_ids` only, when given).

        An interrupted trial may have left other files without a summary; it is not listed.
        """
        wanted = None if trial_ids is None else set(trial_ids)
        return [
            trial / file_name
            for trial, names in zip(self.trials, self.files, strict=True)
            if file_name in names and (wanted is None or trial.name in wanted)
        ]


def trial_folder(results: str | Path | TrialFolder) -> TrialFolder:
    """The listing of a results folder (a listing is handed back as it is).

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    if isinstance(results, TrialFolder):
        return results
    root = Path(results)
    if not root.is_dir():
        raise SweepError(f"results folder not found: {root}")
    found = sorted(_complete(root))
    if not found:
        raise SweepError(
            f"no trial results in {root}: expected <deployment_id>/<trial_id>/{rec.SUMMARY_FILE}"
        )
    trials, files, stamps = zip(*found, strict=True)
    return TrialFolder(root, trials, files, stamps)


def _complete(root: Path) -> list[tuple[Path, frozenset[str], Stamp]]:
    """(folder, file names, summary stamp) of each trial folder holding a summary."""
    found = []
    for deployment in _folders(root):
        for trial in _folders(Path(deployment)):
            named = _entries(trial)
            summary = named.get(rec.SUMMARY_FILE)
            if summary is None or not summary.is_file():
                continue
            stat = summary.stat()
            found.append((Path(trial), frozenset(named), (stat.st_mtime_ns, stat.st_size)))
    return found


def _entries(path: str) -> dict[str, os.DirEntry]:
    """The entries of folder `path` by name (none where it cannot be read, or is gone)."""
    try:
        with os.scandir(path) as entries:
            return {entry.name: entry for entry in entries}
    except OSError:
        return {}


def _folders(path: Path) -> list[str]:
    """The sub-folders of `path` (none where it cannot be read)."""
    try:
        with os.scandir(path) as entries:
            return [entry.path for entry in entries if entry.is_dir()]
    except OSError:
        return []
