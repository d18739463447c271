"""The report's proxy table on hand-made frames: hits and misses, and the cache-less trial."""

import pandas as pd
import pytest

from analysis.report.proxy_cache import cache_sections, cache_table
from sweep.core import records as rec


def trial(trial_id, proxy, concurrency, repeat=0, ttft=None):
    return {
        rec.TRIAL_ID: trial_id,
        rec.LABEL: f"{proxy}-c{concurrency}-r{repeat}",
        rec.REPEAT: repeat,
        rec.TRIAL_STATUS: rec.STATUS_OK,
        "proxy.name": proxy,
        "proxy.threshold": 0.8 if proxy == "semantic_cache" else None,
        "workload.concurrency": concurrency,
        "model.revision": None,  # a null config value matches a NaN one
        rec.latency_column("ttft", "median"): ttft,
        rec.latency_column("e2e", "median"): None if ttft is None else 10 * ttft,
    }


def requests_of(trial_id, hits, ttfts):
    return pd.DataFrame(
        {
            rec.TRIAL_ID: trial_id,
            rec.STATUS: rec.STATUS_OK,
            rec.IN_WINDOW: True,
            rec.CACHE_HIT: hits,
            rec.TTFT_S: ttfts,
            rec.E2E_S: [10 * t for t in ttfts],
        }
    )


def test_each_proxied_trial_beside_its_cache_less_twin():
    trials = pd.DataFrame(
        [
            trial("a", "none", 2, repeat=0, ttft=90.0),
            trial("a1", "none", 2, repeat=1, ttft=95.0),
            trial("b", "semantic_cache", 2, repeat=1),
            trial("c", "clip", 2),
            trial("d", "semantic_cache", 4),  # no cache-less trial at concurrency 4
        ]
    )
    trials.loc[trials[rec.TRIAL_ID] == "a", "model.revision"] = float("nan")
    requests = pd.concat(
        [
            requests_of("b", [True, True, False, False], [0.002, 0.004, 0.1, 0.12]),
            requests_of("c", [None, None], [0.1, 0.1]),
        ]
    )
    table = cache_table(requests, trials).set_index("trial")
    cached = table.loc["semantic_cache-c2-r1"]
    assert cached["hit_percent"] == 50.0 and cached["requests"] == 4
    assert cached["ttft_ms_hit"] == pytest.approx(3.0) and cached["ttft_ms_miss"] == 110.0
    assert cached["e2e_ms_miss"] == pytest.approx(1100.0)
    assert cached["base"] == "none-c2-r1" and cached["base_ttft_ms"] == 95.0  # the same repeat
    clip = table.loc["clip-c2-r0"]
    assert pd.isna(clip["hit_percent"]) and clip["base"] == "none-c2-r0"
    assert pd.isna(table.loc["semantic_cache-c4-r0", "base"])
    (section,) = cache_sections(requests, trials)
    assert list(section.table["Without proxy"]) == ["none-c2-r1", "none-c2-r0", "—"]


def test_sweeps_without_a_proxy_add_no_section():
    plain = pd.DataFrame([trial("a", "none", 2)])
    assert cache_sections(None, plain) == []
    assert cache_sections(None, plain.drop(columns=["proxy.name"])) == []  # written before it
