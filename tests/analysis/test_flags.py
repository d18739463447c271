"""The report's notes on lengths the server chose and counts the server made, on summary rows.

Each row carries its backend's facts as the worker records them (`Backend.facts`, from the real
backend classes): TGI's API has no `ignore_eos` and neither has an attached endpoint without
vLLM's extensions, so both record `backend_ignore_eos` False; a workload asking for no
`ignore_eos` records False in its own column. `backend.tokenizer=none` records that every token
count is the server's. A folder older than the facts leaves the backend's side unknown, and the
report says so.
"""

import numpy as np
import pandas as pd

from analysis.report.flags import (
    counts_note,
    lengths_note,
    problem_sections,
    server_counted,
    trial_checks,
    unforced_lengths,
    unknown_lengths_note,
)
from backends import backend_class
from sweep.core import records as R


def facts(backend, **config):
    """What the worker records about `backend` with `config` (`Backend.facts`)."""
    cls = backend_class(backend)
    return cls(cls.config_class(**config), "model").facts()


def row(label, backend, config=None, **columns):
    """A successful trial's summary row: flattened config columns and its backend's facts."""
    config = config or {}
    return {
        R.TRIAL_ID: f"id-{label}",
        R.LABEL: label,
        R.TRIAL_STATUS: R.STATUS_OK,
        R.BACKEND_NAME: backend,
        "workload.ignore_eos": True,
        R.NUM_REQUESTS: 10,
        **{f"backend.{k}": v for k, v in config.items()},
        **facts(backend, **config),
        **columns,
    }


URL = {"url": "http://127.0.0.1:9"}


def frame():
    return pd.DataFrame(
        [
            row("tgi-a", "tgi", **{R.SHORT_OUTPUT_REQUESTS: 3}),
            row("vllm-a", "vllm_server", **{R.SHORT_OUTPUT_REQUESTS: 2}),
            row("hf-eos", "hf", **{"workload.ignore_eos": np.False_}),
            row("openai-strict", "openai", {**URL, "extensions": False}),
            row("openai-vllm", "openai", {**URL, "extensions": True}),
            row("openai-none", "openai", {**URL, "extensions": True, "tokenizer": "none"}),
            row("openai-local", "openai", {**URL, "extensions": True, "tokenizer": "local"}),
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
    assert "its backend recorded that its requests carry none" in note
    assert unknown_lengths_note(trials) == ""


def test_a_server_without_ignore_eos_is_named_by_its_fact_not_its_name():
    # llama-cpp-python's server takes no `ignore_eos` (it is no vLLM-extensions server).
    trials = pd.DataFrame([row("llamacpp-server", "llamacpp_server")])
    assert trials[R.BACKEND_IGNORE_EOS].tolist() == [False]
    assert unforced_lengths(trials).tolist() == [True]


def test_a_short_tgi_output_is_put_down_to_its_unforced_length():
    checks = trial_checks(frame())
    assert (
        "tgi-a (`id-tgi-a`): 3 request(s) shorter than requested (lengths not forced" in checks[0]
    )
    assert checks[1] == "vllm-a (`id-vllm-a`): 2 request(s) shorter than requested"


def test_trials_with_estimated_output_counts_are_checked():
    trials = pd.DataFrame(
        [
            row("llamacpp-a", "llamacpp_server", **{R.ESTIMATED_OUTPUT_REQUESTS: 2}),
            row("llamacpp-b", "llamacpp_server", **{R.ESTIMATED_OUTPUT_REQUESTS: 0}),
        ]
    )
    assert trial_checks(trials) == (
        "llamacpp-a (`id-llamacpp-a`): output token counts are estimates on 2 request(s): the "
        "server's stream did not count their tokens",
    )


def test_trials_counted_by_the_server_are_named():
    trials = frame()
    assert trials.loc[server_counted(trials), R.LABEL].tolist() == ["openai-none"]
    assert counts_note(trials).startswith(
        "Token counts are the server's own (no local tokenizer) in 1 of 7 trial(s) (openai-none): "
    )
    (checks, _, _) = problem_sections(trials)
    assert counts_note(trials) in checks.text and lengths_note(trials) in checks.text


def test_results_without_the_columns_say_the_backend_side_is_unknown():
    old = pd.DataFrame([row("hf-a", "hf"), row("vllm-a", "vllm_server")])
    old = old.drop(columns=list(R.BACKEND_FACTS))
    assert lengths_note(old) == "" == counts_note(old)
    assert not server_counted(old).any() and not unforced_lengths(old).any()
    assert unknown_lengths_note(old).startswith(
        "Whether `ignore_eos` reached the engine is not recorded for 2 of 2 trial(s) (hf-a, vllm-a)"
    )
    # A workload that asked for no `ignore_eos` is known unforced, whatever the backend.
    old.loc[0, "workload.ignore_eos"] = False
    assert unforced_lengths(old).tolist() == [True, False]
    assert "for 1 of 2 trial(s) (vllm-a)" in unknown_lengths_note(old)
