"""The dry run: a summary of any plan, every trial of a small plan or when asked."""

import io

import pytest
from rich.console import Console

import sweep.display as display
from scripts.bench.results_folder import scale_overrides
from sweep.driver.placement import trial_seconds
from sweep.plan.plan import build_plan


@pytest.fixture
def printed(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=160, force_terminal=False))
    return out


def test_a_large_plan_prints_its_summary_not_its_trials(tmp_path, printed):
    plan = build_plan(scale_overrides(600, tmp_path))  # 6 series x 10 loads x 10 repeats
    display.print_plan(plan)
    text = printed.getvalue()
    assert "600 trials in 6 deployments" in text
    assert "axis workload.concurrency: [1, 2, 3, 4, 6, 8, 12, 16, ... (10 values)]" in text
    assert "repeats: 10" in text
    assert "600 trials whose length the server sets" in text
    assert "600 trials: sweep.list_trials=true lists them" in text
    assert plan.trials[0].label not in text
    assert len(text.splitlines()) < 30


def test_the_full_table_on_request(tmp_path, printed):
    plan = build_plan([*scale_overrides(600, tmp_path), "sweep.list_trials=true"])
    display.print_plan(plan)
    text = printed.getvalue()
    assert all(t.trial_id in text for t in plan.trials)


def test_known_time_is_the_duration_or_the_requests_at_their_rate(tmp_path, printed):
    rated = build_plan([*scale_overrides(60, tmp_path), "workload.request_rate=4",
                        "workload.num_requests=39", "workload.warmup_requests=1"])  # fmt: skip
    assert {trial_seconds(t) for t in rated.trials} == {10.0}  # (39 + 1) / 4
    display.print_plan(rated)
    assert "10 min 00 s of trials with a set length" in printed.getvalue()  # 60 x 10 s
    timed = build_plan([*scale_overrides(60, tmp_path), "workload.duration_s=30"])
    assert {trial_seconds(t) for t in timed.trials} == {30.0}
