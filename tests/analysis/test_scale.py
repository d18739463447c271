"""A large sweep's analysis: cached summaries, scoped reads, a pooled report with a trial table.

The large folder is the reference sweep's trials written again as repeats through the real
writer (`scripts.bench.results_folder.copy_of`, `ResultStore.write_trial`): 20 of each of its
4 trials, 80 in all, past the size (`sections.LISTED_UP_TO`) where the report pools them.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from large_folder import REF, write_copies

from analysis.read.load import load_requests, load_summary
from analysis.read.trial_cache import SUMMARY_CACHE, TrialCache, keyed
from analysis.read.trial_folder import trial_folder
from analysis.report.detail_scope import drawn_trials, request_trials
from analysis.report.report import write_report
from analysis.report.sections import LISTED_UP_TO
from sweep.core import records as rec
from sweep.core.results import ResultStore

COPIES = 20


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    root = tmp_path_factory.mktemp("large")
    store = ResultStore(str(root), "large")
    write_copies(store, range(COPIES))
    return Path(store.root)


@pytest.fixture(scope="module")
def report(large, tmp_path_factory):
    return write_report(large, tmp_path_factory.mktemp("report"))


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_a_large_sweep_report_pools_its_trials_by_series_and_load(report):
    text = report.report_md.read_text()
    results = section(text, "Results")
    assert f"{4 * COPIES:,} trials, pooled by series and load" in results
    rows = [line for line in results.splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 4  # hf at 1 and 2, vllm_server at 1 and 2 (the failed point too)
    cells = {(r.split("|")[1].strip(), r.split("|")[2].strip()): r.split("|") for r in rows}
    assert cells[("vllm_server", "2")][3].strip() == str(COPIES)  # trials
    assert cells[("vllm_server", "2")][4].strip() == str(COPIES)  # all failed
    assert cells[("hf", "1")][4].strip() == "0"
    assert "[" in cells[("hf", "1")][5]  # a mean with its interval over the 20 repeats


def test_checks_and_failures_of_a_large_sweep_are_one_line_per_reason(report):
    text = report.report_md.read_text()
    checks = section(text, "Request checks")
    short = [line for line in checks.splitlines() if "too short to trust" in line]
    assert len(short) == 1
    assert short[0].startswith(f"- {3 * COPIES} trial(s) too short to trust: all at ")
    assert "workload.num_requests=4" in short[0]
    failed = section(text, "Failed trials")
    rows = [line for line in failed.splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 1 and f"| {COPIES} |" in rows[0]
    assert rec.ERROR_OUT_OF_MEMORY in rows[0]


def test_every_trial_is_in_trials_csv_and_the_html_table(report):
    out = report.report_md.parent
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 * COPIES
    assert len(pd.read_parquet(out / "summary.parquet")) == 4 * COPIES
    html = report.report_html.read_text()
    assert "<h2>All trials</h2>" in html
    assert html.count("injectModule(") == 2  # ITables' offline loader: defined once, called once
    for label in trials["Trial"]:
        assert f'\\"{label}\\"' in html  # a row of the table's data (JSON in a JSON string)
    assert report.report_html.stat().st_size < 5 * 2**20
    assert "All trials" in report.report_md.read_text()


def test_a_small_sweep_still_lists_its_trials(tmp_path):
    paths = write_report(REF, tmp_path)
    text = paths.report_md.read_text()
    assert len(load_summary(REF)) <= LISTED_UP_TO
    assert "## All trials" not in text and not (tmp_path / "trials.csv").exists()
    assert "pooled" not in section(text, "Results")


def test_the_summary_cache_reads_only_new_or_rewritten_trials(tmp_path):
    store = ResultStore(str(tmp_path / "results"), "grow")
    write_copies(store, range(3))
    root = Path(store.root)
    cache = TrialCache(tmp_path / "cache", SUMMARY_CACHE)

    def read(folders, tags):
        return keyed([pq.read_table(f / rec.SUMMARY_FILE) for f in folders], tags)

    cache.rows(trial_folder(root), read)
    assert cache.read_trials == 12
    cache.rows(trial_folder(root), read)
    assert cache.read_trials == 0
    write_copies(store, range(3, 5))  # 8 new trials
    again = load_summary(root, cache_dir=tmp_path / "cache")
    plain = load_summary(root)
    assert len(again) == len(plain) == 20
    pd.testing.assert_frame_equal(again[plain.columns], plain, check_dtype=False)
    listed = trial_folder(root)
    cache.rows(listed, read)
    assert cache.read_trials == 0  # load_summary kept the 8 in the same cache
    rewritten = listed.trials[0] / rec.SUMMARY_FILE  # a rewritten trial is read again
    pq.write_table(pq.read_table(rewritten).slice(0, 0), rewritten)  # another size
    cache.rows(trial_folder(root), read)
    assert cache.read_trials == 1


def test_a_pool_of_processes_reads_the_same_rows(large, monkeypatch):
    import analysis.read.load as load

    threads = load_summary(large)
    monkeypatch.setattr(load, "PROCESS_READ_FROM", 1)
    monkeypatch.setattr(load, "READERS", 2)
    monkeypatch.setattr(load, "CHUNK", 16)  # 80 trials: 5 chunks over 2 processes
    pd.testing.assert_frame_equal(load_summary(large), threads)


def test_requests_are_read_for_the_trials_asked_only():
    one = load_summary(REF)[rec.TRIAL_ID].iloc[0]
    requests = load_requests(REF, [one], columns=[rec.TRIAL_ID, rec.TTFT_S])
    assert set(requests[rec.TRIAL_ID]) == {one}
    assert list(requests.columns) == [rec.TRIAL_ID, rec.TTFT_S]
    assert len(load_requests(REF, [])) == 0


def test_requests_are_needed_for_single_trials_and_slos_not_for_repeats(large):
    summary = load_summary(large)
    ok = summary[summary[rec.TRIAL_STATUS] == rec.STATUS_OK]
    assert sorted(request_trials(summary)) == sorted(ok[rec.TRIAL_ID])  # slo.ttft_ms is set
    no_slo = summary.drop(columns=[c for c in summary if c.startswith(rec.SLO_PREFIX)])
    assert request_trials(no_slo) == []  # 20 repeats of each point: no bootstrap needed
    singles = load_summary(REF).drop(columns=[c for c in summary if c.startswith(rec.SLO_PREFIX)])
    ok_singles = singles[singles[rec.TRIAL_STATUS] == rec.STATUS_OK]
    assert sorted(request_trials(singles)) == sorted(ok_singles[rec.TRIAL_ID])


def test_timelines_draw_one_trial_per_series_at_its_highest_load(large):
    summary = load_summary(large)
    drawn = summary.set_index(rec.TRIAL_ID).loc[drawn_trials(summary)]
    assert sorted(drawn[rec.BACKEND_NAME]) == ["hf", "vllm_server"]
    assert (drawn[rec.TRIAL_STATUS] == rec.STATUS_OK).all()
    hf = drawn[drawn[rec.BACKEND_NAME] == "hf"].iloc[0]
    assert hf[rec.WORKLOAD_BATCH_SIZE] == 2 and hf[rec.REPEAT] == 0


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium); the browser check needs it",
)
def test_the_trial_table_runs_offline_in_chromium_at_1280_px(report, tmp_path):
    """DataTables builds the table from the inlined bundle, and the page fits 1280 px."""
    page = report.report_html
    probe = page.with_name("probe.html")
    script = (
        "<script>setTimeout(() => document.body.setAttribute('data-probe', JSON.stringify({"
        "overflow: document.documentElement.scrollWidth - window.innerWidth, "
        "tables: document.querySelectorAll('.dt-container').length, "
        "rows: document.querySelectorAll('.dt-container tbody tr').length})), 3000);</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"data-probe=\"([^\"]+)\"", dom)
    assert found, dom[-500:]
    probed = json.loads(html.unescape(found.group(1)))
    assert probed["tables"] == 1
    assert probed["rows"] == 25  # the first page of the 80 trials
    assert probed["overflow"] <= 0
