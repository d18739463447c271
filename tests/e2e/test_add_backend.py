"""Adding a backend touches only its own places: a throwaway one plans, runs and is reported.

The test writes a backend as a contributor would, outside the repository (in `tmp_path`): a
package with its config dataclass and its `ServerBackend` class (attached to a sim server the test
starts, as `backend=openai` attaches to an endpoint), a `conf/backend/throwaway.yaml` in a folder
added to Hydra's search path, and its line in `backends.REGISTRY`. The backend declares facts
unlike the sim's: it is the baseline, its requests carry no `ignore_eos`, and it stores a GGUF
file's weights. Then a sweep of it beside `backend=sim` is planned from overrides, run by the
deployment's task in this process (`tests.helpers.run_sweep_here`: a registry line added at run
time reaches only this process, never a Ray worker), written by the result store and reported:
the report must know it from what its rows recorded, with nothing else changed.
"""

import json
import sys
import textwrap

import pandas as pd
import pytest
from hydra.core.config_store import ConfigStore

import backends
from analysis.read.load import load_summary
from analysis.report.report import write_report
from analysis.stats.roofline import weight_bytes_per_param
from sweep.core import records as R
from tests.helpers import SMALL_CLOSED_LOOP, run_sweep_here

NAME = "throwaway"
MODULE = '''\
"""A backend written by a test: attached to a running OpenAI-compatible server."""

from dataclasses import dataclass
from typing import ClassVar

from backends.base import ServerBackend
from backends.config import BackendConfig
from sweep.core import records as R


@dataclass
class ThrowawayConfig(BackendConfig):
    """Where the server is, and the GGUF file it serves."""

    name: str = "throwaway"
    url: str = "http://127.0.0.1:1"
    gguf_file: str | None = None


class ThrowawayBackend(ServerBackend):
    """Attaches to `url`; starts and stops nothing."""

    config_class: ClassVar[type] = ThrowawayConfig
    baseline: ClassVar[bool] = True
    weight_format: ClassVar[str] = R.WEIGHTS_GGUF
    roofline_fields: ClassVar[tuple[str, ...]] = ("gguf_file",)

    @property
    def base_url(self) -> str:
        return self.config.url

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
'''


@pytest.fixture
def sim_server():
    """A sim server of the project, started through the registry like any backend."""
    cls = backends.backend_class("sim")
    with cls(cls.config_class(ttft_ms=20.0, itl_ms=2.0), "model") as server:
        yield server.base_url


@pytest.fixture
def throwaway(tmp_path, monkeypatch, sim_server):
    """The backend's three places; every global it touches is restored afterwards."""
    package = tmp_path / "src" / "throwaway_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A throwaway backend package."""\n')
    (package / "throwaway.py").write_text(MODULE)
    conf = tmp_path / "conf" / "backend"
    conf.mkdir(parents=True)
    (conf / f"{NAME}.yaml").write_text(
        textwrap.dedent(f"""\
            defaults:
              - {NAME}_schema
            url: {sim_server}
            gguf_file: tiny.Q4_0.gguf
            """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setitem(backends.REGISTRY, NAME, "throwaway_pkg.throwaway:ThrowawayBackend")
    yield f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    ConfigStore.instance().repo["backend"].pop(f"{NAME}_schema.yaml", None)
    for module in [m for m in sys.modules if m.split(".")[0] == "throwaway_pkg"]:
        del sys.modules[module]


def test_a_new_backend_plans_runs_and_is_reported_with_its_facts(tmp_path, throwaway):
    overrides = (
        *SMALL_CLOSED_LOOP,
        throwaway,
        "sweep.name=added",
        f"+sweep.grid.backend=[{NAME},sim]",
        "workload.num_requests=8",
        "workload.concurrency=2",
        "workload.output_len=4",
    )
    root = run_sweep_here(tmp_path / "results", overrides)
    summary = load_summary(root).set_index(R.BACKEND_NAME)
    assert sorted(summary.index) == ["sim", NAME]
    assert (summary[R.TRIAL_STATUS] == R.STATUS_OK).all(), summary[R.ERROR_MESSAGE].tolist()
    assert (summary[R.COMPLETED_REQUESTS] == 8).all()
    new, sim = summary.loc[NAME], summary.loc["sim"]
    # What each backend said of itself is in its rows.
    assert new[R.BACKEND_BASELINE] and not sim[R.BACKEND_BASELINE]
    assert not new[R.BACKEND_IGNORE_EOS] and sim[R.BACKEND_IGNORE_EOS]
    assert new[R.BACKEND_WEIGHT_FORMAT] == R.WEIGHTS_GGUF
    assert json.loads(new[R.BACKEND_ROOFLINE_COLUMNS]) == ["backend.gguf_file"]
    # The roofline reads its GGUF file's type: Q4_0 is 4.5 bits a weight.
    bytes_per_weight = weight_bytes_per_param(summary.reset_index())
    assert bytes_per_weight.tolist()[list(summary.index).index(NAME)] == pytest.approx(4.5 / 8)

    paths = write_report(root)
    report = paths.report_md.read_text()
    assert f"against the baseline its backend recorded ({NAME})" in report
    assert f"Output lengths were not forced in 1 of 2 trial(s) ({new[R.LABEL]})" in report
    table = pd.read_csv(paths.summary_csv).set_index(R.BACKEND_NAME)
    assert table.loc[NAME, R.BACKEND_WEIGHT_FORMAT] == R.WEIGHTS_GGUF
