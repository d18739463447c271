"""Two sweeps compared: matching by trial id and by config, within-noise verdicts, and the CLI."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.stats.sweep_diff import HIGHER, NO_REPEATS, WITHIN_NOISE, compare_sweeps
from sweep.core import records as rec
from tests.helpers import analysis_in_process

TTFT = rec.latency_column("ttft", "median")


def trials(sweep, point, throughputs, ids=None, ttft=50.0, **extra):
    """One summary row per repeat of a grid point (batch size `point`)."""
    return [
        {
            rec.TRIAL_ID: ids[r] if ids else f"{sweep}-{point}-{r}",
            rec.DEPLOYMENT_ID: "d1",
            rec.SWEEP_NAME: sweep,
            rec.REPEAT: r,
            rec.LABEL: f"hf-b{point}-r{r}",
            rec.TRIAL_STATUS: rec.STATUS_OK,
            rec.BACKEND_NAME: "hf",
            rec.WORKLOAD_BATCH_SIZE: point,
            "env.host": sweep,
            "slo.ttft_ms": None,
            rec.OUTPUT_THROUGHPUT: tok_s,
            TTFT: ttft + r,
            **extra,
        }
        for r, tok_s in enumerate(throughputs)
    ]


@pytest.fixture
def two_sweeps():
    shared_ids = ["id-1-0", "id-1-1", "id-1-2"]
    before = (
        trials("before", 1, [100.0, 102.0, 98.0], ids=shared_ids)
        + trials("before", 2, [200.0, 201.0, 199.0])
        + trials("before", 4, [400.0])
        + trials("before", 16, [900.0, 950.0])
    )
    after = (
        # Same ids (same config), but a column only the newer version writes: still matched.
        trials("after", 1, [101.0, 99.0, 103.0], ids=shared_ids, **{"backend.new_flag": True})
        # Different ids (e.g. another hash version), same config columns: matched by config.
        + trials("after", 2, [300.0, 305.0, 295.0])
        + trials("after", 4, [380.0])
        + trials("after", 8, [700.0, 710.0])
    )
    return {"before": before, "after": after}


def test_matches_by_id_and_by_config_and_judges_noise(two_sweeps):
    diff = compare_sweeps({name: pd.DataFrame(rows) for name, rows in two_sweeps.items()})
    table = diff.table.set_index(["point", "metric"])
    assert diff.reference == "before" and diff.matched_points == 3
    assert diff.unmatched_points == {"before": 1, "after": 1}  # b16 and b8

    same = table.loc[("hf-b1", rec.OUTPUT_THROUGHPUT)]
    assert (same["ref_mean"], same["mean"]) == (100.0, 101.0)
    assert same["ref_num_repeats"] == 3 and same["verdict"] == WITHIN_NOISE
    assert same["change_pct"] == pytest.approx(1.0)

    faster = table.loc[("hf-b2", rec.OUTPUT_THROUGHPUT)]
    assert faster["verdict"] == HIGHER and faster["change_pct"] == pytest.approx(50.0)
    assert faster["ci_low"] > faster["ref_ci_high"]
    assert table.loc[("hf-b2", TTFT), "verdict"] == WITHIN_NOISE  # identical TTFTs

    single = table.loc[("hf-b4", rec.OUTPUT_THROUGHPUT)]
    assert single["verdict"] == NO_REPEATS and single["change_pct"] == pytest.approx(-5.0)


def test_failed_trials_are_not_compared(two_sweeps):
    after = pd.DataFrame(two_sweeps["after"])
    after.loc[after[rec.WORKLOAD_BATCH_SIZE] == 4, rec.TRIAL_STATUS] = rec.STATUS_FAILED
    diff = compare_sweeps({"before": pd.DataFrame(two_sweeps["before"]), "after": after})
    assert "hf-b4" not in set(diff.table["point"])


def write_sweep(root: Path, rows: list[dict]) -> Path:
    for row in rows:
        folder = root / row[rec.DEPLOYMENT_ID] / row[rec.TRIAL_ID]
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([row]), folder / rec.SUMMARY_FILE)
    return root


def test_cli_compares_two_results_folders(tmp_path, two_sweeps):
    a = write_sweep(tmp_path / "before", two_sweeps["before"])
    b = write_sweep(tmp_path / "after", two_sweeps["after"])
    result = analysis_in_process(str(a), str(b))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "before_vs_after"
    text = (out / "comparison.md").read_text()
    assert "# Sweep comparison: before vs after" in text
    assert "| hf-b1 | Output tok/s | after | 100.0 [95.0, 105.0] | 3 |" in text
    assert "within noise" in text and "| +50.0% | higher |" in text
    assert (out / "comparison.html").read_text().startswith("<!DOCTYPE html>")


def _requests(trial_id, ttft_ms, seed):
    """200 requests whose TTFT is drawn around `ttft_ms` (5 ms spread), 10 tokens each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ttft = rng.normal(ttft_ms, 5.0, 200) / 1e3
    sent = np.arange(200) * 0.05
    return pd.DataFrame(
        {
            rec.TRIAL_ID: trial_id,
            rec.STATUS: rec.STATUS_OK,
            rec.SENT_S: sent,
            rec.FIRST_TOKEN_S: sent + ttft,
            rec.END_S: sent + ttft + 0.1,
            rec.TTFT_S: ttft,
            rec.E2E_S: ttft + 0.1,
            rec.OUTPUT_TOKENS: 10.0,
            rec.ITL_S: [np.full(9, 0.1 / 9)] * 200,
        }
    )


def test_single_trials_are_judged_from_their_own_requests():
    """No repeats: the bootstrap over each trial's requests judges the difference."""
    sweeps, requests = {}, {}
    for name, ttft, seed in (("ref", 50.0, 1), ("same", 50.0, 2), ("slower", 100.0, 3)):
        frame = _requests(f"{name}-id", ttft, seed)
        row = trials(name, 1, [200.0], ids=[f"{name}-id"])[0]
        row[TTFT] = float(frame[rec.TTFT_S].median() * 1e3)
        sweeps[name], requests[name] = pd.DataFrame([row]), frame
    table = compare_sweeps(sweeps, requests=requests).table
    verdicts = table[table["metric"] == TTFT].set_index("sweep")["verdict"]
    assert verdicts["same"] == WITHIN_NOISE
    assert verdicts["slower"] == HIGHER
    # Without the requests the same points cannot be judged.
    plain = compare_sweeps(sweeps).table
    assert set(plain[plain["metric"] == TTFT]["verdict"]) == {NO_REPEATS}
