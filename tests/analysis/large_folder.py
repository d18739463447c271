"""A large results folder for the analysis tests: the reference sweep's trials written as repeats.

Each reference trial (`data/ref_sweep`) is written again through the real writer
(`scripts.bench.results_folder.copy_of`, `ResultStore.write_trial`) with ids, labels and repeat
indices of its own, so a test can grow a folder past the size where the report pools it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq

from scripts.bench.results_folder import copy_of
from sweep.core import records as rec
from sweep.core.results import ResultStore, TrialFiles

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"


def ref_files() -> list[TrialFiles]:
    """The reference sweep's trials as a worker hands them to the driver."""
    found = []
    for summary in sorted(REF.glob(f"*/*/{rec.SUMMARY_FILE}")):
        folder = summary.parent
        read = {
            name: pq.read_table(folder / file)
            for name, file in (("requests", rec.REQUESTS_FILE), ("timeseries", rec.TIMESERIES_FILE))
            if (folder / file).is_file()
        }
        found.append(TrialFiles(
            trial_id=folder.name, deployment_id=folder.parent.name,
            summary=pq.read_table(summary),
            requests=read.get("requests", rec.REQUESTS_SCHEMA.empty_table()),
            timeseries=read.get("timeseries", rec.TIMESERIES_SCHEMA.empty_table()),
            trial_yaml="",
        ))  # fmt: skip
    return found


def write_copies(store: ResultStore, copies: range) -> None:
    """Repeats `copies` of every reference trial, with ids and labels of their own."""
    for files in ref_files():
        label = files.summary.column(rec.LABEL)[0].as_py()
        for k in copies:
            spec = SimpleNamespace(trial_id=f"{files.trial_id[:8]}{k:04d}",
                                   deployment_id=files.deployment_id,
                                   label=f"{label}-r{k}", repeat=k)  # fmt: skip
            store.write_trial(copy_of(files, spec))
