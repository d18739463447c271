"""search=tune end to end on real Ray and the sim's known landscape: killed, resumed, reported.

The space is small enough to measure whole: max_num_seqs 2, 12 or 32, chunked prefill or not,
and with it a budget of 768 or 3072 tokens (9 configurations; `backends.sim_server.landscape`
puts the optimum at 12 sequences, chunked, 3072 tokens, a fifth above the next best). The module's
sweep runs as a user's would, joined to the session's Ray cluster:

1. `search.tune.budget=3`, left alone (in process): 3 configurations;
2. the same folder with budget 9, as `python -m sweep` in a process of its own, killed (SIGKILL)
   once 5 configurations have ended, so the journal keeps trials running;
3. the same command again: it resumes and ends.

The folder must then hold 9 configurations, each run once: no trial left running, one search
per configuration on disk, no probe load repeated within a search; the best must be the
landscape's optimum, and the report must name it and give each argument's importance.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from analysis.report.report import write_report
from sweep.core import records as R
from sweep.tune.study import JOURNAL
from tests.helpers import REPO, sweep_in_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
TINY_SPACE = """    space:
      backend:
        max_num_seqs: {choices: [2, 12, 32]}
        chunked_prefill: {choices: [true, false]}
        max_num_batched_tokens: {choices: [768, 3072], when: "backend.chunked_prefill == true"}
"""
BUDGET = 9
KILL_AFTER = 5


def tiny_experiment(folder: Path) -> Path:
    """tune_sim with the tiny space and shorter probes, as an experiment file of its own."""
    text = (REPO / "conf/experiment/tune_sim.yaml").read_text()
    text = text[: text.index("    space:")] + TINY_SPACE
    text = text.replace("num_requests: 100", "num_requests: 60")
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment/tune_tiny.yaml").write_text(text)
    return folder


def ended(root: Path) -> int:
    """Configurations measured so far (repeats of one measured before not counted)."""
    table = root / R.TUNE_TABLE
    return int((pd.read_parquet(table)["state"] != "duplicate").sum()) if table.is_file() else 0


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ray_cluster):
    conf = tiny_experiment(tmp_path_factory.mktemp("conf"))
    out = tmp_path_factory.mktemp("tune")
    command = ["+experiment=tune_tiny", f"hydra.searchpath=[file://{conf}]",
               f"output.dir={out}", f"cluster.address={ray_cluster}", "tracking=none"]  # fmt: skip
    root = out / "tune_sim"
    first = sweep_in_process(*command, "search.tune.budget=3", "sweep.report=false")
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = ended(root)
    killed = subprocess.Popen(
        [sys.executable, "-m", "sweep", *command, f"search.tune.budget={BUDGET}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while ended(root) < KILL_AFTER and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    at_kill = ended(root)
    study = optuna.load_study(study_name="tune_sim", storage=storage(root))
    running_at_kill = len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
    resumed = sweep_in_process(*command, f"search.tune.budget={BUDGET}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return root, after_first, at_kill, running_at_kill, resumed


def storage(root: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(root / JOURNAL)))


def test_a_larger_budget_added_configurations_and_the_kill_left_some_running(tuned):
    _, after_first, at_kill, running_at_kill, _ = tuned
    assert after_first == 3
    assert KILL_AFTER <= at_kill < BUDGET  # killed mid-way
    assert running_at_kill >= 1  # the kill left configurations in flight


def test_the_resumed_sweep_ends_at_the_budget_with_each_configuration_run_once(tuned):
    root, *_ = tuned
    table = pd.read_parquet(root / R.TUNE_TABLE)
    measured = table[table["state"] != "duplicate"]
    assert len(measured) == BUDGET
    assert measured["seed_id"].is_unique and measured["params"].is_unique
    study = optuna.load_study(study_name="tune_sim", storage=storage(root))
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,
                                        optuna.trial.TrialState.PRUNED))  # fmt: skip
    assert len({t.number for t in finished} & set(measured["number"])) == len(measured)
    rows = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    # every search on disk is a configuration of the table: none was asked anew and left
    assert set(rows[R.SEARCH_ID]) == set(measured["seed_id"])
    for search_id, probes in rows.groupby(R.SEARCH_ID):
        assert probes[R.SEARCH_LOAD].is_unique, f"a load probed twice in {search_id}"
        assert (probes[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert (measured["probes"] == measured["seed_id"].map(rows.groupby(R.SEARCH_ID).size())).all()


def test_the_best_is_the_landscapes_optimum_and_losers_were_stopped(tuned):
    root, *_ = tuned
    table = pd.read_parquet(root / R.TUNE_TABLE)
    done = table[table["state"] == "complete"]
    best = done.loc[done["value"].astype(float).idxmax()]
    assert json.loads(best["params"]) == {"backend.max_num_seqs": 12,
        "backend.chunked_prefill": True, "backend.max_num_batched_tokens": 3072}  # fmt: skip
    pruned = table[table["state"] == "pruned"]
    assert len(pruned) >= 1
    assert (pruned["high"] <= pruned["stop_below"]).all()  # each failed at or below the best
    assert (pruned["saved_s"] > 0).all()


def test_the_report_names_the_best_and_each_arguments_importance(tuned):
    root, *_, resumed = tuned
    report = write_report(root)
    text = report.report_md.read_text()
    assert "## Tuning" in text
    best = "chunked_prefill=True, max_num_batched_tokens=3072, max_num_seqs=12"
    assert f"Tuning: the best of {BUDGET} configurations is {best}" in text
    for name in ("max_num_seqs", "chunked_prefill", "max_num_batched_tokens"):
        assert f"Importance of backend.{name}: " in text
    assert (root / "tuning_progress.png").is_file()
    assert "Tuning: the best of" in resumed.stdout  # the sweep's own end printed it too
