"""A server's scratch folder in the temporary directory, removed even when its owner was killed.

A backend keeps its server's log and sockets in a folder of its own, which its `stop` removes. A
worker killed with SIGKILL (a cancelled hung trial, a lost node, a driver killed mid-sweep) runs
no `stop`: its server dies with it (`group._die_with_parent`), but the folder stayed, one per
kill, for as long as the machine ran. Each folder made here names its owner (process id and
start time) in a marker file, and making one removes the folders whose owner is gone, so the
next server started on the machine clears what a killed one left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

OWNER_FILE = ".llm-sweep-owner"  # "PID START": the process that made the folder


def scratch_folder(prefix: str) -> Path:
    """A new folder `PREFIX-XXXX` in the temporary directory, owned by this process."""
    root = Path(tempfile.gettempdir())
    remove_orphans(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    (folder / OWNER_FILE).write_text(_identity(os.getpid()) or str(os.getpid()))
    return folder


def remove_orphans(root: Path) -> list[Path]:
    """Remove the folders under `root` made by `scratch_folder` whose owner no longer runs."""
    removed = []
    for marker in root.glob(f"*/{OWNER_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            pid, _, start = marker.read_text().partition(" ")
            if _alive(int(pid), start):
                continue
            shutil.rmtree(marker.parent, ignore_errors=True)
            removed.append(marker.parent)
    return removed


def _identity(pid: int) -> str | None:
    """'PID START', START being the process's start time in clock ticks (Linux).

    None where /proc cannot tell (another OS) or the process has ended (gone, or a zombie not
    yet reaped by its parent).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):  # dead, not yet reaped by its parent
        return None
    return f"{pid} {fields[19]}"  # field 22 of the file: starttime


def _alive(pid: int, start: str) -> bool:
    """Whether `pid` runs and is the process that wrote `start` (not a later one given its id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    if not start or not Path("/proc/self/stat").exists():
        return True  # no start time to compare: the id is taken, so count it alive
    return _identity(pid) == f"{pid} {start.strip()}"
