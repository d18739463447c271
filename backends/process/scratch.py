"""A server's scratch folder in the temporary directory, removed even when its owner was killed.

A backend keeps its server's log and sockets in a folder of its own, which its `stop` removes. A
worker killed with SIGKILL (a cancelled hung trial, a lost node, a driver killed mid-sweep) runs
no `stop`: its server dies with it (`group._die_with_parent`), but the folder stayed, one per
kill, for as long as the machine ran. Each folder made here names its owner (process id and
creation time) in a marker file, and making one removes the folders whose owner is gone, so the
next server started on the machine clears what a killed one left.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import psutil

OWNER_FILE = ".llm-sweep-owner"  # "PID CREATED": the process that made the folder


def scratch_folder(prefix: str) -> Path:
    """A new folder `PREFIX-XXXX` in the temporary directory, owned by this process."""
    root = Path(tempfile.gettempdir())
    remove_orphans(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    me = psutil.Process()
    (folder / OWNER_FILE).write_text(f"{me.pid} {me.create_time()!r}")
    return folder


def remove_orphans(root: Path) -> list[Path]:
    """Remove the folders under `root` made by `scratch_folder` whose owner no longer runs."""
    removed = []
    for marker in root.glob(f"*/{OWNER_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            pid, created = marker.read_text().split()
            if _alive(int(pid), float(created)):
                continue
            shutil.rmtree(marker.parent, ignore_errors=True)
            removed.append(marker.parent)
    return removed


def _alive(pid: int, created: float) -> bool:
    """Whether `pid` runs and is the process that made the folder.

    Not a later process given its id (the creation time tells), nor one that ended and waits to
    be reaped by its parent (a zombie).
    """
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: alive
