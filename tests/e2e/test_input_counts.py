"""A prompt the server counts otherwise than the client is named: summary, report, last lines.

The sim counts prompts with the model's tokenizer, as a real server does; `prompt_usage_skew`
plants a server that adds 10 to every `usage.prompt_tokens` (issue 66: a served model with
another tokenizer read 128-token prompts as 215 and nothing said so).
"""

import numpy as np
import pandas as pd
import pytest

from sweep.core import records as R
from sweep.core.summary import summarize
from tests.e2e.test_cluster import summaries
from tests.helpers import sweep_in_process

SIM = ["backend=sim", "workload=closed_loop", "workload.output_len=4", "dataset.input_len=16"]


def _requests(client, server, images=None):
    n = len(client)
    frame = pd.DataFrame(
        {
            R.TRIAL_ID: "t0",
            R.REQUEST_IDX: range(n),
            R.STATUS: [R.STATUS_OK] * n,
            R.SENT_S: np.arange(n, dtype=float),
            R.FIRST_TOKEN_S: np.arange(n) + 0.1,
            R.END_S: np.arange(n) + 0.5,
            R.TTFT_S: 0.1,
            R.E2E_S: 0.5,
            R.ITL_S: [[0.1, 0.1, 0.2]] * n,
            R.OUTPUT_TOKENS: [4] * n,
            R.INPUT_TOKENS: client,
            R.SERVER_INPUT_TOKENS: server,
            R.IMAGES: images if images is not None else [0] * n,
            R.IN_WINDOW: True,
        }
    )
    return frame.reindex(columns=R.REQUESTS_SCHEMA.names)  # the other columns: null


def test_the_summary_counts_prompts_the_server_read_otherwise():
    frame = _requests([128, 128, 128, 20], [215, 128, 269, 1043], images=[0, 0, 0, 2])
    row = summarize(frame, num_gpus=0, price_per_hour=1.0, server=True)
    assert row[R.INPUT_MISMATCH_REQUESTS] == 2  # the image request's extra tokens are the server's
    assert row[R.INPUT_MISMATCH_TOKENS_MEAN] == pytest.approx(((215 - 128) + (269 - 128)) / 2)
    assert row[R.INPUT_UNVERIFIED_REQUESTS] == 0


def test_a_server_without_prompt_counts_leaves_inputs_unverified():
    frame = _requests([16, 16, 16], [None, None, 16])
    row = summarize(frame, num_gpus=0, price_per_hour=1.0, server=True)
    assert (row[R.INPUT_MISMATCH_REQUESTS], row[R.INPUT_UNVERIFIED_REQUESTS]) == (0, 2)
    engine = summarize(frame, num_gpus=0, price_per_hour=1.0)  # in process: nothing to verify
    assert engine[R.INPUT_UNVERIFIED_REQUESTS] is None


def test_a_planted_prompt_miscount_is_named_in_the_checks_and_the_last_lines(tmp_path, ray_cluster):
    result = sweep_in_process(
        *SIM,
        f"cluster.address={ray_cluster}",
        "sweep.name=prompts",
        f"output.dir={tmp_path}",
        "workload.num_requests=24",
        "workload.warmup_requests=0",
        "+sweep.grid.backend.prompt_usage_skew=[0,10]",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frame = summaries(tmp_path / "prompts").set_index("backend.prompt_usage_skew")
    assert frame.loc[0, R.INPUT_MISMATCH_REQUESTS] == 0  # the sim counts as the client does
    assert frame.loc[10, R.INPUT_MISMATCH_REQUESTS] == 24
    assert frame.loc[10, R.INPUT_MISMATCH_TOKENS_MEAN] == 10.0
    skewed, clean = frame.loc[10, R.LABEL], frame.loc[0, R.LABEL]
    lines = result.stdout.strip().splitlines()
    warned = max(i for i, line in enumerate(lines) if "need a second look" in line)
    said = " ".join(" ".join(lines[warned:]).split()).split(" - ")  # the console wraps lines
    miscounted = [item for item in said if "prompt(s) differently" in item]
    assert len(miscounted) == 1, said
    assert miscounted[0].startswith(skewed) and "(+10.0 tokens on average)" in miscounted[0]
    report = (tmp_path / "prompts" / "report.md").read_text()
    checks = report[report.index("## Request checks") :]
    assert f"{skewed} (" in checks and "24 prompt(s) differently" in checks
    clean_lines = [line for line in checks.splitlines() if line.startswith(f"- {clean} (")]
    assert not any("differently" in line for line in clean_lines), clean_lines
    findings = report[report.index("## Findings") : report.index("## Request checks")]
    assert "1 trial(s) sent prompts their server counted differently" in findings
