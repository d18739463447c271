"""Every experiment plans the same trial and deployment ids as before the layout change.

`tests/fixtures/plan_ids.json` was recorded from main at 9e73cea (before backends owned their
configs) by `python tests/sweep/test_plan_ids.py --record`: resume, de-duplication and
cross-sweep comparison all rest on these ids staying put. A change that moves ids on purpose
re-records the experiments it moves, and says so here:
- engine_comparison: `hardware=a100_80g` asks for accelerator type `A100`, the one Ray detects
  (it never sets `A100-80G`), so its deployment and trial ids changed (issue 18, item 5).
- sim_cluster: the sim server got a capacity (`backend.max_num_seqs`, issue 13), a new field of
  the sim backend's config, so its deployment and trial ids changed. quickstart_capacity and
  server_capacity (issue 13) were recorded when they were added.
- quickstart: resized so that its findings hold from run to run (issue 15: 48 requests, batch
  sizes 1 and 8, 24 output tokens, random prompts only, 3 repeats), so its ids changed; aa_check
  (issue 15) was recorded when it was added. Resized again (32 requests of 32 output tokens,
  5 repeats), as one run in five at 3 repeats did not state its TPOT finding: re-recorded.
  Then 48 output tokens: its static-batch trials at batch 8 took 0.45-0.61 s, and one under
  the report's 0.5 s minimum was named too short: re-recorded. Then long enough on any machine
  (issue 31): its requests are sent again until a trial has run 1 s (`workload.min_duration_s`,
  `min_requests`, `repeat_to_minimum`), so what each trial measures changed: re-recorded.
- aa_check, quickstart, quickstart_capacity, quickstart_engines, quickstart_serving,
  sim_cluster, trace_replay: the tiny model's parameter count and context are read from its files
  (issue 66: a `model.path` over the default kept the tiny model's 0.0004 B), so `model.*` of the
  default model changed: re-recorded.
- study_d_proxy (issue 16: the proxy group and `dataset.paraphrase_rate`, both added so that no
  recorded id moved) was recorded when it was added.
"""

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import experiment_plan

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "plan_ids.json"
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
RECORDED = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}


def plan_ids(name: str) -> dict:
    plan = experiment_plan(name)
    return {
        "deployments": sorted(d.deployment_id for d in plan.deployments),
        "trials": sorted(t.trial_id for t in plan.trials),
    }


def test_every_experiment_of_the_change_was_recorded():
    assert len(RECORDED) == 16
    assert set(RECORDED) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_plan_ids_match_the_recorded_ones(name):
    assert plan_ids(name) == RECORDED[name]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    FIXTURE.write_text(json.dumps({n: plan_ids(n) for n in EXPERIMENTS}, indent=1) + "\n")
