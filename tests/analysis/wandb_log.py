"""Read back what wandb wrote offline: the run's `.wandb` transaction log, for the tracking tests.

wandb 0.31 writes offline runs as `<dir>/wandb/offline-run-*/run-<id>.wandb` only (no
wandb-summary.json or config.yaml until synced) and ships no Python reader, so this parses the
log format it uses (LevelDB's: a 7-byte file header, then 32 KiB blocks of records, each with a
7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) into `wandb_internal_pb2.Record`s.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

FILE_HEADER = b":W&B"
FILE_HEADER_LEN = 7
BLOCK = 32768
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """The parts of one offline run the tests check."""

    path: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def records(path: Path) -> list[pb.Record]:
    """Every record of a `.wandb` file, in order."""
    data = path.read_bytes()
    assert data[:4] == FILE_HEADER, f"not a wandb transaction log: {path}"
    out, pos, pending = [], FILE_HEADER_LEN, b""
    while pos + RECORD_HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def read_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under `wandb_dir` (the folder named `wandb`)."""
    runs = []
    for log_file in sorted(wandb_dir.glob("offline-run-*/run-*.wandb")):
        run = OfflineRun(log_file.parent)
        for record in records(log_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.name, run.group = record.run.display_name, record.run.run_group
                run.job_type = record.run.job_type
                run.config.update(_items(record.run.config.update))
            elif kind == "config":
                run.config.update(_items(record.config.update))
            elif kind == "summary":
                run.summary.update(_items(record.summary.update))
            elif kind == "history":
                run.history.append(_items(record.history.item))
        runs.append(run)
    return runs


def _items(items) -> dict:  # noqa: ANN001 - protobuf repeated fields
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
