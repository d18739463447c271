"""Atomic result I/O: the only module that writes files under `results/<sweep>/`.

Layout: `<root>/<sweep>/sweep.yaml`, `<root>/<sweep>/<deployment_id>/backend.log` (and
`backend.{helper,retry}-<n>.log`, the logs of its later tasks' servers: `records.task_log_name`),
`<root>/<sweep>/<deployment_id>/<trial_id>/{requests,summary,timeseries,server_metrics,
timeslices}.parquet, trial.yaml`, `stages.parquet` for a trial with `workload.stages` and
`adapters.parquet` for one whose requests went to LoRA adapters;
`<root>/<sweep>/<deployment_id>/quality.parquet` with `quality=on`.
Every file is written under a temporary name and renamed; `summary.parquet` is written last, so
a trial is complete if and only if its summary exists. `output.dir` may be a local path or any
URI `pyarrow.fs` understands (s3://, gs://), so workers never need a shared file system.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweep.core import records as R
from sweep.core.errors import ResultsNotSaved


@dataclass(frozen=True)
class TrialFiles:
    """The tables and text of one finished trial, as a worker hands them to the driver.

    `server_metrics` is the server's /metrics capture (`records.SERVER_METRICS_SCHEMA`), empty
    where the backend has no server or the server gave none. `timeslices` holds the trial's
    metrics per time slice (`sweep.core.timeslices`), `stages` one summary row per stage of a
    staged trial (`sweep.core.stage_summary`; None without stages), `adapters` one summary row
    per LoRA adapter the trial's requests asked for (`sweep.core.adapter_summary`; None: none).
    """

    trial_id: str
    deployment_id: str
    summary: pa.Table
    requests: pa.Table
    timeseries: pa.Table
    trial_yaml: str
    backend_log: str | None = None
    server_metrics: pa.Table = field(default_factory=R.SERVER_METRICS_SCHEMA.empty_table)
    timeslices: pa.Table = field(default_factory=R.TIMESLICES_SCHEMA.empty_table)
    stages: pa.Table | None = None
    adapters: pa.Table | None = None


@dataclass(frozen=True)
class QualityFiles:
    """A deployment's scores on the quality text set (`records.QUALITY_SCHEMA`), written once."""

    deployment_id: str
    table: pa.Table


@dataclass(frozen=True)
class BackendLog:
    """A deployment's backend log so far, sent after its last trial (kept as backend.log)."""

    deployment_id: str
    text: str


