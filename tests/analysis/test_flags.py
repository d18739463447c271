"""The report's notes on lengths the server chose and counts the server made, on summary rows.

TGI's API has no `ignore_eos`, so its trials never force lengths though no column says so; an
attached endpoint without vLLM's extensions, or a workload asking for no `ignore_eos`, records
False. `backend.tokenizer=none` records that every token count is the server's.
"""

import numpy as np
import pandas as pd

from analysis.flags import (
    counts_note,
    lengths_note,
    problem_sections,
    server_counted,
    trial_checks,
    unforced_lengths,
)
from sweep.core import records as R


def row(label, backend, **columns):
    """A successful trial's summary row, with its flattened config columns."""
    return {
        R.TRIAL_ID: f"id-{label}",
        R.LABEL: label,
        R.TRIAL_STATUS: R.STATUS_OK,
        R.BACKEND_NAME: backend,
        "workload.ignore_eos": True,
        R.NUM_REQUESTS: 10,
        **columns,
    }


def frame():
    return pd.DataFrame(
        [
            row("tgi-a", "tgi", **{R.SHORT_OUTPUT_REQUESTS: 3}),
            row("vllm-a", "vllm_server", **{R.SHORT_OUTPUT_REQUESTS: 2}),
            row("hf-eos", "hf", **{"workload.ignore_eos": np.False_}),
            row("openai-strict", "openai", **{"backend.extensions": False}),
            row("openai-vllm", "openai", **{"backend.extensions": True}),
            row("openai-none", "openai", **{"backend.tokenizer": "none"}),
            row("openai-local", "openai", **{"backend.tokenizer": "local"}),
        ]
    )


def test_tgi_trials_are_named_as_not_forcing_lengths():
    trials = frame()
    unforced = trials.loc[unforced_lengths(trials), R.LABEL].tolist()
    assert unforced == ["tgi-a", "hf-eos", "openai-strict"]
    note = lengths_note(trials)
    assert note.startswith(
        "Output lengths were not forced in 3 of 7 trial(s) (tgi-a, hf-eos, openai-strict): "
    )
    assert "TGI has none" in note


def test_a_short_tgi_output_is_put_down_to_its_unforced_length():
    checks = trial_checks(frame())
    assert (
        "tgi-a (`id-tgi-a`): 3 request(s) shorter than requested (lengths not forced" in checks[0]
    )
    assert checks[1] == "vllm-a (`id-vllm-a`): 2 request(s) shorter than requested"


def test_trials_counted_by_the_server_are_named():
    trials = frame()
    assert trials.loc[server_counted(trials), R.LABEL].tolist() == ["openai-none"]
    assert counts_note(trials).startswith(
        "Token counts are the server's own (no local tokenizer) in 1 of 7 trial(s) (openai-none): "
    )
    (checks, _, _) = problem_sections(trials)
    assert counts_note(trials) in checks.text and lengths_note(trials) in checks.text


def test_results_without_the_columns_say_nothing():
    old = pd.DataFrame([row("hf-a", "hf"), row("vllm-a", "vllm_server")])
    assert lengths_note(old) == "" == counts_note(old)
    assert not server_counted(old).any() and not unforced_lengths(old).any()
