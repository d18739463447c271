"""What a Ray worker imports to run a deployment: nothing it may not use.

Every GPU deployment boots a worker of its own, which imports the task's module
(`sweep.driver.driver`, and through it the trial runner). On a node starting several deployments at
once that CPU is the sweep's start-up (docs/benchmarks.md, makespan). aiohttp is imported only by a
trial that asks for it (`workload.http_client=aiohttp`), OmegaConf only by the planner, pyarrow's
dataset reader only by the driver's resume (`ResultStore.trial_statuses`).
"""

import subprocess
import sys

import pytest

PROBE = """
import sys
import {module}
print(" ".join(sorted(name for name in {libraries} if name in sys.modules)))
"""
NOT_IN_A_WORKER = (
    "aiohttp",
    "omegaconf",
    "hydra",
    "transformers",
    "torch",
    "analysis",
    "pyarrow.dataset",
)


@pytest.mark.parametrize("module", ["sweep.driver.driver", "sweep.worker.trial"])
def test_the_task_module_leaves_out_what_a_worker_does_not_use(module):
    code = PROBE.format(module=module, libraries=NOT_IN_A_WORKER)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"{module} imported {done.stdout.strip()}"


def test_an_aiohttp_trial_still_finds_its_client():
    from sweep.loadgen.aiohttp_client import AiohttpClient
    from sweep.loadgen.http import Endpoint, open_client
    from tests.helpers import workload

    client = open_client(Endpoint("http://127.0.0.1:9", "m"), workload(http_client="aiohttp"), 4)
    assert isinstance(client, AiohttpClient)


def test_the_sweep_entry_loads_matplotlib_only_to_draw():
    """`python -m sweep` imports its plotting library when the report draws its first figure
    (`analysis.figures.canvas`): a dry run, a config error or `sweep.report=false` never pays for
    it."""
    code = PROBE.format(module="sweep.__main__", libraries=("matplotlib",))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"sweep.__main__ imported {done.stdout.strip()}"
    code = "import sys\nfrom analysis.figures.canvas import new_figure\nnew_figure(2, 1)\n"
    code += "print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
