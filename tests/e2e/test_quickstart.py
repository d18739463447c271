"""The quickstart end to end: real local Ray on 127.0.0.1, the real HF backend, the tiny model.

Runs `python -m sweep +experiment=quickstart` as a user would, then checks every result file,
the report, and that a second run resumes by skipping every trial.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

from sweep.core import records as R
from tests.conftest import TEST_RUN_TAG
from tests.helpers import sweep_in_process

# Its sweeps start clusters and servers: scheduled first. Two sweeps of up to 600 s each (a
# whole sweep, whatever the machine's speed: beside the chaos tests one took over 200 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).parents[2]


def run_sweep(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ray_processes() -> list[psutil.Process]:
    """Ray head processes started by this test run (see TEST_RUN_TAG)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "raylet" not in cmd and "gcs_server" not in cmd:
            continue
        try:
            if proc.environ().get("SWEEP_TEST_RUN") == TEST_RUN_TAG:
                found.append(proc)
        except psutil.Error:
            continue  # gone meanwhile
    return found


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    before = {p.pid for p in ray_processes()}
    first = run_sweep("+experiment=quickstart", f"output.dir={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    leftover = [p for p in ray_processes() if p.pid not in before]
    # The resume has nothing to run, so it starts no Ray: its entry is run in this process.
    second = sweep_in_process("+experiment=quickstart", f"output.dir={out}")
    return out / "quickstart", first, second, leftover


def test_every_trial_has_its_files(quickstart):
    root, first, _, _ = quickstart
    summaries = sorted(root.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert len(summaries) == 20
    for summary in summaries:
        folder = summary.parent
        for name in (R.REQUESTS_FILE, R.TIMESERIES_FILE, R.TRIAL_YAML):
            assert (folder / name).is_file(), folder / name
        assert not list(folder.glob("*.tmp-*"))
    assert (root / R.SWEEP_YAML).is_file()
    assert "finished: 20 ok, 0 failed" in first.stdout


def test_request_records_are_exact_and_sane(quickstart):
    root = quickstart[0]
    for path in root.glob(f"*/*/{R.REQUESTS_FILE}"):
        requests = pd.read_parquet(path)
        assert list(requests.columns) == R.REQUESTS_SCHEMA.names
        # workload.num_requests of the quickstart, sent again whole until the trial is long enough
        assert len(requests) >= 32 and len(requests) % 32 == 0
        assert requests[R.REQUEST_IDX].tolist() == list(range(len(requests)))
        assert (requests[R.STATUS] == R.STATUS_OK).all()
        assert (requests[R.OUTPUT_TOKENS] == 48).all()  # exact output length (ignore_eos)
        assert (requests[R.SERVER_OUTPUT_TOKENS] == 48).all()
        assert (requests[R.TTFT_S] > 0).all()
        assert (requests[R.E2E_S] >= requests[R.TTFT_S]).all()
        assert (requests[R.FIRST_TOKEN_S] >= requests[R.SENT_S]).all()
        assert requests[R.ITL_S].map(len).eq(47).all()


def test_random_prompts_have_exact_input_lengths(quickstart):
    summary = pd.concat(pd.read_parquet(p) for p in quickstart[0].glob(f"*/*/{R.SUMMARY_FILE}"))
    random = summary[summary["dataset.name"] == "random"]
    assert len(random) == 20
    per_request = random[R.INPUT_TOKENS_TOTAL] / random[R.COMPLETED_REQUESTS]
    assert (per_request == random["dataset.input_len"]).all()


def test_summary_rows_hold_config_metrics_and_environment(quickstart):
    summary = pd.concat(pd.read_parquet(p) for p in quickstart[0].glob(f"*/*/{R.SUMMARY_FILE}"))
    assert len(summary) == 20
    assert (summary[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert set(summary["backend.mode"]) == {"per_request", "static_batch"}
    assert set(summary["workload.batch_size"]) == {1, 8}
    assert (summary[R.OUTPUT_THROUGHPUT] > 0).all()
    assert (summary[R.COMPLETED_REQUESTS] % 32 == 0).all()
    # repeated until 1 s and 32 requests (workload.repeat_to_minimum): none too short
    assert (summary[R.DURATION_S] >= 1.0).all() and (summary[R.COMPLETED_REQUESTS] >= 32).all()
    assert not summary[R.TOO_SHORT].any()
    expected_cost = 0.10 / 3600 / summary[R.OUTPUT_THROUGHPUT] * 1e6  # cpu price, one instance
    assert (summary[R.COST_PER_1M_OUTPUT] - expected_cost).abs().max() < 1e-9
    assert (summary[R.PEAK_RSS_MB] > 50).all()  # process memory sampled without a GPU
    assert summary["env.torch"].notna().all()
    # One deployment at a time (`cluster.num_cpus: 1`), each on one core of its own choosing.
    assert summary[R.ENV_CLIENT_CPUS].str.fullmatch(r"\d+").all()
    runs = summary.assign(end=summary[R.STARTED_UNIX_S] + summary[R.WALL_S])
    spans = sorted(
        (g[R.STARTED_UNIX_S].min(), g["end"].max()) for _, g in runs.groupby(R.DEPLOYMENT_ID)
    )
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # the second began after the first
    # throughput = output tokens / duration, recomputed from the request records
    for _, row in summary.iterrows():
        req = pd.read_parquet(
            quickstart[0] / row[R.DEPLOYMENT_ID] / row[R.TRIAL_ID] / R.REQUESTS_FILE
        )
        duration = req[R.END_S].max() - req[R.SENT_S].min()
        assert row[R.OUTPUT_THROUGHPUT] == pytest.approx(req[R.OUTPUT_TOKENS].sum() / duration)


def test_report_and_final_table(quickstart):
    root, first, _, _ = quickstart
    for name in ("report.md", "summary.csv", "throughput.png", "ttft_median.png", "cost.png"):
        assert (root / name).is_file(), name
    assert len(pd.read_csv(root / "summary.csv")) == 20
    assert "report:" in first.stdout and "Out tok/s" in first.stdout
    assert "Findings" in first.stdout
    report = (root / "report.md").read_text()
    assert report.index("## Findings") < report.index("## Results")
    assert "from the 5 repeats of each configuration" in report
    # Every trial is long enough for the report to compare (no "too short" flag).
    assert "too short" not in report


def test_second_run_skips_every_trial(quickstart):
    root, _, second, _ = quickstart
    assert second.returncode == 0, second.stderr[-2000:]
    assert "skipping 20 completed trials" in second.stdout
    assert "running" not in second.stdout.split("Sweep quickstart")[0].replace(
        "sweep.overwrite", ""
    )
    assert len(list(root.glob(f"*/*/{R.SUMMARY_FILE}"))) == 20


def test_no_ray_process_left_behind(quickstart):
    assert quickstart[3] == []


def test_dry_run_prints_plan_and_writes_nothing(tmp_path):
    result = sweep_in_process(
        "+experiment=quickstart", "sweep.dry_run=true", f"output.dir={tmp_path}"
    )
    assert result.returncode == 0
    assert "20 trials in 2 deployments" in result.stdout
    assert "hf-static_batch-b8-r2" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    result = sweep_in_process("+experiment=quickstart", "backend=nope", f"output.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: backend=nope is not a known option; choose one of: hf"
    ) or result.stderr.strip().startswith("error: backend=nope is not a known option")
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_model_architecture_is_recorded_and_mbu_counts_the_kv_cache(quickstart):
    """The tiny model: 2 layers, 1 KV head of 64, fp32; MBU's KV term worked out by hand."""
    from transformers import AutoModelForCausalLM

    from analysis.read.load import load_summary
    from analysis.stats.roofline import BASIS_WEIGHTS_KV, roofline
    from backends.models.architecture import architecture
    from backends.models.tiny import ensure_tiny_model

    root, _, _, _ = quickstart
    summary = load_summary(root)
    assert set(summary[R.MODEL_NUM_LAYERS]) == {2.0}
    assert set(summary[R.MODEL_NUM_KV_HEADS]) == {1.0}
    assert set(summary[R.MODEL_HEAD_DIM]) == {64.0}
    model = AutoModelForCausalLM.from_pretrained(str(ensure_tiny_model()))
    params = sum(p.numel() for p in model.parameters())  # read from the headers, counted here
    assert architecture(str(ensure_tiny_model()))[R.MODEL_NUM_PARAMS_B] == params / 1e9
    # the tiny model's group sets no figure: the files' exact count is recorded (a figure set in
    # the config would be kept: tests/sweep/test_model_path.py sets none, test_architecture does)
    assert set(summary[R.MODEL_NUM_PARAMS_B]) == {params / 1e9}

    row = summary[summary[R.TRIAL_STATUS] == R.STATUS_OK].iloc[[0]].reset_index(drop=True)
    out = roofline(row)
    assert out[R.ROOFLINE_BASIS][0] == BASIS_WEIGHTS_KV
    r = row.iloc[0]
    kv_per_token = 2 * 2 * 1 * 64 * 4  # key + value, 2 layers, 1 KV head, head size 64, fp32
    context = (r[R.INPUT_TOKENS_TOTAL] + r[R.OUTPUT_TOKENS_TOTAL] / 2) / r[R.COMPLETED_REQUESTS]
    in_flight = max(r[R.REQUEST_THROUGHPUT] * r[R.latency_column("e2e", "mean")] / 1e3, 1.0)
    steps_s = 1e3 / r[R.latency_column("tpot", "median")]
    step_bytes = params * 4 + kv_per_token * context * in_flight
    bandwidth = r[R.HARDWARE_MEMORY_BANDWIDTH] * 1e9
    assert out[R.MBU][0] == pytest.approx(step_bytes * steps_s / bandwidth, rel=1e-9)
