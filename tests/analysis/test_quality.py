"""`analysis.report.quality`: the figures against the baseline, on frames made by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.report.quality import (
    KL,
    PERPLEXITY,
    PPL_RATIO,
    TOP1,
    position_figures,
    quality_sections,
    quality_table,
)
from sweep.core import records as R
from sweep.core.errors import SweepError


def scores(deployment, rows, sha="x"):
    """quality.parquet rows: (text, position, token, its logprob, top ids, top logprobs)."""
    frame = pd.DataFrame(
        rows,
        columns=[R.TEXT_IDX, R.POSITION, R.TOKEN_ID, R.TOKEN_LOGPROB, R.TOP_IDS, R.TOP_LOGPROBS],
    )
    frame[R.DEPLOYMENT_ID] = deployment
    frame[R.QUALITY_SET_NAME], frame[R.QUALITY_SET_SHA256], frame[R.QUALITY_SET_TOKENS] = (
        "s",
        sha,
        9,
    )
    return frame


def summary(*deployments, statuses=None):
    count = len(deployments)
    return pd.DataFrame(
        {
            R.TRIAL_ID: [f"t{i}" for i in range(count)],
            R.DEPLOYMENT_ID: list(deployments),
            R.TRIAL_STATUS: [R.STATUS_OK] * count,
            R.BACKEND_NAME: [f"engine{i}" for i in range(count)],
            R.BACKEND_BASELINE: [i == 0 for i in range(count)],
            R.OUTPUT_THROUGHPUT: [10.0 * (i + 1) for i in range(count)],
            R.QUALITY_STATUS: statuses or [R.QUALITY_SCORED] * count,
        }
    )


LN = math.log


def test_kl_over_the_baselines_top_k_with_the_rest_as_one_outcome():
    base = scores("b", [(0, 1, 1, LN(0.5), [1, 2], [LN(0.5), LN(0.3)])])
    # The configuration lists token 2 but not 1: token 1 takes min(its 2nd prob, rest / 1).
    own = scores("o", [(0, 1, 1, LN(0.1), [2, 3], [LN(0.6), LN(0.2)])])
    kl, top1 = position_figures(base, own)
    q1 = min(0.2, 1 - 0.8)
    expected = 0.5 * LN(0.5 / q1) + 0.3 * LN(0.3 / 0.6) + 0.2 * LN(0.2 / (1 - q1 - 0.6))
    assert kl[0] == pytest.approx(expected)
    assert top1.tolist() == [False]
    same, agree = position_figures(base, base)
    assert same.tolist() == [0.0] and agree.tolist() == [True]


def two_texts(deployment, shift=0.0):
    return scores(
        deployment,
        [
            (0, 1, 4, LN(0.4) + shift, [4, 5], [LN(0.4) + shift, LN(0.3)]),
            (0, 2, 5, LN(0.2), [4, 5], [LN(0.5), LN(0.2)]),
            (1, 1, 6, LN(0.25), [6, 4], [LN(0.25), LN(0.2)]),
        ],
    )


def test_figures_are_token_weighted_with_intervals_from_the_texts():
    quality = pd.concat([two_texts("b"), two_texts("o", shift=-0.1)])
    table = quality_table(quality, summary("b", "o")).set_index(R.DEPLOYMENT_ID)
    nll = -(LN(0.4) + LN(0.2) + LN(0.25)) / 3
    assert table.loc["b", PERPLEXITY] == pytest.approx(math.exp(nll))
    assert table.loc["b", KL] == 0 and table.loc["b", TOP1] == 1
    assert table.loc["o", PPL_RATIO] == pytest.approx(math.exp(0.1 / 3))
    assert table.loc["o", KL] > 0 and table.loc["o", f"{KL}_low"] <= table.loc["o", KL]
    assert table.loc["o", f"{KL}_high"] >= table.loc["o", KL]
    assert table.loc["o", "baseline"] == table.loc["b", "configuration"]


def test_a_deployment_scored_on_other_tokens_is_refused():
    shifted = two_texts("o")
    shifted[R.TOKEN_ID] = [5, 6, 6]  # one position off: another token at each position
    with pytest.raises(SweepError, match="scored other texts or tokens than the baseline"):
        quality_table(pd.concat([two_texts("b"), shifted]), summary("b", "o"))
    other_set = two_texts("o")
    other_set[R.QUALITY_SET_SHA256] = "y"
    with pytest.raises(SweepError, match="quality sets or tokenizers differ"):
        quality_table(pd.concat([two_texts("b"), other_set]), summary("b", "o"))


def test_a_named_baseline_and_one_that_names_nothing():
    quality = pd.concat([two_texts("b"), two_texts("o", shift=-0.1)])
    table = quality_table(quality, summary("b", "o"), baseline="engine1").set_index(R.DEPLOYMENT_ID)
    assert table.loc["o", KL] == 0 and table.loc["b", KL] > 0
    with pytest.raises(SweepError, match="names no deployment"):
        quality_table(quality, summary("b", "o"), baseline="vllm")


def test_a_deployment_that_could_not_score_keeps_its_reason():
    status = [R.QUALITY_SCORED, "not available: no model"]
    table = quality_table(two_texts("b"), summary("b", "o", statuses=status))
    row = table.set_index(R.DEPLOYMENT_ID).loc["o"]
    assert row["status"] == "not available: no model" and np.isnan(row[KL])


def test_no_quality_status_no_table():
    assert quality_table(two_texts("b"), summary("b").drop(columns=R.QUALITY_STATUS)).empty


def test_scores_without_alternatives_give_perplexity_and_its_ratio_only():
    """TGI lists no top-K for prompt tokens: its KL and top-1 agreement stay empty, not 0."""
    tgi = two_texts("o", shift=-0.1)
    tgi[R.TOP_IDS] = [[] for _ in range(len(tgi))]
    tgi[R.TOP_LOGPROBS] = [[] for _ in range(len(tgi))]
    table = quality_table(pd.concat([two_texts("b"), tgi]), summary("b", "o"))
    row = table.set_index(R.DEPLOYMENT_ID).loc["o"]
    assert row[PPL_RATIO] == pytest.approx(math.exp(0.1 / 3))
    assert np.isnan(row[KL]) and np.isnan(row[TOP1]) and np.isnan(row[f"{KL}_low"])
    (section,) = quality_sections(pd.concat([two_texts("b"), tgi]), table)
    assert "perplexity and its ratio only" in section.text
