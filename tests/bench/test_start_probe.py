"""`scripts/bench/makespan.py --start-costs` measures a Ray worker's boot as the CPU the worker has
used when a task from `scripts.bench.start_probe` begins. The worker imports that module first, so
the module must import nothing of the trial runner's, or the boot would include its import and
the import step would find it done."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sweep.driver.driver", "sweep.worker.trial", "pandas", "pyarrow", "backends", "analysis")


def test_the_probe_module_imports_nothing_the_trial_runner_does():
    code = (
        "import sys, scripts.bench.start_probe\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported with the probe: {done.stdout.strip()}"
