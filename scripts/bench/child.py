"""A measurement run in a fresh Python, so that its peak memory and imports are its own.

The child's result is the last JSON line it prints.
"""

from __future__ import annotations

import json
import subprocess
import sys

from sweep.tools import REPO


def measure_in_child(module: str, *args: str, what: str) -> dict:
    """Run `python -m module args...` and return the last line it printed that is a JSON object.

    Raises:
        RuntimeError: the child failed or printed no result; `what` names it, with its stderr.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,  # `scripts.bench` is found from the checkout's root
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])