class ResultStore:
    """Reads and atomically writes one sweep's results folder."""

    def __init__(self, output_dir: str, sweep_name: str) -> None:
        if "://" in output_dir:
            self.fs, base = pafs.FileSystem.from_uri(output_dir)
        else:
            self.fs, base = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(output_dir))
        self.root = f"{base.rstrip('/')}/{sweep_name}"
        self.display_root = (
            f"{output_dir.rstrip('/')}/{sweep_name}" if "://" in output_dir else self.root
        )

    def trial_dir(self, deployment_id: str, trial_id: str) -> str:
        """Folder of one trial."""
        return f"{self.root}/{deployment_id}/{trial_id}"

    def trial_status(self, deployment_id: str, trial_id: str) -> str | None:
        """`ok` or `failed` for a finished trial, None when it has no summary yet."""
        path = f"{self.trial_dir(deployment_id, trial_id)}/{R.SUMMARY_FILE}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            wanted = [c for c in (R.TRIAL_STATUS, R.ERROR_KIND) if c in parquet.schema_arrow.names]
            row = parquet.read(columns=wanted).to_pylist()[0]
        if row.get(R.ERROR_KIND) == R.ERROR_NOT_SAVED:
            return None  # its files were not kept: it counts as not run
        return str(row[R.TRIAL_STATUS])

    def trial_statuses(self, deployment_id: str) -> dict[str, str]:
        """Map trial id -> `ok` or `failed` for every finished trial of a deployment (resume).

        One listing of the deployment's folder and one dataset read of the status columns of
        its summaries: the cost of resuming follows the trials on disk, not a file open and a
        read per planned trial. A trial whose files were not kept counts as not run.
        """
        selector = pafs.FileSelector(
            f"{self.root}/{deployment_id}", recursive=True, allow_not_found=True
        )
        paths = [i.path for i in self.fs.get_file_info(selector) if i.base_name == R.SUMMARY_FILE]
        if not paths:
            return {}
        import pyarrow.dataset as ds  # here, not at the top: a deployment's worker never resumes

        columns = (R.TRIAL_ID, R.TRIAL_STATUS, R.ERROR_KIND)
        schema = pa.schema([(name, pa.string()) for name in columns])
        table = ds.dataset(paths, schema=schema, format="parquet", filesystem=self.fs).to_table()
        return {
            trial_id: str(status)
            for trial_id, status, kind in zip(*(table[c].to_pylist() for c in columns), strict=True)
            if kind != R.ERROR_NOT_SAVED
        }

    def probe_rows(self, deployment_id: str, search_id: str) -> list[dict]:
        """Summary rows of the probes recorded for one search of a deployment (resume)."""
        selector = pafs.FileSelector(
            f"{self.root}/{deployment_id}", recursive=True, allow_not_found=True
        )
        rows = []
        for info in self.fs.get_file_info(selector):
            if info.base_name != R.SUMMARY_FILE:
                continue
            table = pq.read_table(info.path, filesystem=self.fs)
            if (
                R.SEARCH_ID in table.column_names
                and table.column(R.SEARCH_ID)[0].as_py() == search_id
            ):
                rows.append(table.to_pylist()[0])
        return sorted(rows, key=lambda row: row.get(R.SEARCH_PROBE) or 0)

    def trial_row(self, deployment_id: str, trial_id: str) -> dict | None:
        """The summary row of one finished trial; None when it has no summary."""
        path = f"{self.trial_dir(deployment_id, trial_id)}/{R.SUMMARY_FILE}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.read_table(path, filesystem=self.fs).to_pylist()[0]

    def write_table(self, name: str, table: pa.Table) -> None:
        """Keep a table of the whole sweep (the tuner's `tune.parquet`) at the folder's top."""
        self.fs.create_dir(self.root, recursive=True)
        self._write_parquet(f"{self.root}/{name}", table)

    def write_trial(self, files: TrialFiles) -> None:
        """Write one trial's files; the summary goes last and marks the trial complete."""
        folder = self.trial_dir(files.deployment_id, files.trial_id)
        self.fs.create_dir(folder, recursive=True)
        self._write_parquet(f"{folder}/{R.REQUESTS_FILE}", files.requests)
        self._write_parquet(f"{folder}/{R.TIMESERIES_FILE}", files.timeseries)
        self._write_parquet(f"{folder}/{R.SERVER_METRICS_FILE}", files.server_metrics)
        self._write_parquet(f"{folder}/{R.TIMESLICES_FILE}", files.timeslices)
        if files.stages is not None:
            self._write_parquet(f"{folder}/{R.STAGES_FILE}", files.stages)
        if files.adapters is not None:
            self._write_parquet(f"{folder}/{R.ADAPTERS_FILE}", files.adapters)
        self._write_text(f"{folder}/{R.TRIAL_YAML}", files.trial_yaml)
        self._write_parquet(f"{folder}/{R.SUMMARY_FILE}", files.summary)

    def remove_trial(self, deployment_id: str, trial_id: str) -> None:
        """Delete whatever was written of one trial (its save failed part way)."""
        try:
            self.fs.delete_dir(self.trial_dir(deployment_id, trial_id))
        except OSError:  # nothing was written, or the folder cannot be reached
            pass

    def remove_partial_files(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        partial = [i.path for i in self.fs.get_file_info(selector) if ".tmp-" in i.base_name]
        for path in partial:
            self.fs.delete_file(path)
        return len(partial)

    def write_sweep_yaml(self, text: str) -> None:
        """The composed config with git sha and versions."""
        self.fs.create_dir(self.root, recursive=True)
        self._write_text(f"{self.root}/{R.SWEEP_YAML}", text)

    def write_quality(self, files: QualityFiles) -> None:
        """Keep a deployment's quality scores beside its trials."""
        folder = f"{self.root}/{files.deployment_id}"
        self.fs.create_dir(folder, recursive=True)
        self._write_parquet(f"{folder}/{R.QUALITY_FILE}", files.table)

    def write_backend_log(self, deployment_id: str, text: str, name: str = R.BACKEND_LOG) -> None:
        """Keep a task's backend log beside its deployment's trials, as `name`."""
        folder = f"{self.root}/{deployment_id}"
        self.fs.create_dir(folder, recursive=True)
        self._write_text(f"{folder}/{name}", text)

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write_bytes(path, buffer.getvalue())

    def _write_text(self, path: str, text: str) -> None:
        self._write_bytes(path, text.encode())

    def _write_bytes(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        except OSError as exc:  # a full disk, a bucket refusing writes: no temporary file stays
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
            raise ResultsNotSaved(f"cannot write {path}: {reason}") from exc
