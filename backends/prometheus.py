"""Scraping a server's Prometheus `/metrics` into telemetry samples.

Server backends (sim, vLLM, ...) hand the trial's sampler a source made here, with their own
mapping from Prometheus sample names to the project's timeseries metric names (`sweep.records`)
and a scale (vLLM reports KV-cache usage as a fraction; the records hold percent). Parsing goes
through `prometheus_client`'s own text parser, so label sets, escaping and `_total` suffixes are
handled as Prometheus defines them.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from backends.base import TelemetrySource

# Prometheus sample name -> (timeseries metric name, factor applied to the value).
MetricMap = dict[str, tuple[str, float]]

SOURCE = "server"


def parse_metrics(
    text: str, mapping: MetricMap, source: str = SOURCE
) -> list[tuple[str, str, float]]:
    """The (source, metric, value) samples of `text` whose names `mapping` knows.

    A metric exported with several label sets (one per engine, say) gives one sample each.
    """
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            target = mapping.get(sample.name)
            if target is not None:
                metric, factor = target
                samples.append((source, metric, float(sample.value) * factor))
    return samples


def prometheus_source(
    url: str, mapping: MetricMap, source: str = SOURCE, timeout_s: float = 1.0
) -> TelemetrySource:
    """A telemetry source that GETs `url` and maps its samples; a failed scrape gives none."""

    def sample() -> list[tuple[str, str, float]]:
        try:
            # trust_env=False: a proxy from the environment must not intercept loopback scrapes.
            response = httpx.get(url, timeout=timeout_s, trust_env=False)
            response.raise_for_status()
        except httpx.HTTPError:
            return []
        return parse_metrics(response.text, mapping, source)

    return sample
